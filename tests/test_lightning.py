"""ESPnet's Lightning trainer (`espnet2.bin.lightning_train --task asr`, asr.sh's `--use_lightning true`) with
`model: bertkd`, on CPU with 2 processes (Lightning's DDP over gloo).

1. The launch path end to end: `python -m espnet_bertkd.launch -m espnet2.bin.lightning_train --task asr` with
   `devices=2`: Lightning starts the second process itself, by re-running the main module, which is the plugin's
   launcher (espnet_bertkd.compat.relaunch_through_launcher makes that `launch -m espnet2.bin.lightning_train`).
   Two ranks train a few steps on cached soft labels and write Lightning's checkpoint and ESPnet's averaged model.
2. Two processes give the gradients of one process on the whole batch (test_ddp.py's standard and batches, for
   ESPnet's own trainer): here each rank runs ESPnet's LitESPnetModel under a Lightning Trainer with ESPnet's
   DDPStrategy, the ranks started by torch.multiprocessing (Lightning sees them as launched externally), cached and
   online teacher. Lightning averages the ranks' gradients and does not weight the loss by the batch size as
   ESPnet's trainer does; with equal halves that is the same thing.
3. The online teacher stays frozen: not among the optimizer's or DDP's parameters, no gradient, and its weights
   after training are those it was loaded with.
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import torch.multiprocessing as mp
import yaml

pytest.importorskip("lightning", reason="ESPnet's Lightning trainer needs the lightning package ([lightning] extra)")
pytest.importorskip("espnet2.bin.lightning_train", reason="this ESPnet release has no Lightning trainer")

from conftest import TEXTS, TOKENS, asr_train_args, kd_model_conf  # noqa: E402
from test_ddp import (  # noqa: E402  (the DDP standard: same model cases, batches, helpers and tolerance)
    ENCODER, NO_DROPOUT_DECODER, NO_DROPOUT_ENCODER, assert_close, full_batches, make_model, rows, train_steps, whole,
)

TESTS_DIR = str(Path(__file__).resolve().parent)
WORLD = 2
LR = 1e-3
CASES: Dict[str, Dict[str, Any]] = {"cached": {"mode": "cached"}, "online": {"mode": "online"}}


# ------------------------------------------------------------------------------------------- compat pieces pinned
def test_lightning_launcher_still_builds_the_command_compat_replaces():
    """What compat patches: lightning.pytorch's DDP launcher builds each further process's command with the module
    function `_basic_subprocess_cmd` (looked up at call time), `[python, -m, <__main__'s module>, *sys.argv[1:]]`."""
    import inspect

    from lightning.pytorch.strategies.launchers import subprocess_script

    from espnet_bertkd import compat

    assert compat.LIGHTNING_SUBPROCESS_SCRIPT == subprocess_script.__name__
    assert "_basic_subprocess_cmd()" in inspect.getsource(subprocess_script._SubprocessScriptLauncher)
    patched = subprocess_script._basic_subprocess_cmd
    assert getattr(patched, "_through_launcher", False)  # importing the plugin patched it
    original = patched.__wrapped__
    main = sys.modules["__main__"]
    fake_main = argparse.Namespace(__spec__=argparse.Namespace(name=compat.LAUNCHER))
    argv = ["espnet2.bin.lightning_train", "--task", "asr", "--config", "c.yaml"]
    try:
        sys.modules["__main__"] = fake_main
        sys.argv, saved = argv, sys.argv
        # Lightning's own command would run `launch --task asr ...`, which is no launcher command
        assert original() == [sys.executable, "-m", compat.LAUNCHER, *argv[1:]]
        assert patched() == [sys.executable, "-m", compat.LAUNCHER, "-m", *argv]
        fake_main.__spec__.name = "some_script_module"  # any other main module keeps Lightning's command
        assert patched() == original() == [sys.executable, "-m", "some_script_module", *argv[1:]]
    finally:
        sys.modules["__main__"], sys.argv = main, saved


def test_lightning_trainer_missing_names_the_reason(monkeypatch):
    from espnet_bertkd import compat

    assert compat.lightning_trainer_missing() is None  # here it runs
    real = compat.importlib.util.find_spec
    monkeypatch.setattr(compat.importlib.util, "find_spec",
                        lambda name, *a: None if name == compat.LIGHTNING_TRAIN else real(name, *a))
    assert "has no Lightning trainer (espnet2.bin.lightning_train)" in compat.lightning_trainer_missing()
    monkeypatch.setattr(compat.importlib.util, "find_spec",
                        lambda name, *a: None if name == "lightning" else real(name, *a))
    assert "espnet-bertkd[lightning]" in compat.lightning_trainer_missing()


# ------------------------------------------------------------------------------------------ 1. the launch path
RATE = 16000


def write_set(root: Path, name: str, texts: List[str]) -> Path:
    import numpy as np
    import soundfile

    d = root / "data" / name
    (d / "wav").mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    scp, text = [], []
    for i, t in enumerate(texts):
        utt = f"{name}{i}"
        soundfile.write(d / "wav" / f"{utt}.wav", (0.1 * rng.standard_normal(24000 + 1600 * i)).astype("float32"), RATE)
        scp.append(f"{utt} {d / 'wav' / utt}.wav\n")
        text.append(f"{utt} {t}\n")
    (d / "wav.scp").write_text("".join(scp))
    (d / "text").write_text("".join(text))
    return d


def launch_lightning(tmp_path: Path, teacher_dir: str, lightning_conf_drop: tuple = ()):
    """asr.sh's stage-11 command with --use_lightning true, on 2 CPU processes, cached soft labels; (process, out)."""
    from espnet_bertkd.bin import extract_soft_labels

    args: List[str] = []
    for split, name, texts in (("train", "train", TEXTS[:4]), ("valid", "dev", TEXTS[4:6])):
        d = write_set(tmp_path, name, texts)
        extract_soft_labels.main(["--teacher", teacher_dir, "--text", str(d / "text"), "--output_dir",
                                  str(tmp_path / "kd" / name), "--topk", "4", "--nj", "1"])
        flag = f"--{split}_data_path_and_name_and_type"
        args += [flag, f"{d}/wav.scp,speech,sound", flag, f"{d}/text,text,text", f"--{split}_shape_file",
                 f"{d}/wav.scp"]
        for key in ("kd_token", "kd_prob"):
            args += [flag, f"{tmp_path}/kd/{name}/{key}.scp,{key},kaldi_ark"]
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = {
        "model": "bertkd", "model_conf": kd_model_conf(teacher_dir, "cached", kd_layers=[1, 2]),
        "frontend_conf": {"n_fft": 256, "hop_length": 128, "n_mels": 20}, "normalize": None,
        "encoder": "transformer", "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32,
                                                   "num_blocks": 2},
        # ESPnet's LitESPnetModel needs a scheduler (it hands Lightning `scheduler: None` otherwise)
        "optim": "adam", "optim_conf": {"lr": 0.01}, "scheduler": "steplr", "scheduler_conf": {"step_size": 100},
        "batch_type": "unsorted", "batch_size": 4, "num_workers": 0,
        "lightning_conf": {"max_steps": 2, "log_every_n_steps": 1, "enable_model_summary": False,
                           "num_sanity_val_steps": 0,
                           "best_model_criterion": [["valid/loss", "min", 2]]},
    }
    for key in lightning_conf_drop:
        del config["lightning_conf"][key]
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "exp"
    out.mkdir()  # asr.sh makes it; ESPnet's LitESPnetModel writes config.yaml into it first thing
    cmd = [sys.executable, "-m", "espnet_bertkd.launch", "-m", "espnet2.bin.lightning_train", "--task", "asr",
           "--config", "train.yaml", "--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor",
           "true", "--cleaner", "none", "--g2p", "none", "--non_linguistic_symbols", "none", *args,
           "--output_dir", str(out), "--lightning_conf", "devices=2", "--lightning_conf", "num_nodes=1",
           "--lightning_conf", "accelerator=cpu", "--lightning_conf", "strategy=ddp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240), out


def test_launch_path_trains_bertkd_on_two_processes(tmp_path, teacher_dir):
    proc, out = launch_lightning(tmp_path, teacher_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for member in ("MEMBER: 1/2", "MEMBER: 2/2"):  # both ranks joined (the second one started through the launcher)
        assert member in proc.stderr, proc.stderr[-3000:]

    ckpt = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    state = ckpt["state_dict"]
    assert any(k.startswith("model.kd_decoders.") for k in state)
    assert not [k for k in state if "teacher" in k or "bert" in k]
    # the optimizer holds the model's parameters (every one of them trainable), nothing else
    [group] = ckpt["optimizer_states"][0]["param_groups"]
    from espnet2.tasks.asr import ASRTask

    trained = yaml.safe_load((out / "config.yaml").read_text())
    assert trained["model"] == "bertkd" and trained["lightning_conf"]["devices"] == 2
    # the plugin's preflight ran as for asr_train: the teacher's vocabulary size is in config.yaml (decoding needs
    # no teacher)
    assert isinstance(trained["model_conf"]["teacher"]["vocab_size"], int)
    model, _ = ASRTask.build_model_from_file(str(out / "config.yaml"), None, "cpu")
    assert len(group["params"]) == len(list(model.parameters()))
    # ESPnet's AverageCheckpointsCallback: a plain ESPnet state dict of the bertkd model, loaded strictly
    averaged = out / "valid.loss.ave_2best.pth"
    model.load_state_dict(torch.load(averaged, map_location="cpu"), strict=True)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_launch_path_refuses_before_building_what_the_lightning_trainer_lacks(tmp_path, teacher_dir):
    proc, out = launch_lightning(tmp_path, teacher_dir, lightning_conf_drop=("log_every_n_steps",))
    assert proc.returncode != 0
    assert "not started, the preflight refused the run" in proc.stderr
    assert "lightning_conf has no log_every_n_steps" in proc.stderr
    assert not (out / "config.yaml").exists()  # nothing built, nothing written
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------ 2./3. gradients and the online teacher
def case_args(teacher_dir: str, case: Dict[str, Any], output_dir: str) -> argparse.Namespace:
    """The training arguments of test_ddp.make_model's model for a case, as ESPnet's lightning_train parses them."""
    conf = kd_model_conf(teacher_dir, case["mode"])
    conf["kd_decoder_conf"].update(NO_DROPOUT_DECODER)
    args = argparse.Namespace(**asr_train_args(ENCODER, conf, encoder_conf=dict(NO_DROPOUT_ENCODER)))
    args.task, args.output_dir = "asr", output_dir
    args.optim, args.optim_conf = "sgd", {"lr": LR}
    args.scheduler, args.scheduler_conf = "steplr", {"step_size": 100}
    args.lightning_conf = {}
    return args


def _worker(rank: int, port: int, tests_dir: str, teacher_dir: str, data_file: str, out_dir: str) -> None:
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    torch.set_num_threads(1)
    # The ranks are started here, so Lightning (LightningEnvironment) starts none itself
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD),
                       "NODE_RANK": "0", "LOCAL_RANK": str(rank), "RANK": str(rank)})
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    import espnet_bertkd  # noqa: F401
    from espnet2.train.lightning_espnet_model import LitESPnetModel

    batches = torch.load(data_file)
    half = batches[0]["speech"].shape[0] // WORLD

    class Probe(L.Callback):
        def __init__(self) -> None:
            self.result: Dict[str, Any] = {}

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # after DDP's all-reduce
            named = list(pl_module.model.named_parameters())
            self.result["params"] = {n: p.detach().clone() for n, p in named}
            self.result["grads"] = {n: None if p.grad is None else p.grad.detach().clone() for n, p in named}
            optimized = [p for group in optimizer.param_groups for p in group["params"]]
            reduced = list(trainer.strategy.model.parameters())  # what DDP wraps and all-reduces
            online = pl_module.model._online
            self.result["n_optimized"] = len(optimized)
            if online is not None:
                teacher = list(online.teacher.model.parameters())
                ids = {id(p) for p in optimized} | {id(p) for p in reduced}
                self.result["teacher_in_optimizer_or_ddp"] = sum(id(p) in ids for p in teacher)
                self.result["teacher_grads"] = sum(p.grad is not None for p in teacher)
                self.result["teacher_trainable"] = sum(p.requires_grad for p in teacher)

    for name, case in CASES.items():
        torch.manual_seed(0)  # as build_asr_model, so the ranks start from test_ddp.make_model's weights
        lit = LitESPnetModel(args=case_args(teacher_dir, case, os.path.join(out_dir, name)))
        mine = rows(batches[0], rank * half, (rank + 1) * half, case["mode"])
        utt_id = mine.pop("utt_id")
        probe = Probe()
        trainer = L.Trainer(accelerator="cpu", devices=WORLD, num_nodes=1, strategy=DDPStrategy(), max_steps=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            use_distributed_sampler=False, callbacks=[probe])
        # one batch in ESPnet's iterator format, (utt_ids, inputs); batch_size None: the item is the batch
        loader = torch.utils.data.DataLoader([(utt_id, mine)], batch_size=None)
        trainer.fit(lit, train_dataloaders=loader)
        online = lit.model._online
        if online is not None:
            probe.result["teacher_state"] = {k: v.clone() for k, v in online.teacher.model.state_dict().items()}
            probe.result["memo"] = sorted(online.memo)
        probe.result["n_model_params"] = len(list(lit.model.parameters()))
        torch.save(probe.result, os.path.join(out_dir, f"{name}.rank{rank}.pt"))


