"""Reliability cases of the data inputs and the model config (the issue's cases 5-9): each input is refused up front
with the file, utterance and fix, or read correctly.

5. a UTF-8 byte-order mark in `text` / `wav.scp`: the preflight names it, `validate_data_dir --fix` strips it (and DOS
   line endings), the greedy decoder refuses it instead of writing a `\\ufeff` key;
6. `wav.scp` commands (`flac -c -d -s x.flac |`): refused by the preflight and the decoder with the fix;
7. `wav.scp` ark offsets read with `kaldi_ark`: checked the way that loader reads them, not as file names;
8. multi-channel audio refused where the model expects mono; a truncated file that passes the header check fails in
   ESPnet's loader with the utterance and the file named;
9. ctc_weight < 1 without any decoder refused in the preflight (ESPnet asserts it half-way through building).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import asr_train_args
from espnet_bertkd.recipe.bin import validate_data_dir as validate_cli
from espnet_bertkd.tasks.data_check import validate_data_dir
from probes.data import to_ark
from test_bad_input import ASR_TRAIN, preflight, recipe, refused, train_argv, utt, write_wav  # noqa: F401 (recipe: a fixture)

BOM = b"\xef\xbb\xbf"


def prepend_bom(path: Path) -> None:
    path.write_bytes(BOM + path.read_bytes())


# ------------------------------------------------------------------------------------------------------ 5. BOM
def test_bom_in_text_is_named_with_a_fix_that_works(recipe):
    text = recipe / "data/train/text"
    prepend_bom(text)
    msg = refused(recipe, train_argv(recipe))
    assert f"{text}:1: byte-order mark (save the file as UTF-8 without BOM)" in msg
    assert "invisible" not in msg and "soft label" not in msg
    assert f"python -m espnet_bertkd.recipe.bin.validate_data_dir {recipe}/data/train --fix` strips a byte-order mark" \
        in msg
    original = text.read_bytes()

    validate_cli.main([str(recipe / "data/train"), "--fix"])
    assert not text.read_bytes().startswith(BOM) and text.read_bytes() == original[len(BOM):]
    assert (recipe / "data/train/.backup/text").read_bytes() == original  # nothing lost
    preflight(ASR_TRAIN, train_argv(recipe))  # the run is accepted now


def test_fix_converts_dos_line_endings_and_keeps_the_originals(recipe):
    d = recipe / "data/train"
    originals = {}
    for name in ("utt2spk", "wav.scp"):
        (d / name).write_bytes((d / name).read_bytes().replace(b"\n", b"\r\n"))
        originals[name] = (d / name).read_bytes()
    prepend_bom(d / "spk2utt")
    originals["spk2utt"] = (d / "spk2utt").read_bytes()
    with pytest.raises(SystemExit, match="carriage return"):
        validate_cli.main([str(d)])
    validate_cli.main([str(d), "--fix"])
    for name, data in originals.items():
        assert b"\r" not in (d / name).read_bytes() and not (d / name).read_bytes().startswith(BOM)
        assert (d / ".backup" / name).read_bytes() == data
    assert validate_data_dir(d).utterances == 4
    validate_cli.main([str(d), "--fix"])  # a second fix keeps the first one's backup of the originals
    assert all((d / ".backup" / name).read_bytes() == data for name, data in originals.items())
    assert (d / ".backup.1" / "utt2spk").read_bytes() == (d / "utt2spk").read_bytes()


# ------------------------------------------------------------------------------------------------ 6. commands
@pytest.mark.parametrize("kind", ["sound", "kaldi_ark"])
def test_wav_scp_command_is_refused_with_the_fix(recipe, kind):
    wav_scp = recipe / "data/train/wav.scp"
    flac = recipe / "x.flac"
    lines = wav_scp.read_text().splitlines()
    lines[1] = f"{utt('train', 1)} flac -c -d -s {flac} |"
    wav_scp.write_text("\n".join(lines) + "\n")
    argv = [a.replace(",speech,sound", f",speech,{kind}") for a in train_argv(recipe)]
    msg = refused(recipe, argv)
    assert f"{wav_scp}:2: utterance {utt('train', 1)}: audio entry is a command ('flac -c -d -s {flac} |')" in msg
    assert ("opens files only" if kind == "sound" else "would run it through a shell") in msg
    assert "format_wav_scp.sh" in msg and f"list `{utt('train', 1)} {flac}` instead" in msg
    assert "does not exist" not in msg


def test_standalone_validation_still_only_warns_about_commands(recipe):
    wav_scp = recipe / "data/train/wav.scp"
    lines = wav_scp.read_text().splitlines()
    lines[0] = f"{utt('train', 0)} sox x.wav -t wav - |"
    wav_scp.write_text("\n".join(lines) + "\n")
    report = validate_data_dir(recipe / "data/train")
    assert any("1 entries are commands" in w and "format_wav_scp.sh" in w for w in report.warnings)


# ---------------------------------------------------------------------------------------------- 7. ark offsets
def test_ark_offsets_are_checked_as_the_kaldi_ark_loader_reads_them(recipe):
    for name in ("train", "dev"):
        to_ark(recipe / "data" / name)
    argv = [a.replace(",speech,sound", ",speech,kaldi_ark") for a in train_argv(recipe)]
    preflight(ASR_TRAIN, argv)  # accepted: ark offsets, not "audio file ... does not exist"

    from espnet2.train.dataset import ESPnetDataset

    dataset = ESPnetDataset([(str(recipe / "data/train/wav.scp"), "speech", "kaldi_ark")], float_dtype="float32")
    assert dataset[utt("train", 0)][1]["speech"].shape == (8000,)  # and ESPnet reads them

    wav_scp = recipe / "data/train/wav.scp"
    ark = recipe / "data/train/audio.ark"
    lines = wav_scp.read_text().splitlines()
    lines[1] = f"{utt('train', 1)} {ark}:{ark.stat().st_size + 10}"
    lines[2] = f"{utt('train', 2)} {ark}:0"  # points at the key, not at an object
    lines[3] = f"{utt('train', 3)} {recipe}/gone.ark:3"
    wav_scp.write_text("\n".join(lines) + "\n")
    msg = refused(recipe, argv)
    assert f"wav.scp:2: utterance {utt('train', 1)}: offset {ark.stat().st_size + 10} is beyond the end of {ark}" in msg
    assert f"wav.scp:3: utterance {utt('train', 2)}: no Kaldi object at offset 0 of {ark}" in msg
    assert f"wav.scp:4: utterance {utt('train', 3)}: ark file {recipe}/gone.ark does not exist" in msg
    assert msg.count("does not exist") == 1


def test_ark_offsets_in_a_sound_wav_scp_are_still_missing_files(recipe):
    """The declared type decides: ESPnet's sound loader would open `x.ark:3` as a file name."""
    to_ark(recipe / "data/train")
    msg = refused(recipe, train_argv(recipe))
    assert f"utterance {utt('train', 0)}: audio file {recipe}/data/train/audio.ark:" in msg and "does not exist" in msg


