"""One source of truth for the teacher: the training config's model_conf.teacher drives extraction
(extract_soft_labels --asr_config), the driver asks kd_requirements what a config needs, and the training preflight
writes the teacher's vocabulary size into the saved config.yaml so that decoding never needs the teacher."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from conftest import TEXTS, TOKENS
from espnet_bertkd.bin import extract_soft_labels, kd_requirements
from espnet_bertkd.kd.requirements import BERTKD_MODEL, requirements
from espnet_bertkd.kd.soft_labels import META_FILE

REPO = Path(__file__).resolve().parents[1]
UTTS = [f"spk1-u{i:03d}" for i in range(len(TEXTS))]


def write_config(path: Path, kd_layers=(1,), **teacher) -> str:
    model_conf = {"kd_layers": list(kd_layers), "kd_decoder": "transformer",
                  "kd_decoder_conf": {"num_blocks": 1, "attention_heads": 2, "linear_units": 32}}
    if teacher:
        model_conf["teacher"] = teacher
    conf = {"model": "bertkd", "model_conf": model_conf, "frontend_conf": {"n_fft": 256, "hop_length": 128,
            "n_mels": 20}, "encoder": "conformer",
            "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2,
                             "input_layer": "conv2d", "rel_pos_type": "latest", "pos_enc_layer_type": "rel_pos",
                             "selfattention_layer_type": "rel_selfattn"},
            "optim": "adam", "optim_conf": {"lr": 0.001}, "max_epoch": 1, "batch_type": "folded", "batch_size": 3,
            "best_model_criterion": [["valid", "cer_ctc", "min"]], "keep_nbest_models": 1, "num_workers": 0,
            "normalize": None}
    path.write_text(yaml.safe_dump(conf))
    return str(path)


@pytest.fixture
def text_file(tmp_path) -> str:
    path = tmp_path / "text"
    path.write_text("".join(f"{u} {t}\n" for u, t in zip(UTTS, TEXTS)))
    return str(path)


def test_model_name_matches_the_plugin():
    from espnet_bertkd.asr.bertkd_model import MODEL_NAME

    assert BERTKD_MODEL == MODEL_NAME


# ------------------------------------------------------------------------------------------ extract --asr_config
def test_extract_reads_the_config_teacher(tmp_path, text_file, teacher_dir):
    config = write_config(tmp_path / "kd.yaml", model="not/here", mode="cached", topk=3, temperature=2.5,
                          drop_special=False)
    out = tmp_path / "kd"
    # --teacher replaces only the location; topk, temperature and drop_special are the config's
    extract_soft_labels.main(["--asr_config", config, "--teacher", teacher_dir, "--text", text_file,
                              "--output_dir", str(out), "--log_level", "WARNING"])
    meta = json.loads((out / META_FILE).read_text())
    assert (meta["teacher"], meta["topk"], meta["temperature"], meta["drop_special"]) == (teacher_dir, 3, 2.5, False)
    assert (out / "kd_token.scp").exists()


def parse(*argv: str):
    return extract_soft_labels.get_parser().parse_args(["--text", "t", "--output_dir", "o", *argv])


def test_extract_options_may_repeat_but_not_contradict_the_config(tmp_path, teacher_dir):
    config = write_config(tmp_path / "kd.yaml", model=teacher_dir, topk=3, temperature=2.5)
    same = extract_soft_labels.teacher_config(parse("--asr_config", config, "--topk", "3", "--temperature", "2.5",
                                                    "--max_tokens_per_batch", "64"))
    assert (same.topk, same.temperature, same.max_tokens_per_batch, same.model) == (3, 2.5, 64, teacher_dir)
    with pytest.raises(ValueError) as err:
        extract_soft_labels.teacher_config(parse("--asr_config", config, "--topk", "5", "--keep_special"))
    message = str(err.value)
    assert "--topk 5" in message and "teacher.topk: 3" in message and "teacher.drop_special: True" in message
    with pytest.raises(SystemExit) as exit_:
        extract_soft_labels.main(["--asr_config", config, "--temperature", "1", "--text", "t", "--output_dir", "o"])
    assert "--temperature 1.0" in str(exit_.value) and "teacher.temperature: 2.5" in str(exit_.value)


def test_extract_without_a_config_keeps_the_options(teacher_dir):
    config = extract_soft_labels.teacher_config(parse("--teacher", teacher_dir, "--topk", "4", "--keep_special"))
    assert (config.model, config.topk, config.temperature, config.drop_special) == (teacher_dir, 4, 1.0, False)
    with pytest.raises(ValueError, match="--asr_config.*--teacher"):
        extract_soft_labels.teacher_config(parse())


def test_extract_refuses_configs_without_cached_soft_labels(tmp_path, teacher_dir):
    online = write_config(tmp_path / "online.yaml", model=teacher_dir, mode="online")
    with pytest.raises(ValueError, match="online.*reads no cached soft labels"):
        extract_soft_labels.teacher_config(parse("--asr_config", online))
    ctc = write_config(tmp_path / "ctc.yaml", kd_layers=())
    with pytest.raises(ValueError, match="ctc.yaml trains no KD decoders"):
        extract_soft_labels.teacher_config(parse("--asr_config", ctc))


# ------------------------------------------------------------------------------------------------ kd_requirements
def test_requirements_of_ctc_cached_and_online_configs(tmp_path):
    ctc = write_config(tmp_path / "ctc.yaml", kd_layers=(), model="ignored")  # a teacher block without KD layers
    cached = write_config(tmp_path / "cached.yaml", model="exp/teacher", topk=8)
    online = write_config(tmp_path / "online.yaml", model="exp/teacher", mode="online")
    espnet = tmp_path / "espnet.yaml"
    espnet.write_text(yaml.safe_dump({"model": "espnet", "model_conf": {"ctc_weight": 0.3}}))

    def get(configs, field, teacher=None):
        return kd_requirements.answer(configs, teacher, field)

    assert [get([c], "mode") for c in (ctc, cached, online, str(espnet))] == ["none", "cached", "online", "none"]
    assert [get([c], "soft_labels") for c in (ctc, cached, online)] == ["false", "true", "false"]
    assert [get([c], "kd") for c in (ctc, cached, online)] == ["false", "true", "true"]
    assert get([ctc, online], "soft_labels_config") == "" and get([ctc, online, cached], "soft_labels_config") == cached
    assert get([ctc, cached, online], "mode") == "mixed" and get([ctc], "teacher") == ""
    assert get([ctc, cached, online], "teacher") == "exp/teacher"
    assert get([cached, online], "teacher", teacher="/models/bert") == "/models/bert"  # the location override
    full = json.loads(kd_requirements.answer([ctc, cached], None, None))
    assert [c["mode"] for c in full["configs"]] == ["none", "cached"] and full["soft_labels_config"] == cached
    assert full["configs"][1]["teacher"]["topk"] == 8 and full["kd"] is True


def test_requirements_name_configs_that_disagree(tmp_path):
    a = write_config(tmp_path / "a.yaml", model="t", topk=8, temperature=3.0)
    b = write_config(tmp_path / "b.yaml", model="t", topk=4, temperature=3.0)
    other = write_config(tmp_path / "other.yaml", model="u", mode="online")
    with pytest.raises(ValueError) as err:
        kd_requirements.answer([a, b], None, "soft_labels_config")
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value) and "topk: 8 vs 4" in str(err.value)
    assert kd_requirements.answer([a, other], None, "soft_labels_config") == a  # an online one reads none
    with pytest.raises(ValueError, match="different teachers.*'t' in .*a.yaml.*'u' in .*other.yaml"):
        kd_requirements.answer([a, other], None, "teacher")
    missing = write_config(tmp_path / "missing.yaml")  # kd_layers without a teacher
    with pytest.raises(ValueError, match="missing.yaml: model_conf.kd_layers needs model_conf.teacher"):
        requirements(missing)
    typo = write_config(tmp_path / "typo.yaml", model="t", topK=8)
    with pytest.raises(ValueError, match="typo.yaml: unknown key.*topK"):
        requirements(typo)


def test_requirements_cli_for_the_driver(tmp_path):
    """The answers the stage driver reads: one line, and a non-zero exit with the message on a bad config."""
    conf = REPO / "egs/homophones/asr1/conf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "espnet_bertkd.bin.kd_requirements"]
    systems = [a for s in ("ctc", "aed", "inter_aed_kd") for a in ("--asr_config", str(conf / f"train_asr_{s}.yaml"))]
    got = subprocess.run([*cmd, *systems, "--get", "soft_labels_config"], capture_output=True, text=True, env=env)
    assert got.returncode == 0 and got.stdout == f"{conf / 'train_asr_aed.yaml'}\n", got.stderr
    bad = write_config(tmp_path / "bad.yaml", model="t", mode="offline")
    got = subprocess.run([*cmd, "--asr_config", bad, "--get", "mode"], capture_output=True, text=True, env=env)
    assert got.returncode == 1 and got.stdout == "" and "bad.yaml: teacher.mode must be one of" in got.stderr


@pytest.mark.parametrize("recipe", ["homophones", "librispeech", "librispeech_100"])
def test_recipe_kd_configs_agree_on_their_soft_labels(recipe):
    """Stage 4 extracts once for every cached-mode system of a recipe: their teacher blocks must agree."""
    conf = REPO / "egs" / recipe / "asr1/conf"
    configs = [str(conf / f"train_asr_{s}.yaml") for s in ("ctc", "interctc", "aed", "final_aed_kd", "inter_aed_kd")]
    assert kd_requirements.answer(configs, None, "soft_labels_config") == configs[2]
    assert kd_requirements.answer(configs, None, "teacher") == (
        "exp/teacher" if recipe == "homophones" else "bert-base-uncased")


# ------------------------------------------------------------------------------------------------- the driver
def run_driver(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """asr.sh for one stage on configs in tmp_path/conf (no data: these stages stop before reading any)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(REPO / "egs/TEMPLATE/asr1/asr.sh"), "--python", sys.executable,
                           "--train_set", "train", "--valid_set", "dev", "--test_sets", "test",
                           "--asr_config_dir", "conf", *args], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_driver_asks_the_configs(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write_config(conf / "train_asr_ctc.yaml", kd_layers=())
    write_config(conf / "train_asr_online.yaml", model="exp/teacher", mode="online")
    write_config(conf / "train_asr_a.yaml", model="exp/teacher", topk=8)
    write_config(conf / "train_asr_b.yaml", model="exp/teacher", topk=4)
    # online-mode and CTC systems need no extraction
    proc = run_driver(tmp_path, "--stage", "4", "--stop_stage", "4", "--systems", "ctc online")
    assert proc.returncode == 0 and "skip: no system of --systems reads cached soft labels" in proc.stdout, proc.stderr
    proc = run_driver(tmp_path, "--stage", "3", "--stop_stage", "3", "--systems", "ctc", "--train_teacher", "true")
    assert proc.returncode == 0 and "skip: no system of --systems trains KD decoders" in proc.stdout, proc.stderr
    # cached systems that need different soft labels: refused, naming both configs
    proc = run_driver(tmp_path, "--stage", "4", "--stop_stage", "4", "--systems", "ctc a b")
    assert proc.returncode != 0 and "conf/train_asr_a.yaml and conf/train_asr_b.yaml" in proc.stderr
    assert "topk: 8 vs 4" in proc.stderr and not (tmp_path / "dump").exists()
    # the options the configs own are gone, and --teacher names a location, not an action
    for args, message in ((["--topk", "8"], "unknown option --topk"),
                          (["--kd_temperature", "3"], "unknown option --kd_temperature"),
                          (["--teacher", "train"], "--teacher train is gone")):
        proc = run_driver(tmp_path, "--stage", "4", "--stop_stage", "4", *args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)


def test_driver_gives_soft_labels_to_cached_systems_only(tmp_path):
    """Stage 11's training commands: kd_token/kd_prob inputs for cached-mode systems only, and --teacher (a
    location with a space here) as a quoted teacher.model override of the KD systems alone."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write_config(conf / "train_asr_ctc.yaml", kd_layers=())
    write_config(conf / "train_asr_online.yaml", model="exp/teacher", mode="online")
    write_config(conf / "train_asr_cached.yaml", model="exp/teacher")
    stats = tmp_path / "exp/asr_stats_char/train/feats_stats.npz"
    stats.parent.mkdir(parents=True)
    stats.touch()  # collect-stats done
    python = tmp_path / "python"  # the real interpreter, except that training only writes its outputs
    python.write_text(f"#!/usr/bin/env bash\ncase \" $* \" in *\" espnet_bertkd.bin.asr_train \"*)\n"
                      "  while [ $# -gt 0 ]; do [ \"$1\" = --output_dir ] && out=$2; shift; done\n"
                      "  touch \"$out/config.yaml\" \"$out/valid.cer_ctc.ave.pth\"; exit 0 ;; esac\n"
                      f"exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    proc = run_driver(tmp_path, "--stage", "11", "--stop_stage", "11", "--systems", "ctc online cached",
                      "--token_type", "char", "--teacher", "/models/my bert", "--python", str(python))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    scripts = {s: (tmp_path / "exp" / s / "train.sh").read_text() for s in ("ctc", "online", "cached")}
    assert ["kd_token.scp" in scripts[s] for s in ("ctc", "online", "cached")] == [False, False, True]
    override = "--model_conf teacher.model=\\'/models/my\\ bert\\'"  # printf %q of teacher.model='/models/my bert'
    assert [override in scripts[s] for s in ("ctc", "online", "cached")] == [False, True, True]


# ---------------------------------------------------------------------------------------- vocab size in config.yaml
def espnet_args(*argv: str):
    from espnet2.tasks.asr import ASRTask

    import espnet_bertkd  # noqa: F401

    return ASRTask.get_parser().parse_args(["--token_list", "tokens.txt", *argv])


def test_preflight_resolves_the_teacher_vocab_size(tmp_path, teacher_dir):
    from espnet_bertkd.kd.teacher import load_teacher_vocab_size
    from espnet_bertkd.tasks.preflight import resolve_teacher_vocab_size

    size = load_teacher_vocab_size(teacher_dir)
    args = espnet_args("--config", write_config(tmp_path / "kd.yaml", model=teacher_dir, topk=4))
    assert resolve_teacher_vocab_size(args) == ["--model_conf", f"teacher.vocab_size={size}"]
    assert args.model_conf["teacher"] == {"model": teacher_dir, "topk": 4, "vocab_size": size}
    # given already, or no KD decoders: nothing to add
    given = espnet_args("--config", write_config(tmp_path / "given.yaml", model=teacher_dir, vocab_size=size))
    ctc = espnet_args("--config", write_config(tmp_path / "ctc.yaml", kd_layers=(), model=teacher_dir))
    assert resolve_teacher_vocab_size(given) == [] and resolve_teacher_vocab_size(ctc) == []
    # a teacher that does not load here is left to the model constructor's TeacherLoadError
    gone = espnet_args("--config", write_config(tmp_path / "gone.yaml", model=str(tmp_path / "no_teacher")))
    assert resolve_teacher_vocab_size(gone) == [] and "vocab_size" not in gone.model_conf["teacher"]


def test_trained_config_decodes_without_the_teacher(tmp_path, teacher_dir):
    """extract (--asr_config) -> train through the plugin -> config.yaml holds teacher.vocab_size -> the model is
    built from config.yaml and decodes with the teacher directory gone."""
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = write_config(tmp_path / "train.yaml", model=str(teacher), mode="cached", topk=4)
    rng = np.random.default_rng(0)
    for name, texts in (("train", TEXTS), ("dev", TEXTS[:2])):
        d = tmp_path / "data" / name
        d.mkdir(parents=True)
        lines, shapes = [], []
        for i, t in enumerate(texts):
            n = 24000 + 800 * i  # 1.5 s and more: CTC can align each transcript (the preflight checks it)
            wave = 0.1 * np.sin(np.arange(n) * 0.05 * (i + 1)) + 0.01 * rng.standard_normal(n)
            soundfile.write(d / f"{i}.wav", wave.astype(np.float32), 16000)
            lines.append(f"{UTTS[i]} {d / f'{i}.wav'}")
            shapes.append(f"{UTTS[i]} {n}")
        (d / "wav.scp").write_text("\n".join(lines) + "\n")
        (d / "text").write_text("".join(f"{u} {t}\n" for u, t in zip(UTTS, texts)))
        (d / "speech_shape").write_text("\n".join(shapes) + "\n")
        extract_soft_labels.main(["--asr_config", config, "--text", str(d / "text"), "--output_dir",
                                  str(tmp_path / "dump" / name), "--log_level", "WARNING"])
    data: list = []
    for split, name in (("train", "train"), ("valid", "dev")):
        flag = f"--{split}_data_path_and_name_and_type"
        data += [flag, f"data/{name}/wav.scp,speech,sound", flag, f"data/{name}/text,text,text",
                 f"--{split}_shape_file", f"data/{name}/speech_shape"]
        data += [a for key in ("kd_token", "kd_prob") for a in (flag, f"dump/{name}/{key}.scp,{key},kaldi_ark")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "espnet_bertkd.bin.asr_train", "--config", "train.yaml",
                           "--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true",
                           "--cleaner", "none", "--g2p", "none", "--non_linguistic_symbols", "none", "--ngpu", "0",
                           "--fold_length", "80000", "--output_dir", "exp", *data],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    saved = yaml.safe_load((tmp_path / "exp/config.yaml").read_text())["model_conf"]["teacher"]
    from espnet_bertkd.kd.teacher import load_teacher_vocab_size

    assert saved["vocab_size"] == load_teacher_vocab_size(str(teacher)) and saved["model"] == str(teacher)

    shutil.rmtree(teacher)
    from espnet2.tasks.asr import ASRTask

    model_file = next((tmp_path / "exp").glob("*.pth"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        model, _ = ASRTask.build_model_from_file(str(tmp_path / "exp/config.yaml"), str(model_file), "cpu")
    finally:
        os.chdir(cwd)
    assert model.kd_vocab_size == saved["vocab_size"] + 1
    import torch

    model.eval()
    with torch.no_grad():
        enc, _ = model.encode(torch.randn(1, 8000), torch.tensor([8000]))
    assert model.ctc.argmax(enc).shape[0] == 1
