"""Bad data and bad config make `asr_train` fail in the preflight, before ESPnet builds or reads anything, with a
message naming the file, line, utterance or key, and leave every file as it was.

Each case goes through the real entry point: `espnet_bertkd.launch.preflight` on an ESPnet command line (parsed by
ESPnet's own parser, config file included), or `python -m espnet_bertkd.bin.asr_train` as a subprocess."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import soundfile
import yaml

from conftest import TEXTS, TOKENS
from espnet_bertkd.recipe.bin import validate_data_dir as validate_cli
from espnet_bertkd.launch import preflight
from espnet_bertkd.tasks.preflight import DATA_CHECK_ENV

ASR_TRAIN = "espnet2.bin.asr_train"
RATE = 16000

CONFIG = {
    "model": "bertkd",
    "model_conf": {
        "ctc_weight": 0.5,
        "kd_layers": [1, 2],
        "kd_decoder_conf": {"num_blocks": 1, "attention_heads": 2, "linear_units": 32},
        # online: no soft-label files needed; the preflight does not load the teacher
        "teacher": {"model": "exp/teacher", "mode": "online", "topk": 4},
    },
    "frontend_conf": {"n_fft": 256, "hop_length": 128, "n_mels": 20},
    "encoder": "transformer",
    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2},
}


def utt(name: str, i: int) -> str:
    return f"spk1-{name}-{i:03d}"


def write_wav(path: Path, samples: int = 8000, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), (0.1 * np.sin(np.arange(samples) * 0.05)).astype(np.float32), rate)


def write_data_dir(root: Path, name: str, texts: Sequence[str], rate: int = RATE) -> Path:
    """A valid Kaldi data directory (sorted tables, spk2utt) with one short wav per transcript."""
    d = root / "data" / name
    ids = [utt(name, i) for i in range(len(texts))]
    for u in ids:
        write_wav(d / "wav" / f"{u}.wav", rate=rate)
    (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / u}.wav\n" for u in ids))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, t in zip(ids, texts)))
    (d / "utt2spk").write_text("".join(f"{u} spk1\n" for u in ids))
    (d / "spk2utt").write_text(f"spk1 {' '.join(ids)}\n")
    return d


@pytest.fixture
def recipe(tmp_path) -> Path:
    """Train and dev data, a char token list, a config, and an experiment directory from an earlier run."""
    write_data_dir(tmp_path, "train", TEXTS[:4])
    write_data_dir(tmp_path, "dev", TEXTS[4:])
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "checkpoint.pth").write_bytes(b"an earlier run's checkpoint")
    (tmp_path / "exp" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp_path


def train_argv(root: Path, *extra: str, train: str = "train", valid: str = "dev") -> List[str]:
    """What asr.sh stage 6 passes to asr_train (token type char)."""
    argv = ["--config", str(root / "train.yaml"), "--use_preprocessor", "true", "--token_type", "char",
            "--token_list", str(root / "tokens.txt"), "--non_linguistic_symbols", "none", "--cleaner", "none",
            "--g2p", "none", "--output_dir", str(root / "exp"), "--ngpu", "0"]
    for split, name in (("train", train), ("valid", valid)):
        flag = f"--{split}_data_path_and_name_and_type"
        argv += [flag, f"{root}/data/{name}/wav.scp,speech,sound", flag, f"{root}/data/{name}/text,text,text"]
    return argv + list(extra)


def snapshot(root: Path) -> Dict[str, Tuple[str, int]]:
    """Every file under root with its content hash and modification time."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(root: Path, argv: Sequence[str], error: type = ValueError) -> str:
    """The preflight's error message; asserts that no file under root was created, changed or removed."""
    before = snapshot(root)
    with pytest.raises(error) as e:
        preflight(ASR_TRAIN, list(argv))
    assert snapshot(root) == before
    return str(e.value)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def test_valid_recipe_passes_and_writes_nothing(recipe):
    before = snapshot(recipe)
    preflight(ASR_TRAIN, train_argv(recipe))
    assert snapshot(recipe) == before


# ----------------------------------------------------------------------------------------------------------- data
def test_missing_input_file(recipe):
    (recipe / "data/train/text").unlink()
    msg = refused(recipe, train_argv(recipe))
    path = recipe / "data/train/text"
    assert f"--train_data_path_and_name_and_type {path},text,text: {path}: no such file" in msg


def test_missing_audio_file(recipe):
    wav = recipe / "data/train/wav" / f"{utt('train', 2)}.wav"
    wav.unlink()
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/train/wav.scp:3: utterance {utt('train', 2)}: audio file {wav} does not exist" in msg