# ------------------------------------------------------------------------------------ 8. stereo and truncated audio
def test_stereo_audio_is_refused_where_the_model_expects_mono(recipe):
    wav = recipe / "data/train/wav" / f"{utt('train', 2)}.wav"
    soundfile.write(str(wav), np.zeros((8000, 2), dtype=np.float32), 16000)
    msg = refused(recipe, train_argv(recipe))
    assert f"wav.scp:3: utterance {utt('train', 2)}: {wav} has 2 channels, the model expects 1 (mono)" in msg
    assert "downmix" in msg


def truncated_flac(path: Path) -> Path:
    soundfile.write(str(path), (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32), 16000, format="FLAC")
    path.write_bytes(path.read_bytes()[:2000])
    soundfile.info(str(path))  # the header still reads: the preflight cannot tell
    return path


def test_truncated_audio_fails_in_espnets_loader_naming_the_utterance(tmp_path):
    from espnet2.train import dataset as espnet_dataset
    from espnet2.train.dataset import ESPnetDataset

    from espnet_bertkd.tasks.audio import AudioReadError, NamedAudioLoader

    assert getattr(espnet_dataset.DATA_TYPES["sound"]["func"], "_bertkd_named", False)  # the one wrapped place
    assert getattr(espnet_dataset.DATA_TYPES["kaldi_ark"]["func"], "_bertkd_named", False)
    flac = truncated_flac(tmp_path / "broken.flac")
    good = tmp_path / "good.wav"
    write_wav(good)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a-good {good}\nb-broken {flac}\n")
    dataset = ESPnetDataset([(str(scp), "speech", "sound")], float_dtype="float32")
    assert isinstance(dataset.loader_dict["speech"], NamedAudioLoader)
    assert dataset["a-good"][1]["speech"].shape == (8000,)
    with pytest.raises(AudioReadError, match=re.escape(f"{scp}: utterance b-broken: cannot read '{flac}' (sound)")):
        dataset["b-broken"]
    assert "b-broken" in dataset.loader_dict["speech"] and "nope" not in dataset.loader_dict["speech"]

    # collect-stats reads through ESPnet's iterable dataset, whose readers see the entry: the file is named
    from espnet2.train import iterable_dataset

    assert getattr(iterable_dataset.DATA_TYPES["sound"], "_bertkd_named", False)
    stream = iterable_dataset.IterableESPnetDataset([(str(scp), "speech", "sound")])
    with pytest.raises(AudioReadError, match=re.escape(f"cannot read '{flac}' (sound")):
        list(stream)


