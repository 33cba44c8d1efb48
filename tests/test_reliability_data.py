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


def nan_wav(path: Path, bad: float = np.nan) -> Path:
    """A float WAV with one NaN (or inf) sample: its header reads, its audio does not make features."""
    wave = (0.1 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)
    wave[4000] = bad
    soundfile.write(str(path), wave, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_audio_is_refused_before_training_naming_the_utterance(recipe, bad):
    """Issue 24: one float WAV with NaN samples made feats_stats.npz NaN, every update was skipped and training
    exited 0 with a NaN model."""
    wav = nan_wav(recipe / "data/train/wav" / f"{utt('train', 1)}.wav", bad)
    msg = refused(recipe, train_argv(recipe))
    assert f"wav.scp:2: utterance {utt('train', 1)}: {wav} holds NaN or infinite samples" in msg


def test_nan_audio_fails_in_espnets_loader_naming_the_utterance(tmp_path):
    """Where the preflight's audio check is off (ESPNET_BERTKD_DATA_CHECK=no_audio), ESPnet's loader says it."""
    from espnet2.train import iterable_dataset
    from espnet2.train.dataset import ESPnetDataset

    from espnet_bertkd.tasks.audio import AudioReadError

    good, bad = tmp_path / "good.wav", nan_wav(tmp_path / "bad.wav")
    write_wav(good)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a-good {good}\nb-nan {bad}\n")
    dataset = ESPnetDataset([(str(scp), "speech", "sound")], float_dtype="float32")
    assert dataset["a-good"][1]["speech"].shape == (8000,)
    with pytest.raises(AudioReadError, match=re.escape(f"{scp}: utterance b-nan: '{bad}' holds NaN or infinite")):
        dataset["b-nan"]
    with pytest.raises(AudioReadError, match="holds NaN or infinite samples"):
        list(iterable_dataset.IterableESPnetDataset([(str(scp), "speech", "sound")]))


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


def greedy_argv(model: Path, scp: Path, out: Path, kind: str = "sound") -> List[str]:
    return [sys.executable, "-m", "espnet_bertkd.bin.ctc_greedy_inference", "--asr_train_config",
            str(model / "config.yaml"), "--asr_model_file", str(model / "model.pth"), "--data_path_and_name_and_type",
            f"{scp},speech,{kind}", "--output_dir", str(out)]


def greedy(model: Path, scp: Path, out: Path, kind: str = "sound") -> subprocess.CompletedProcess:
    return subprocess.run(greedy_argv(model, scp, out, kind), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


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
        (f"u0 {tmp_path}/u0.wav\nu1 {tmp_path}/nan.wav\n".encode(),  # used to decode to an empty hypothesis
         f"wav.scp:2: utterance u1: {tmp_path}/nan.wav holds NaN or infinite samples"),
    ]
    audio_list(tmp_path, [])
    soundfile.write(str(tmp_path / "stereo.wav"), np.zeros((8000, 2), dtype=np.float32), 16000)
    nan_wav(tmp_path / "nan.wav")
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


def test_a_decoding_that_dies_leaves_its_directory_unfinished(ctc_model, tmp_path):
    """Issue 24: a re-run stopped midway left the previous run's 1best_recog/ and speed.json looking finished."""
    from espnet_bertkd.recipe.bin import score as score_cli

    out = tmp_path / "out"
    (out / "1best_recog").mkdir(parents=True)
    (out / "1best_recog/text").write_text("u0 AN OLDER RUN\n")
    (out / "speed.json").write_text("{}\n")
    scp = audio_list(tmp_path, [f"u0 {tmp_path}/u0.wav", f"u1 {truncated_flac(tmp_path / 'u1.flac')}"])
    assert greedy(ctc_model, scp, out).returncode != 0  # dies after the checks, while decoding
    assert not (out / "speed.json").exists() and (out / "1best_recog/text").read_text() == "u0 AN OLDER RUN\n"
    (tmp_path / "ref").write_text("u0 A\n")
    with pytest.raises(SystemExit) as e:
        score_cli.main(["--ref", str(tmp_path / "ref"), "--decode_dir", str(out)])
    assert "did not finish" in str(e.value.code)


# ------------------------------------------------------------------------------------------ segments (issue 24)
def segmented(root: Path) -> Path:
    """A Kaldi data directory of one 2 s recording cut into two utterances by a segments file."""
    d = root / "seg"
    write_wav(d / "rec1.wav", samples=32000)
    (d / "wav.scp").write_text(f"rec1 {d / 'rec1.wav'}\n")
    (d / "segments").write_text("rec1-a rec1 0.00 0.90\nrec1-b rec1 1.00 1.95\n")
    (d / "text").write_text("rec1-a THE KNIGHT\nrec1-b RODE AT NIGHT\n")
    (d / "utt2spk").write_text("rec1-a spk\nrec1-b spk\n")
    (d / "spk2utt").write_text("spk rec1-a rec1-b\n")
    return d


def test_impossible_segments_are_named(tmp_path):
    d = segmented(tmp_path)
    validate_data_dir(d, check_audio=True)  # a valid segmented directory (Kaldi's layout) validates
    (d / "segments").write_text("rec1-a rec1 0.90 0.50\nrec1-b rec1 1.00 9.00\n")
    with pytest.raises(ValueError) as e:
        validate_data_dir(d, check_audio=True)
    assert "segments:1: utterance rec1-a: the segment 0.90 to 0.50 is empty or reversed" in str(e.value)
    assert "segments:2: utterance rec1-b: ends at 9.00 s, past the end of recording rec1 (2.00 s)" in str(e.value)
    (d / "segments").write_text("rec1-a rec1 start end\nrec1-b rec2 1.0 1.9\n")
    with pytest.raises(ValueError) as e:
        validate_data_dir(d)
    assert "segments:1: utterance rec1-a: start and end must be times in seconds, got 'start' 'end'" in str(e.value)
    assert "segments:2: utterance rec1-b: recording rec2 not in" in str(e.value)


def test_segments_are_refused_by_training_and_decoding_naming_the_fix(tmp_path, ctc_model):
    """Issue 24: the greedy decoder decoded the whole recordings under their ids (exit 0); training refused with a
    message about wav.scp being stale."""
    from espnet_bertkd.tasks.data_check import validate_loader_inputs

    d = segmented(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"{d / 'segments'}: training and decoding read wav.scp entries "
                                                   "as utterances") + ".*format_wav_scp.sh --segments"):
        validate_loader_inputs(d / "wav.scp", d / "text")
    proc = greedy(ctc_model, d / "wav.scp", tmp_path / "out")
    assert proc.returncode == 1 and f"{d / 'segments'}: training and decoding read" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out/1best_recog/text").exists()