def test_unreadable_and_empty_audio(recipe):
    (recipe / "data/train/wav" / f"{utt('train', 1)}.wav").write_bytes(b"not audio at all")
    write_wav(recipe / "data/train/wav" / f"{utt('train', 3)}.wav", samples=0)
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/train/wav.scp:2: utterance {utt('train', 1)}: cannot read" in msg
    assert f"{recipe}/data/train/wav.scp:4: utterance {utt('train', 3)}: " in msg and "has no samples" in msg


def test_wrong_sample_rate_reported_with_the_train_problems(recipe):
    """Both splits are checked before the error: one (possibly long) run shows everything to fix."""
    wav = recipe / "data/dev/wav" / f"{utt('dev', 1)}.wav"
    write_wav(wav, rate=8000)
    (recipe / "data/train/wav" / f"{utt('train', 0)}.wav").write_bytes(b"")
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/dev/wav.scp:2: utterance {utt('dev', 1)}: {wav} has sample rate 8000, expected 16000" in msg
    assert f"{recipe}/data/train/wav.scp:1: utterance {utt('train', 0)}: cannot read" in msg
    assert msg.startswith("2 problems:") and "Resample" in msg and "ESPnet was not started" in msg


def test_sample_rate_comes_from_frontend_conf(recipe):
    for name, texts in (("train", TEXTS[:4]), ("dev", TEXTS[4:])):
        write_data_dir(recipe, name, texts, rate=8000)
    msg = refused(recipe, train_argv(recipe))  # ESPnet's default front-end assumes 16 kHz
    assert "has sample rate 8000, expected 16000" in msg
    preflight(ASR_TRAIN, train_argv(recipe, "--frontend_conf", "fs=8k"))  # asr.sh passes fs like this


def test_audio_header_check_can_be_skipped(recipe, monkeypatch):
    (recipe / "data/train/wav" / f"{utt('train', 1)}.wav").write_bytes(b"not audio at all")
    monkeypatch.setenv(DATA_CHECK_ENV, "no_audio")
    preflight(ASR_TRAIN, train_argv(recipe))  # the headers are not read ...
    (recipe / "data/train/wav" / f"{utt('train', 2)}.wav").unlink()
    assert f"utterance {utt('train', 2)}: audio file" in refused(recipe, train_argv(recipe))  # ... existence is
    monkeypatch.setenv(DATA_CHECK_ENV, "off")
    preflight(ASR_TRAIN, train_argv(recipe))
    monkeypatch.setenv(DATA_CHECK_ENV, "fast")
    assert f"{DATA_CHECK_ENV}='fast': must be one of" in refused(recipe, train_argv(recipe))


def test_unsorted_text_names_the_fix(recipe):
    lines = (recipe / "data/train/text").read_text().splitlines(keepends=True)
    (recipe / "data/train/text").write_text("".join([lines[1], lines[0]] + lines[2:]))
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/train/text:2: utterance {utt('train', 0)}: not sorted" in msg
    assert f"python -m espnet_bertkd.recipe.bin.validate_data_dir {recipe}/data/train --fix" in msg


def test_utterance_missing_from_text_or_extra_in_text(recipe):
    edit(recipe / "data/train/text", f"{utt('train', 3)} {TEXTS[3]}\n", f"{utt('train', 9)} AN EXTRA ONE\n")
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/train/utt2spk:4: utterance {utt('train', 3)}: missing from {recipe}/data/train/text" in msg
    assert f"{recipe}/data/train/text:4: utterance {utt('train', 9)}: not in {recipe}/data/train/utt2spk" in msg


def test_tables_outside_a_data_dir(recipe):
    """Plain wav.scp/text files (no utt2spk): the same checks, and speech vs text compared directly."""
    for name in ("utt2spk", "spk2utt"):
        (recipe / "data/train" / name).unlink()
    edit(recipe / "data/train/text", f"{utt('train', 2)} {TEXTS[2]}\n", "")
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/train/wav.scp:3: utterance {utt('train', 2)}: missing from {recipe}/data/train/text" in msg
    assert "LC_ALL=C sort" in msg and "validate_data_dir" not in msg


def test_empty_transcript_and_its_fix(recipe):
    edit(recipe / "data/train/text", f"{utt('train', 1)} {TEXTS[1]}", utt("train", 1))
    msg = refused(recipe, train_argv(recipe))
    assert f"{recipe}/data/train/text:2: utterance {utt('train', 1)}: empty transcript" in msg
    assert "--drop_empty_text" in msg
    validate_cli.main([str(recipe / "data/train"), "--fix", "--drop_empty_text"])  # what the message says to run
    preflight(ASR_TRAIN, train_argv(recipe))
    assert utt("train", 1) not in (recipe / "data/train/wav.scp").read_text()