@pytest.fixture(scope="module")
def lightning_results(teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_ddp")
    for name in CASES:
        (out / name).mkdir()
    data_file = out / "batches.pt"
    torch.save(full_batches(teacher_dir)[:1], data_file)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, TESTS_DIR, teacher_dir, str(data_file), str(out)), nprocs=WORLD, join=True)
    return lambda name: [torch.load(out / f"{name}.rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_give_the_whole_batch_gradients(lightning_results, teacher_dir, name):
    case = CASES[name]
    ranks = lightning_results(name)
    reference = make_model(teacher_dir, case)
    names = [n for n, _ in reference.named_parameters()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks
    try:
        (expected,) = train_steps(reference, reference, [whole(full_batches(teacher_dir)[0], case["mode"])],
                                  distributed=False)
    finally:
        torch.set_num_threads(threads)
    worst = 0.0
    for r in ranks:
        assert list(r["params"]) == names
        for n in names:  # both ranks started from the one-process model's weights
            assert torch.equal(r["params"][n], expected["params"][n]), n
        for n in names:
            assert r["grads"][n] is not None, f"{n}: no gradient"
            error = assert_close(r["grads"][n], expected["grads"][n], f"grad of {n}")
            if expected["grads"][n].abs().max() > 1e-6:
                worst = max(worst, error)
    for n in names:  # DDP left both ranks the same gradients
        assert torch.equal(ranks[0]["grads"][n], ranks[1]["grads"][n]), n
    print(f"{name}: worst gradient |2 processes - 1 process| / max |1 process| = {worst:.3g}")


def test_online_teacher_stays_frozen_outside_the_optimizer(lightning_results, teacher_dir):
    from espnet_bertkd.kd.teacher import MaskedLMTeacher
    from espnet_bertkd.kd.teacher_config import TeacherConfig

    fresh = MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=4)).model.state_dict()
    cached = lightning_results("cached")
    half = len(TEXTS[:4]) // WORLD
    for rank, r in enumerate(lightning_results("online")):
        # the optimizer holds the model's parameters, exactly as many as the same model in cached mode (no teacher)
        assert r["n_optimized"] == r["n_model_params"] == cached[rank]["n_optimized"]
        assert r["teacher_in_optimizer_or_ddp"] == 0 and r["teacher_grads"] == 0 and r["teacher_trainable"] == 0
        assert r["memo"] == sorted(TEXTS[rank * half:(rank + 1) * half])  # it scored this rank's transcripts
        assert list(r["teacher_state"]) == list(fresh)
        for k, v in fresh.items():  # after the training step: the weights it was loaded with, to the bit
            assert torch.equal(r["teacher_state"][k], v), k


def test_checkpoint_averaging_reads_lightning_checkpoints(tmp_path):
    """ESPnet's AverageCheckpointsCallback reads each Lightning checkpoint with torch.load's default weights_only=True
    (torch >= 2.6), and those hold LitESPnetModel's hyperparameters, an argparse.Namespace: compat allowlists it."""
    import inspect

    from espnet2.train import lightning_callbacks

    assert 'torch.load(ckpt_path, map_location="cpu")' in inspect.getsource(lightning_callbacks)
    path = tmp_path / "step1.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "hyper_parameters": {"args": argparse.Namespace(a=1)}},
               path)
    assert torch.load(path, map_location="cpu")["hyper_parameters"]["args"].a == 1