def test_utterance_ids_that_are_not_safe_file_names_are_refused(recipe):
    """Issue 24: an id with ../ reached ESPnet's attention-plot writer, which wrote PNGs outside --output_dir."""
    old = utt("train", 0)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):  # the id only, not the audio file's name
        path = recipe / "data/train" / name
        path.write_text(path.read_text().replace(f"{old} ", "../../evil ").replace(f" {old}\n", " ../../evil\n"))
    msg = refused(recipe, train_argv(recipe))
    assert msg.count("utterance ../../evil: the utterance id is not a safe file name") == 1, msg
    assert "att_ws" in msg


@pytest.mark.parametrize("batch", [[], ["--batch_size", "1"]], ids=["batched", "batch_size_1"])
def test_too_short_utterances_get_an_empty_hypothesis_and_a_name(ctc_model, tmp_path, batch):
    """Issue 24: a 0.01 s utterance killed the whole greedy decoding job ("Padding size should be less than ..."),
    naming no utterance; with --batch_size 1 a 0.05 s one raised TooShortUttError."""
    write_wav(tmp_path / "tiny.wav", samples=160)
    write_wav(tmp_path / "short.wav", samples=800)
    scp = audio_list(tmp_path, [f"a-tiny {tmp_path}/tiny.wav", f"b-short {tmp_path}/short.wav",
                                f"u0 {tmp_path}/u0.wav"])
    proc = subprocess.run(greedy_argv(ctc_model, scp, tmp_path / "out") + batch, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = dict(line.split(" ", 1) if " " in line else (line, "") for line in
                (tmp_path / "out/1best_recog/text").read_text().splitlines())
    assert set(text) == {"a-tiny", "b-short", "u0"} and text["a-tiny"] == ""
    assert "shorter than the" in proc.stderr and "'a-tiny'" in proc.stderr
    assert (tmp_path / "out/speed.json").is_file()


def test_bad_model_files_and_an_empty_list_are_one_line(ctc_model, tmp_path):
    """Issue 24: a model file of another config (same keys, other shapes), an empty or a truncated model file and an
    empty wav.scp gave torch's or ESPnet's tracebacks."""
    import shutil

    scp = audio_list(tmp_path, [f"u0 {tmp_path}/u0.wav"])
    config = yaml.safe_load((ctc_model / "config.yaml").read_text())
    config["encoder_conf"] = dict(config["encoder_conf"], output_size=2 * config["encoder_conf"]["output_size"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(ctc_model / "model.pth", other / "model.pth")  # trained with the smaller config
    empty, cut = tmp_path / "empty" , tmp_path / "cut"
    for d, data in ((empty, b""), (cut, (ctc_model / "model.pth").read_bytes()[:3000])):
        d.mkdir()
        shutil.copy(ctc_model / "config.yaml", d / "config.yaml")
        (d / "model.pth").write_bytes(data)
    (tmp_path / "none.scp").write_text("")
    cases = [(other, scp, "does not match the model built from"), (empty, scp, "model.pth is empty"),
             (cut, scp, "model.pth is truncated or not a PyTorch model file"),
             (ctc_model, tmp_path / "none.scp", "none.scp: no utterances to decode")]
    from espnet_bertkd.bin import ctc_greedy_inference as greedy_cli

    for model, audio, expected in cases:  # in this process (the CLI's refusal is its SystemExit message)
        with pytest.raises(SystemExit) as e:
            greedy_cli.main(greedy_argv(model, audio, tmp_path / "out")[3:])
        message = str(e.value.code)
        assert message.startswith("ctc_greedy_inference: ") and expected in message and "\n" not in message


def test_training_output_dir_that_is_a_file_is_refused(recipe):
    (recipe / "exp_file").write_text("not a directory\n")
    argv = train_argv(recipe)
    argv[argv.index("--output_dir") + 1] = str(recipe / "exp_file")
    assert f"--output_dir {recipe / 'exp_file'}: is a file, not a directory" in refused(recipe, argv)


def test_empty_training_tables_outside_a_data_dir_are_named(recipe):
    """Issue 24: an empty wav.scp with a text outside a data directory trained into ESPnet's "No iteration"."""
    loose = recipe / "loose"
    loose.mkdir()
    (loose / "wav.scp").write_text("")
    (loose / "text").write_text("")
    argv = train_argv(recipe)
    flag = "--train_data_path_and_name_and_type"
    i = argv.index(flag)
    argv[i + 1], argv[i + 3] = f"{loose}/wav.scp,speech,sound", f"{loose}/text,text,text"
    msg = refused(recipe, argv)
    assert f"{loose / 'wav.scp'}: no utterances (an empty table)" in msg
    assert f"{loose / 'text'}: no utterances (an empty table)" in msg