def test_character_outside_the_char_token_list(recipe):
    edit(recipe / "data/dev/text", TEXTS[5], "TWO DOGS RAN TO THE PARK!")
    edit(recipe / "data/dev/text", TEXTS[4], "WE SEE THE SEA FROM HÉRE")
    msg = refused(recipe, train_argv(recipe))
    outside = f"character(s) outside the token list {recipe}/tokens.txt (they would become <unk>)"
    assert f"{recipe}/data/dev/text:1: utterance {utt('dev', 0)}: {outside}: 'É'" in msg
    assert f"{recipe}/data/dev/text:2: utterance {utt('dev', 1)}: {outside}: '!'" in msg


@pytest.fixture
def bpe(recipe) -> Path:
    from espnet_bertkd.recipe.tokens import train_bpe

    corpus = recipe / "bpe_text"
    corpus.write_text("".join(f"u{i:03d} {t}\n" for i, t in enumerate(TEXTS * 5)))
    return train_bpe([corpus], recipe / "bpe", vocab_size=32).model.parent


def test_character_the_bpe_model_cannot_represent(recipe, bpe):
    edit(recipe / "data/train/text", TEXTS[1], "I WANT TO GO TOO QUIZ")  # no Q or Z in the BPE training text
    argv = train_argv(recipe, "--token_type", "bpe", "--bpemodel", str(bpe / "bpe.model"),
                      "--token_list", str(bpe / "tokens.txt"))
    msg = refused(recipe, argv)
    assert (f"{recipe}/data/train/text:2: utterance {utt('train', 1)}: character(s) outside the token list "
            f"{bpe}/tokens.txt with the BPE model {bpe}/bpe.model (they would become <unk>): 'Q' 'Z'") in msg
    assert msg.count("character(s) outside") == 1  # the other transcripts are representable
    argv[argv.index("--bpemodel") + 1] = str(recipe / "missing.model")
    assert f"--bpemodel {recipe}/missing.model: no such file" in refused(recipe, argv)


def test_stale_shape_file(recipe):
    """An utterance the shape file lists but the data no longer has (e.g. after fix_data_dir)."""
    shape = recipe / "stats/train/speech_shape"
    shape.parent.mkdir(parents=True)
    shape.write_text("".join(f"{utt('train', i)} 8000\n" for i in (0, 1, 7)))
    valid_shape = recipe / "stats/valid/speech_shape"
    valid_shape.parent.mkdir(parents=True)
    valid_shape.write_text(f"{utt('dev', 0)} 8000\n")
    msg = refused(recipe, train_argv(recipe, "--train_shape_file", str(shape), "--valid_shape_file", str(valid_shape)))
    assert f"{shape}:3: utterance {utt('train', 7)}: not in {recipe}/data/train/wav.scp" in msg
    assert f"{shape}:3: utterance {utt('train', 7)}: not in {recipe}/data/train/text" in msg
    assert "re-run collect-stats" in msg
    missing = recipe / "stats/none"
    msg = refused(recipe, train_argv(recipe, "--train_shape_file", str(missing)))
    assert f"--train_shape_file {missing}: no such file" in msg


def test_only_the_listed_utterances_have_their_audio_read(recipe):
    """A collect-stats job (ESPnet's asr.sh splits them with key files) reads only its own utterances' headers."""
    (recipe / "data/train/wav" / f"{utt('train', 3)}.wav").write_bytes(b"not audio at all")
    keys = recipe / "keys.1.scp"
    keys.write_text("".join(f"{utt('train', i)} x\n" for i in range(3)))
    dev_keys = recipe / "data/dev/wav.scp"
    preflight(ASR_TRAIN, train_argv(recipe, "--collect_stats", "true", "--train_shape_file", str(keys),
                                    "--valid_shape_file", str(dev_keys)))
    keys.write_text("".join(f"{utt('train', i)} x\n" for i in range(4)))
    msg = refused(recipe, train_argv(recipe, "--collect_stats", "true", "--train_shape_file", str(keys),
                                     "--valid_shape_file", str(dev_keys)))
    assert f"wav.scp:4: utterance {utt('train', 3)}: cannot read" in msg


