"""How the stage driver (egs/TEMPLATE/asr1/asr.sh) runs its heavy stages: through cmd.sh's train_cmd / cuda_cmd /
decode_cmd, with ESPnet's GPU options meaning what they mean in ESPnet (--ngpu N: DDP, one process per GPU;
--gpu_inference true: one GPU per decoding job), collect-stats split into --nj jobs and merged, ESPnet's stage
numbers, and GPUs asked for on a machine without them refused before any stage.

No GPU and no cluster here: a fake `sbatch` on the PATH records every submission (its options, the array size and
the task script) and then runs the array's tasks locally; the trainer and the decoders are a stub interpreter that
records the argv each got and writes what they would write. Everything else (the launcher, the splitting, ESPnet's
aggregate_stats_dirs, merge_decode) is the real code."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ASR_SH = REPO / "egs/TEMPLATE/asr1/asr.sh"

# The stub interpreter: asr_train / lm_train (training or --collect_stats) and the decoders record their argv and
# write their outputs; every other module runs on the real interpreter.
STUB = r'''#!/usr/bin/env bash
[ "$1" = -m ] && case "$2" in
  espnet_bertkd.bin.asr_train|espnet2.bin.lm_train|espnet_bertkd.bin.ctc_greedy_inference|espnet_bertkd.bin.asr_inference)
    exec REAL_PYTHON STUB_PY "$@" ;;
  espnet_bertkd.launch) [ "$4" = espnet2.bin.lightning_train ] && exec REAL_PYTHON STUB_PY "$@" ;;
esac
exec REAL_PYTHON "$@"
'''
STUB_PY = r'''
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
def opt(name):
    return argv[argv.index(name) + 1] if name in argv else None
def opts(name):
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]
out = Path(opt("--output_dir"))
out.mkdir(parents=True, exist_ok=True)
# recorded beside the output directory (a decoding job's directory is merged whole)
Path(f"{out}.argv").write_text("\0".join(argv) + "\0")
Path(f"{out}.env").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
keys = lambda f: [line.split(maxsplit=1)[0] for line in open(f) if line.strip()]
if opt("--collect_stats") == "true":
    import numpy as np
    key = "text" if "espnet2.bin.lm_train" in argv else "speech"
    for mode in ("train", "valid"):
        d = out / mode
        d.mkdir(exist_ok=True)
        (d / "batch_keys").write_text(key + "\n")
        (d / "stats_keys").write_text("feats\n")
        utts = keys(opt(f"--{mode}_shape_file"))
        (d / f"{key}_shape").write_text("".join(f"{u} 1600\n" for u in utts))
        np.savez(d / "feats_stats.npz", count=np.array(len(utts)), sum=np.ones(2) * len(utts), sum_square=np.ones(2))
elif "--key_file" in argv:  # a decoder
    (out / "1best_recog").mkdir(exist_ok=True)
    (out / "1best_recog" / "text").write_text("".join(f"{u} HELLO\n" for u in keys(opt("--key_file"))))
    (out / "speed.json").write_text(json.dumps({"utterances": 1, "compute_seconds": 1.0, "audio_seconds": 2.0}))
else:  # a training
    (out / "config.yaml").write_text("model: bertkd\n")
    (out / "valid.cer_ctc.ave.pth").write_text("")
    (out / "valid.loss.ave.pth").write_text("")
'''

FAKE_SBATCH = r'''#!/usr/bin/env bash
# records each submission as one line of its arguments (tab-separated), then runs the array's tasks here
(IFS=$'\t'; echo "$*") >> "$FAKE_SBATCH_LOG"
script="${@: -1}"; array=""
for a in "$@"; do case "$a" in --array=*) array="${a#--array=}";; esac; done
range="${array%%%*}"; rc=0
for i in $(seq "${range%-*}" "${range#*-}"); do SLURM_ARRAY_TASK_ID=$i bash "$script" || rc=1; done
echo 4242
exit $rc
'''


@pytest.fixture
def recipe(tmp_path) -> Path:
    """A recipe directory with a CTC and a cached-KD config, a 4-utterance train/dev/test set, the stub and sbatch."""
    import yaml

    root = tmp_path / "recipe"
    (root / "conf").mkdir(parents=True)
    (root / "conf/train_asr_ctc.yaml").write_text(yaml.safe_dump({"model": "bertkd", "model_conf": {"kd_layers": []}}))
    (root / "conf/train_asr_kd.yaml").write_text(yaml.safe_dump(
        {"model": "bertkd", "model_conf": {"kd_layers": [1], "teacher": {"model": "exp/teacher", "mode": "cached"}}}))
    for dset in ("train", "dev", "test"):
        d = root / "data" / dset
        d.mkdir(parents=True)
        (d / "wav.scp").write_text("".join(f"{dset}{i} /audio/{dset}{i}.flac\n" for i in range(4)))
        (d / "text").write_text("".join(f"{dset}{i} HELLO\n" for i in range(4)))
    (root / "data/token_list/char").mkdir(parents=True)
    (root / "data/token_list/char/tokens.txt").write_text("<blank>\n<unk>\nH\n<sos/eos>\n")
    (root / "stub.py").write_text(STUB_PY)
    python = root / "python"
    python.write_text(STUB.replace("REAL_PYTHON", sys.executable).replace("STUB_PY", str(root / "stub.py")))
    python.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    return root


def asr_sh(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PATH": f"{root.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
               "FAKE_SBATCH_LOG": str(root / "sbatch.log"), "HF_HUB_OFFLINE": "1", **env}
    cmd = ["bash", str(ASR_SH), "--python", str(root / "python"), "--train_set", "train", "--valid_set", "dev",
           "--test_sets", "test", "--token_type", "char", "--systems", "ctc kd", "--sf_systems", "", *args]
    return subprocess.run(cmd, cwd=root, env=environ, capture_output=True, text=True, timeout=300)


def submissions(root: Path) -> List[List[str]]:
    return [line.split("\t") for line in (root / "sbatch.log").read_text().splitlines()]


def argv_of(d: Path) -> List[str]:
    return Path(f"{d}.argv").read_text().split("\0")[:-1]


def task_commands(submission: List[str]) -> str:
    return Path(submission[-1]).read_text()


def test_training_on_slurm_asks_for_the_gpus_and_trains_with_ddp(recipe):
    (recipe / "exp/asr_stats_char/train").mkdir(parents=True)
    for f in ("feats_stats.npz", "speech_shape"):
        (recipe / "exp/asr_stats_char/train" / f).touch()
    proc = asr_sh(recipe, "--cmd_backend", "slurm", "--ngpu", "4", "--stage", "11", "--stop_stage", "11")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [sub] = submissions(recipe)
    # ESPnet's conf/slurm.conf rules (the template's): 4 GPUs on the gpu partition, one array task per system,
    # --train_nj 1 of them at a time
    assert sub[:2] == ["--export=ALL", "--wait"] and "--array=1-2%1" in sub
    assert ["-p", "gpu", "--gres=gpu:4", "-c", "4"] == sub[sub.index("-p"): sub.index("-p") + 5]
    assert sub[sub.index("--job-name") + 1] == "train"
    for system in ("ctc", "kd"):
        argv = argv_of(recipe / "exp" / system)
        assert argv[argv.index("--ngpu") + 1] == "4"
        assert argv[argv.index("--multiprocessing_distributed") + 1] == "true"  # DDP, never DataParallel
    assert "Finished stages 11..11" in proc.stdout


def test_decoding_with_gpu_inference_gives_each_job_one_gpu(recipe):
    for system in ("ctc", "kd"):
        (recipe / "exp" / system).mkdir(parents=True)
        (recipe / "exp" / system / "config.yaml").touch()
        (recipe / "exp" / system / "valid.cer_ctc.ave.pth").touch()
    proc = asr_sh(recipe, "--cmd_backend", "slurm", "--ngpu", "4", "--gpu_inference", "true", "--inference_nj", "2",
                  "--stage", "12", "--stop_stage", "12")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    subs = submissions(recipe)
    assert len(subs) == 2  # one array per system and set
    for sub in subs:
        assert "--array=1-2" in sub and "--gres=gpu:1" in sub  # one GPU per decoding job, never --ngpu 4
    for system in ("ctc", "kd"):
        split = recipe / "exp" / system / "decode_greedy/test/split2"
        for job in (1, 2):
            argv = argv_of(split / f"output.{job}")
            assert argv[argv.index("--ngpu") + 1] == "1"
        assert (recipe / "exp" / system / "decode_greedy/test/1best_recog/text").read_text().count("HELLO") == 4


def test_local_decoding_shares_out_the_visible_gpus(recipe):
    """Locally, --gpu_inference jobs each get one visible GPU of their own (CUDA_VISIBLE_DEVICES)."""
    for system in ("ctc", "kd"):
        (recipe / "exp" / system).mkdir(parents=True)
        (recipe / "exp" / system / "config.yaml").touch()
        (recipe / "exp" / system / "valid.cer_ctc.ave.pth").touch()
    proc = asr_sh(recipe, "--gpu_inference", "true", "--inference_nj", "2", "--stage", "12", "--stop_stage", "12",
                  "--systems", "ctc", CUDA_VISIBLE_DEVICES="5,7")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    split = recipe / "exp/ctc/decode_greedy/test/split2"
    assert sorted((split / f"output.{j}.env").read_text() for j in (1, 2)) == ["5", "7"]


def test_collect_stats_is_split_into_jobs_and_merged(recipe):
    proc = asr_sh(recipe, "--cmd_backend", "slurm", "--nj", "2", "--stage", "10", "--stop_stage", "10")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [sub] = submissions(recipe)
    assert "--array=1-2" in sub and ["-p", "cpu"] == sub[sub.index("-p"): sub.index("-p") + 2]
    stats = recipe / "exp/asr_stats_char"
    train_keys = [(stats / f"logdir/train.{j}.scp").read_text().split() for j in (1, 2)]
    assert [k[::2] for k in train_keys] == [["train0", "train1"], ["train2", "train3"]]
    argv = argv_of(stats / "logdir/stats.1")
    assert argv[argv.index("--train_shape_file") + 1] == "exp/asr_stats_char/logdir/train.1.scp"
    assert argv[argv.index("--ngpu") + 1] == "0"
    # merged by ESPnet's aggregate_stats_dirs: every utterance once, the counts summed
    assert [line.split()[0] for line in (stats / "train/speech_shape").read_text().splitlines()] == [
        f"train{i}" for i in range(4)]
    assert int(np.load(stats / "train/feats_stats.npz")["count"]) == 4


def test_collect_stats_of_a_kd_config_gets_the_teacher_option(recipe):
    """Collect-stats builds the first system's model: a KD config's teacher (bert-base-uncased in the LibriSpeech
    configs) must be the --teacher directory there as in training, or an offline machine fails at stage 10."""
    proc = asr_sh(recipe, "--nj", "1", "--stage", "10", "--stop_stage", "10", "--systems", "kd ctc",
                  "--teacher", "/models/bert base")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    argv = argv_of(recipe / "exp/asr_stats_char/logdir/stats.1")
    assert argv[argv.index("--config") + 1] == "conf/train_asr_kd.yaml"
    assert argv[argv.index("--model_conf") + 1] == "teacher.model='/models/bert base'"


def test_the_lm_runs_through_the_launcher(recipe):
    """LM collect-stats (stage 6, --nj jobs) and training (stage 7, cuda_cmd with --ngpu GPUs, DDP) are jobs."""
    (recipe / "data/lm_train.txt").write_text("".join(f"lm{i} HELLO\n" for i in range(6)))
    (recipe / "conf/train_lm.yaml").write_text("lm: transformer\n")
    proc = asr_sh(recipe, "--cmd_backend", "slurm", "--nj", "3", "--ngpu", "2", "--sf_systems", "ctc",
                  "--stage", "6", "--stop_stage", "7")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stats_sub, train_sub = submissions(recipe)
    assert "--array=1-3" in stats_sub and "-p" in stats_sub and stats_sub[stats_sub.index("-p") + 1] == "cpu"
    assert "--array=1-1" in train_sub and "--gres=gpu:2" in train_sub
    argv = argv_of(recipe / "exp/lm")
    assert argv[argv.index("--ngpu") + 1] == "2" and argv[argv.index("--multiprocessing_distributed") + 1] == "true"
    assert "--collect_stats" not in argv


def test_gpus_asked_for_on_a_machine_without_them_are_refused_up_front(recipe, tmp_path):
    for args in (["--ngpu", "1"], ["--gpu_inference", "true"], ["--teacher_device", "cuda"]):
        proc = asr_sh(recipe, *args, "--stage", "1", CUDA_VISIBLE_DEVICES="")
        assert proc.returncode == 1 and "Stage" not in proc.stdout, (args, proc.stdout)
        [line] = proc.stderr.strip().splitlines()  # one line, no traceback
        assert "ask for 1 GPU(s) each, but this machine has 0" in line and "--ngpu 0" in line
    assert not (recipe / "data/lm_train.txt").exists()


@pytest.mark.parametrize("args", [["--stage", "16"], ["--stage", "12", "--stop_stage", "11"],
                                  ["--stage", "11", "--stop_stage", "13", "--skip_stages", "11 12 13"]])
def test_a_stage_range_that_selects_nothing_is_refused(recipe, args):
    proc = asr_sh(recipe, *args)
    assert proc.returncode == 1 and "selects no stage (stages are 1-15" in proc.stderr, proc.stderr
    assert "Finished" not in proc.stdout


def test_skip_stages_skips_inside_the_range(recipe):
    (recipe / "exp/asr_stats_char/train").mkdir(parents=True)
    for f in ("feats_stats.npz", "speech_shape"):
        (recipe / "exp/asr_stats_char/train" / f).touch()
    proc = asr_sh(recipe, "--stage", "10", "--stop_stage", "11", "--skip_stages", "11")
    assert proc.returncode == 0, proc.stderr
    assert "Stage 10:" in proc.stdout and "Stage 11:" not in proc.stdout


def test_multi_node_training_needs_slurm(recipe):
    proc = asr_sh(recipe, "--num_nodes", "2", "--stage", "11")
    assert proc.returncode == 1 and "--num_nodes 2 needs cmd_backend=slurm" in proc.stderr


def test_multi_node_training_on_slurm_uses_srun(recipe):
    (recipe / "exp/asr_stats_char/train").mkdir(parents=True)
    for f in ("feats_stats.npz", "speech_shape"):
        (recipe / "exp/asr_stats_char/train" / f).touch()
    # srun is not here: the fake one starts the command once, with the variables ESPnet's slurm launcher reads
    (recipe.parent / "bin/srun").write_text('#!/usr/bin/env bash\n[ "$1" = --export=ALL ] && shift\nexec "$@"\n')
    (recipe.parent / "bin/srun").chmod(0o755)
    proc = asr_sh(recipe, "--cmd_backend", "slurm", "--ngpu", "2", "--num_nodes", "2", "--systems", "ctc",
                  "--stage", "11", "--stop_stage", "11")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [sub] = submissions(recipe)
    assert ["--nodes", "2"] == sub[sub.index("--nodes"): sub.index("--nodes") + 2]
    script = (recipe / "exp/ctc/train.sh").read_text()
    assert "exec srun --export=ALL " in script and "--dist_launcher slurm" in script
    assert "--dist_init_method file://" in script


def lightning_conf(argv: List[str]) -> Dict[str, str]:
    """The `--lightning_conf KEY=VALUE` options of a command line."""
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--lightning_conf")


def test_lightning_trains_through_the_launcher(recipe):
    """--use_lightning true: stage 11 runs ESPnet's Lightning trainer through the plugin's launcher, with the same
    config and data options as ESPnet's trainer and lightning_conf as ESPnet's asr.sh sets it (devices, num_nodes,
    DDP; CPU processes with --ngpu 0). Where the installed ESPnet has no Lightning trainer it is refused up front."""
    from espnet_bertkd.compat import lightning_trainer_missing

    (recipe / "exp/asr_stats_char/train").mkdir(parents=True)
    for f in ("feats_stats.npz", "speech_shape"):
        (recipe / "exp/asr_stats_char/train" / f).touch()
    missing = lightning_trainer_missing()
    proc = asr_sh(recipe, "--use_lightning", "true", "--stage", "11", "--stop_stage", "11")
    if missing is not None:
        assert proc.returncode == 1 and "Stage" not in proc.stdout, proc.stdout
        assert proc.stderr.strip().splitlines() == [f"{ASR_SH}: --use_lightning true: {missing}"]
        return
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for system in ("ctc", "kd"):
        argv = argv_of(recipe / "exp" / system)
        assert argv[:6] == ["-m", "espnet_bertkd.launch", "-m", "espnet2.bin.lightning_train", "--task", "asr"]
        assert lightning_conf(argv) == {"devices": "1", "num_nodes": "1", "accelerator": "cpu", "strategy": "ddp",
                                        "default_root_dir": f"'exp/{system}'"}
        assert argv[argv.index("--config") + 1] == f"conf/train_asr_{system}.yaml"
        assert argv[argv.index("--output_dir") + 1] == f"exp/{system}"
        assert "--multiprocessing_distributed" not in argv and "--ngpu" not in argv  # ESPnet's trainer's options
        assert "espnet2.bin.lightning_train" in (recipe / "exp" / system / "train.sh").read_text()
    kd = argv_of(recipe / "exp/kd")  # the cached-teacher system reads stage 4's soft labels as data
    assert any(a.endswith("kd_token.scp,kd_token,kaldi_ark") for a in kd)
    assert not any("kd_token" in a for a in argv_of(recipe / "exp/ctc"))

    # on a GPU cluster: one training job with the GPUs, Lightning's DDP over them
    for system in ("ctc", "kd"):
        (recipe / "exp" / system / "valid.cer_ctc.ave.pth").unlink()
    proc = asr_sh(recipe, "--use_lightning", "true", "--cmd_backend", "slurm", "--ngpu", "2", "--systems", "kd",
                  "--stage", "11", "--stop_stage", "11")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [sub] = submissions(recipe)
    assert "--gres=gpu:2" in sub
    conf = lightning_conf(argv_of(recipe / "exp/kd"))
    assert conf["devices"] == "2" and conf["accelerator"] == "gpu" and conf["strategy"] == "ddp"


def test_lightning_without_espnets_lightning_trainer_is_refused_up_front(recipe, tmp_path):
    """An ESPnet without espnet2.bin.lightning_train (here: an espnet2 package without it, first on the path)."""
    fake = tmp_path / "fake_espnet"
    (fake / "espnet2/bin").mkdir(parents=True)
    (fake / "espnet2/__init__.py").touch()
    (fake / "espnet2/bin/__init__.py").touch()
    proc = asr_sh(recipe, "--use_lightning", "true", "--stage", "1", PYTHONPATH=f"{fake}{os.pathsep}{REPO}")
    assert proc.returncode == 1 and "Stage" not in proc.stdout, proc.stdout
    [line] = proc.stderr.strip().splitlines()  # one line, no traceback
    assert "--use_lightning true: ESPnet" in line and "has no Lightning trainer (espnet2.bin.lightning_train)" in line
    assert not (recipe / "data/lm_train.txt").exists()
    proc = asr_sh(recipe, "--use_lightning", "yes", "--stage", "11")
    assert proc.returncode == 1 and proc.stderr.strip().endswith("--use_lightning 'yes': true or false")


def test_speed_perturbation_stage_makes_the_sp_set(recipe):
    """Stage 2 through train_cmd: the perturbed copies' audio in --nj jobs, then the data dir; later stages train on it."""
    import soundfile

    audio = recipe / "audio"
    audio.mkdir()
    lines = []
    for i in range(4):
        soundfile.write(audio / f"train{i}.flac", np.zeros(1600 + 160 * i, dtype=np.float32), 16000)
        lines.append(f"train{i} {audio / f'train{i}.flac'}\n")
    (recipe / "data/train/wav.scp").write_text("".join(lines))
    (recipe / "data/train/utt2spk").write_text("".join(f"train{i} spk\n" for i in range(4)))
    (recipe / "data/train/spk2utt").write_text("spk " + " ".join(f"train{i}" for i in range(4)) + "\n")
    proc = asr_sh(recipe, "--cmd_backend", "slurm", "--nj", "2", "--speed_perturb_factors", "0.9 1.0 1.1",
                  "--stage", "2", "--stop_stage", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [sub] = submissions(recipe)
    assert "--array=1-2" in sub
    ids = [line.split()[0] for line in (recipe / "data/train_sp/wav.scp").read_text().splitlines()]
    assert len(ids) == 12 and "sp0.9-train0" in ids and "sp1.1-train3" in ids and "train2" in ids
    frames = soundfile.info(str(recipe / "dump/audio/train_sp/sp0.9/spk/sp0.9-train0.flac")).frames
    assert abs(frames - 1600 / 0.9) <= 2