# --------------------------------------------------------------------------------------- 9. ctc_weight, no decoder
@pytest.mark.parametrize("model,conf,source", [
    ("bertkd", "kd_layers=[]", ""),
    ("espnet", None, " (the default of model: espnet)"),
])
def test_attention_weight_without_a_decoder_is_refused(recipe, model, conf, source):
    config = {"model": model, "model_conf": {"ctc_weight": 0.5} if conf else {},
              "frontend_conf": {"n_fft": 256, "hop_length": 128, "n_mels": 20}, "encoder": "transformer",
              "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2}}
    (recipe / "ctc.yaml").write_text(yaml.safe_dump(config))
    argv = train_argv(recipe, "--config", str(recipe / "ctc.yaml"), *(["--model_conf", conf] if conf else []),
                      train="nowhere", valid="nowhere")
    msg = refused(recipe, argv)
    assert f"model_conf.ctc_weight=0.5{source} gives the attention loss weight 0.5, but the model has no decoder" in msg
    assert "`ctc_weight: 1.0`" in msg and "`decoder: transformer`" in msg
    assert ("kd_layers" in msg) == (model == "bertkd")


def test_espnet_itself_would_fail_late_and_the_valid_combinations_pass(recipe):
    from espnet2.tasks.asr import ASRTask

    args = asr_train_args("transformer", {"kd_layers": [], "ctc_weight": 0.5})
    with pytest.raises(AssertionError, match="decoder should not be None"):
        ASRTask.build_model(argparse.Namespace(**args))
    for extra in (["--model_conf", "kd_layers=[]", "--model_conf", "ctc_weight=1.0"],
                  ["--model_conf", "kd_layers=[]", "--decoder", "transformer", "--decoder_conf", "num_blocks=1"],
                  []):  # the recipe's KD config: its KD decoders are the decoders
        preflight(ASR_TRAIN, train_argv(recipe, *extra))


# ------------------------------------------------------------------------------------------- decoding (5, 6, 8)
@pytest.fixture(scope="module")
def ctc_model(tmp_path_factory) -> Path:
    """A tiny CTC-only ESPnet model on raw 16 kHz audio (default front-end), saved as config.yaml + model.pth."""
    from espnet2.tasks.asr import ASRTask

    root = tmp_path_factory.mktemp("ctc_model")
    args = asr_train_args("transformer", {"ctc_weight": 1.0}, "espnet", None, None, None)
    args["token_type"] = "char"
    model = ASRTask.build_model(argparse.Namespace(**args))
    (root / "config.yaml").write_text(yaml.safe_dump(args))
    torch.save(model.state_dict(), root / "model.pth")
    return root


def greedy(model: Path, scp: Path, out: Path, kind: str = "sound") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "espnet_bertkd.bin.ctc_greedy_inference", "--asr_train_config",
         str(model / "config.yaml"), "--asr_model_file", str(model / "model.pth"), "--data_path_and_name_and_type",
         f"{scp},speech,{kind}", "--output_dir", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def audio_list(root: Path, lines: List[str]) -> Path:
    for i in range(3):
        write_wav(root / f"u{i}.wav")
    scp = root / "wav.scp"
    scp.write_text("".join(f"{line}\n" for line in lines))
    return scp


def test_decoder_refuses_bad_audio_lists_up_front(ctc_model, tmp_path):
    cases = [
        (BOM + f"u0 {tmp_path}/u0.wav\nu1 {tmp_path}/u1.wav\n".encode(), "wav.scp:1: byte-order mark"),
        (f"u0 {tmp_path}/u0.wav\nu1 flac -c -d -s {tmp_path}/u1.flac |\n".encode(),
         "wav.scp:2: utterance u1: audio entry is a command"),
        (f"u0 {tmp_path}/u0.wav\nu2 {tmp_path}/stereo.wav\n".encode(),
         f"wav.scp:2: utterance u2: {tmp_path}/stereo.wav has 2 channels, the model expects 1 (mono)"),
    ]
    audio_list(tmp_path, [])
    soundfile.write(str(tmp_path / "stereo.wav"), np.zeros((8000, 2), dtype=np.float32), 16000)
    for data, expected in cases:
        (tmp_path / "wav.scp").write_bytes(data)
        proc = greedy(ctc_model, tmp_path / "wav.scp", tmp_path / "out")
        assert proc.returncode == 1 and expected in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "out/1best_recog/text").exists()


def test_decoder_names_a_truncated_file(ctc_model, tmp_path):
    scp = audio_list(tmp_path, [f"u0 {tmp_path}/u0.wav", f"u1 {truncated_flac(tmp_path / 'u1.flac')}"])
    proc = greedy(ctc_model, scp, tmp_path / "out")
    assert proc.returncode != 0
    assert f"{scp}: utterance u1: cannot read '{tmp_path}/u1.flac' (sound)" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "nothing was written" in proc.stderr
    assert not (tmp_path / "out/1best_recog/text").exists()