# --------------------------------------------------------------------------------------------------------- config
CONFIG_CASES = [
    ("kd_alpha=1.5", "model_conf.kd_alpha must be a number in [0, 1], got 1.5"),
    ("kd_layers=[0]", "model_conf.kd_layers [0] out of range: encoder blocks are numbered 1..2"),
    ("kd_layers=[1,3]", "model_conf.kd_layers [1, 3] out of range: encoder blocks are numbered 1..2"),
    ("kd_layers=[2,2]", "model_conf.kd_layers must be distinct integers, got [2, 2]"),
    ("kd_lyers=[1]", "unknown key(s) in model_conf: 'kd_lyers' (did you mean 'kd_layers'?)"),
    ("ctc_weight=1.0", "model_conf.ctc_weight=1.0 with kd_layers"),
    ("lsm_weight=1.0", "model_conf.lsm_weight must be a number in [0, 1), got 1.0"),
    ("kd_decoder=transducer", "model_conf.kd_decoder='transducer' is not an attention decoder"),
    ("kd_decoder_conf.num_block=1",
     "unknown key(s) in model_conf.kd_decoder_conf (kd_decoder: transformer): 'num_block' (did you mean 'num_blocks'?)"),
    ("kd_decoder_dim=-4", "model_conf.kd_decoder_dim must be a positive integer or null, got -4"),
    ("teacher.topk=0", "teacher.topk must be a positive integer, got 0"),
    ("teacher.temperature=-1", "teacher.temperature must be > 0, got -1"),
    ("teacher.mode=foo", "teacher.mode must be one of ('cached', 'online'), got 'foo'"),
    ("teacher.topK=4", "unknown key(s) in model_conf.teacher: ['topK']"),
]


@pytest.mark.parametrize("override,expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_model_conf_fails_before_the_data_is_looked_at(recipe, override, expected):
    """The data directories do not even exist: the config error comes first."""
    argv = train_argv(recipe, "--model_conf", override, train="nowhere", valid="nowhere")
    assert expected in refused(recipe, argv)


def test_layer_range_follows_encoder_conf(recipe):
    preflight(ASR_TRAIN, train_argv(recipe, "--model_conf", "kd_layers=[1,3]", "--encoder_conf", "num_blocks=3"))
    config = {**CONFIG, "encoder": "conformer", "encoder_conf": {"output_size": 16, "attention_heads": 2}}
    (recipe / "conformer.yaml").write_text(yaml.safe_dump(config))
    argv = train_argv(recipe, "--config", str(recipe / "conformer.yaml"), "--model_conf", "kd_layers=[1,7]")
    assert "numbered 1..6" in refused(recipe, argv)  # conformer's default num_blocks


def test_unknown_key_of_an_espnet_model(recipe):
    config = {**CONFIG, "model": "espnet", "model_conf": {"ctc_weight": 1.0, "ctc_wieght": 0.3}}
    (recipe / "ctc.yaml").write_text(yaml.safe_dump(config))
    argv = train_argv(recipe, "--config", str(recipe / "ctc.yaml"))
    assert "unknown key(s) in model_conf (model: espnet): 'ctc_wieght' (did you mean 'ctc_weight'?)" in refused(
        recipe, argv)


def test_model_constructor_uses_the_same_checks():
    """One validator (kd.config): building the model raises the preflight's message."""
    from conftest import build_asr_model

    conf = {"ctc_weight": 0.5, "kd_layers": [1], "kd_alpha": 1.5, "teacher": {"model": "x", "vocab_size": 10}}
    with pytest.raises(ValueError, match=r"model_conf\.kd_alpha must be a number in \[0, 1\], got 1\.5"):
        build_asr_model("transformer", conf)


# ----------------------------------------------------------------------------------------------------- end to end
def run_asr_train(root: Path, argv: Sequence[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "espnet_bertkd.bin.asr_train", *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def test_asr_train_refuses_bad_data_and_config_without_touching_the_experiment(recipe):
    edit(recipe / "data/train/text", f"{utt('train', 1)} {TEXTS[1]}", utt("train", 1))
    before = snapshot(recipe)
    proc = run_asr_train(recipe, train_argv(recipe))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"{recipe}/data/train/text:2: utterance {utt('train', 1)}: empty transcript" in proc.stderr
    assert "not started, the preflight refused the run" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(recipe) == before

    proc = run_asr_train(recipe, train_argv(recipe, "--model_conf", "kd_lyers=[1]"))
    assert proc.returncode == 1 and "'kd_lyers' (did you mean 'kd_layers'?)" in proc.stderr, proc.stderr[-3000:]
    assert snapshot(recipe) == before
