"""Reliability of decoding inputs and model files (issue cases 4, 11, 12; probes: tests/probes/decoding.py).

4  audio at another sample rate than the model's frontend_conf.fs is refused before decoding, naming the utterances;
   integer-PCM kaldi_ark audio (wav-in-ark, int16) decodes as the same audio from wav files does.
11 an output directory that cannot be written to is refused before the model is loaded.
12 a model file whose pickle would run code is refused unread, by every path the plugin loads model files through.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet_bertkd.asr.checkpoint import (
    ModelFileError,
    build_model_checked,
    check_model_file,
    load_model_state,
    strict_model_loading,
)
from espnet_bertkd.asr import decode_inputs
from espnet_bertkd.asr.export import export_ctc
from espnet_bertkd.bin import asr_inference as plugin_asr_inference
from espnet_bertkd.bin import ctc_greedy_inference
from probes.decoding import waves, write_lm, write_model, write_payload, write_sound, write_wav_ark


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("model"))


def greedy(cfg, pth, scp, kind, out, *extra):
    ctc_greedy_inference.main(["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
                               "--data_path_and_name_and_type", f"{scp},speech,{kind}", "--output_dir", str(out),
                               "--batch_size", "3", *extra])


def beam(cfg, pth, scp, kind, out, *extra):
    plugin_asr_inference.main(["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
                               "--data_path_and_name_and_type", f"{scp},speech,{kind}", "--output_dir", str(out),
                               "--ctc_weight", "1.0", "--beam_size", "1", "--lm_weight", "0", "--ngpu", "0", *extra])


def refusal(fn, *args) -> str:
    with pytest.raises(SystemExit) as err:
        fn(*args)
    assert err.value.code not in (0, None)
    return str(err.value.code)


def hypotheses(out: Path) -> list:
    return (out / "1best_recog/text").read_text().splitlines()


# ------------------------------------------------------------------------------------------ 4: sample rate, int PCM

def test_greedy_refuses_audio_at_another_sample_rate(tmp_path, model):
    cfg, pth = model
    audio = waves()
    mixed = {k: (x[::2] if k in ("utt01", "utt03") else x) for k, x in audio.items()}
    scp = write_sound(tmp_path / "mixed", {k: x for k, x in mixed.items() if k not in ("utt01", "utt03")})
    write_sound(tmp_path / "low", {k: mixed[k] for k in ("utt01", "utt03")}, fs=8000)
    lines = scp.read_text() + (tmp_path / "low/wav.scp").read_text()
    scp.write_text(lines)
    message = refusal(greedy, cfg, pth, scp, "sound", tmp_path / "out")
    assert str(scp) in message and "2 of 6 utterances" in message
    assert "utt01 (8000 Hz), utt03 (8000 Hz)" in message and "utt00" not in message
    assert "16000 Hz" in message and str(cfg) in message and "sox" in message and "format_wav_scp" in message
    assert not (tmp_path / "out/1best_recog").exists()


def test_model_sample_rate_is_read_as_espnet_reads_it(tmp_path, model):
    cfg, _ = model
    config = yaml.safe_load(cfg.read_text())
    assert decode_inputs.model_sample_rate(str(cfg)) == 16000
    for fs, expected in (("8k", 8000), (22050, 22050), (None, 16000)):
        conf = dict(config["frontend_conf"])
        conf.pop("fs")
        if fs is not None:
            conf["fs"] = fs
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**config, "frontend_conf": conf}))
        assert decode_inputs.model_sample_rate(str(tmp_path / "c.yaml")) == expected
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**config, "frontend": None, "input_size": 20}))
    assert decode_inputs.model_sample_rate(str(tmp_path / "c.yaml")) is None  # features: no rate


def test_int16_kaldi_ark_decodes_as_the_same_wavs(tmp_path, model, monkeypatch):
    cfg, pth = model
    audio = waves()
    scp = write_sound(tmp_path / "data", audio)
    ark = write_wav_ark(tmp_path / "data", audio)
    greedy(cfg, pth, scp, "sound", tmp_path / "wav")
    greedy(cfg, pth, ark, "kaldi_ark", tmp_path / "ark")
    reference = hypotheses(tmp_path / "wav")
    assert len(reference) == len(audio) and len(set(reference)) == len(audio)  # varied, non-trivial hypotheses
    assert hypotheses(tmp_path / "ark") == reference
    scores = [(tmp_path / d / "1best_recog/score").read_text().split() for d in ("wav", "ark")]
    assert np.allclose([float(x) for x in scores[0][1::2]], [float(x) for x in scores[1][1::2]], atol=1e-4)
    # without the scaling (what ESPnet's kaldi_ark loader gives the model) the hypotheses change
    monkeypatch.setattr(ctc_greedy_inference, "check_audio", lambda *a, **k: {})
    greedy(cfg, pth, ark, "kaldi_ark", tmp_path / "unscaled")
    assert sum(a != b for a, b in zip(hypotheses(tmp_path / "unscaled"), reference)) >= len(audio) // 2


def test_kaldi_ark_rate_is_checked_and_integer_scale_kept_for_a_kaldi_ark_trained_model(tmp_path, model):
    cfg, pth = model
    audio = waves(lengths=[3000, 2000])
    ark = write_wav_ark(tmp_path / "low", {k: x[::2] for k, x in audio.items()}, fs=8000)
    message = refusal(greedy, cfg, pth, ark, "kaldi_ark", tmp_path / "out")
    assert "2 of 2 utterances" in message and "utt00 (8000 Hz)" in message and "16000 Hz" in message

    from espnet2.train.dataset import ESPnetDataset

    ark = write_wav_ark(tmp_path / "data", audio)
    dataset = ESPnetDataset([(str(ark), "speech", "kaldi_ark")], float_dtype="float32")
    keys = ["utt00", "utt01"]
    assert decode_inputs.check_audio(str(ark), "kaldi_ark", keys, dataset, 16000, str(cfg)) == \
        {k: 1 / 32768 for k in keys}
    config = yaml.safe_load(cfg.read_text())
    config["train_data_path_and_name_and_type"] = [["dump/train/wav_ark.scp", "speech", "kaldi_ark"]]
    (tmp_path / "ark_trained.yaml").write_text(yaml.safe_dump(config))
    assert decode_inputs.check_audio(str(ark), "kaldi_ark", keys, dataset, 16000,
                                            str(tmp_path / "ark_trained.yaml")) == {}


def test_asr_inference_refuses_another_rate_and_integer_pcm_before_loading(tmp_path, model):
    cfg, _ = model
    missing = tmp_path / "never_loaded.pth"  # the checks come before the model is loaded
    audio = waves(lengths=[3000, 2000])
    low = write_sound(tmp_path / "low", {k: x[::2] for k, x in audio.items()}, fs=8000)
    message = refusal(beam, cfg, missing, low, "sound", tmp_path / "out")
    assert message.startswith("asr_inference: ") and "utt00 (8000 Hz), utt01 (8000 Hz)" in message
    assert "16000 Hz" in message
    ark = write_wav_ark(tmp_path / "data", audio)
    message = refusal(beam, cfg, missing, ark, "kaldi_ark", tmp_path / "out")
    assert "utterance utt00 is integer PCM" in message and "ctc_greedy_inference" in message
    assert not (tmp_path / "out/1best_recog").exists()


# ------------------------------------------------------------------------------------- 11: unwritable output dir

def unwritable_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot write to (chmod is no barrier for root: then sysfs)."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    for candidate in (d, Path("/sys/kernel")):
        if candidate.is_dir() and not _writable(candidate):
            return candidate
    d.chmod(0o755)
    pytest.skip("no directory this process cannot write to")


def _writable(d: Path) -> bool:
    try:
        tempfile.NamedTemporaryFile(dir=d).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("decoder", [greedy, beam], ids=["ctc_greedy_inference", "asr_inference"])
def test_unwritable_output_dir_is_refused_before_the_model_loads(tmp_path, model, decoder):
    cfg, _ = model
    scp = write_sound(tmp_path / "data", waves(lengths=[3000]))
    missing = tmp_path / "never_loaded.pth"  # a model load would fail on this first
    out = unwritable_dir(tmp_path)
    message = refusal(decoder, cfg, missing, scp, "sound", out)
    assert f"--output_dir {out}: cannot write to {out}" in message and "nothing was decoded" in message
    blocker = tmp_path / "a_file"
    blocker.write_text("kept\n")
    message = refusal(decoder, cfg, missing, scp, "sound", blocker / "decode")
    assert f"--output_dir {blocker / 'decode'}" in message and blocker.read_text() == "kept\n"


def test_writable_output_dir_keeps_no_probe_file(tmp_path):
    decode_inputs.check_output_dir(str(tmp_path / "new/out"))
    assert (tmp_path / "new/out").is_dir() and not list((tmp_path / "new/out").iterdir())


@pytest.mark.parametrize("decoder", [greedy, beam], ids=["ctc_greedy_inference", "asr_inference"])
@pytest.mark.parametrize("entry", ["touch {marker} |", "touch {marker} |:12"])
def test_command_entries_are_refused_never_run(tmp_path, model, decoder, entry):
    """A kaldi_ark audio list whose entry is a shell command (kaldiio would run it) is refused before any entry is
    read, by both decoders."""
    cfg, pth = model
    marker = tmp_path / "RAN"
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 " + entry.format(marker=marker) + "\n")
    message = refusal(decoder, cfg, pth, scp, "kaldi_ark", tmp_path / "out")
    assert not marker.exists()
    assert "u1" in message and "command" in message, message


# ----------------------------------------------------------------------------------------- 12: code in model files

@pytest.fixture
def payload(tmp_path, monkeypatch):
    """A model file whose unpickling runs `touch MARKER`; ESPnet 202611 would load it fully with this set."""
    monkeypatch.setenv("ESPNET_ALLOW_UNSAFE_TORCH_LOAD", "1")
    marker = tmp_path / "MARKER"
    return write_payload(tmp_path / "payload.pth", marker), marker


def test_the_payload_runs_code_on_an_unrestricted_load(tmp_path):
    marker = tmp_path / "RAN"
    path = write_payload(tmp_path / "p.pth", marker)
    torch.load(path, weights_only=False)  # what the test guards against: it would run
    assert marker.exists()


def _export(cfg, bad, tmp_path):
    config = yaml.safe_load(Path(cfg).read_text())
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump({**config, "model": "bertkd"}))  # export takes bertkd configs
    export_ctc(str(tmp_path / "kd.yaml"), str(bad), str(tmp_path / "export"))


def _strict_espnet(cfg, bad, tmp_path):
    from espnet2.tasks.asr import ASRTask

    with strict_model_loading():
        ASRTask.build_model_from_file(str(cfg), str(bad), "cpu")


ENTRY_POINTS = {
    "load_model_state": lambda cfg, bad, tmp: load_model_state(str(bad)),
    "check_model_file": lambda cfg, bad, tmp: check_model_file(torch.nn.Linear(1, 1), str(bad)),
    "build_model_checked": lambda cfg, bad, tmp: build_model_checked(str(cfg), str(bad)),
    "strict_model_loading": _strict_espnet,
    "export_ctc": _export,
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_payload_is_refused_unread_by_the_loaders(tmp_path, model, payload, name):
    cfg, _ = model
    bad, marker = payload
    with pytest.raises(ModelFileError) as err:
        ENTRY_POINTS[name](cfg, bad, tmp_path)
    assert not marker.exists()
    assert str(bad) in str(err.value) and "not a plain weights file" in str(err.value)
    assert "GLOBAL posix.system" in str(err.value) or "GLOBAL os.system" in str(err.value)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("entry", ["ctc_greedy_inference", "asr_inference", "asr_inference --lm_file"])
def test_payload_is_refused_unread_by_the_decoders(tmp_path, model, payload, entry):
    cfg, pth = model
    bad, marker = payload
    scp = write_sound(tmp_path / "data", waves(lengths=[3000]))
    if entry == "ctc_greedy_inference":
        message = refusal(greedy, cfg, bad, scp, "sound", tmp_path / "out")
    elif entry == "asr_inference":
        message = refusal(beam, cfg, bad, scp, "sound", tmp_path / "out")
    else:
        lm_cfg = write_lm(tmp_path)
        message = refusal(beam, cfg, pth, scp, "sound", tmp_path / "out", "--lm_train_config", str(lm_cfg),
                          "--lm_file", str(bad))
    assert not marker.exists()
    assert message.startswith(entry.split()[0] + ": ") and str(bad) in message and "not a plain weights file" in message
    assert not (tmp_path / "out/1best_recog").exists()


def test_export_ctc_command_refuses_the_payload_with_one_line(tmp_path, model, payload, capsys):
    from espnet_bertkd.bin import export_ctc as export_cli

    cfg, _ = model
    bad, marker = payload
    config = yaml.safe_load(Path(cfg).read_text())
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump({**config, "model": "bertkd"}))
    with pytest.raises(SystemExit) as exit_:
        export_cli.main(["--asr_train_config", str(tmp_path / "kd.yaml"), "--asr_model_file", str(bad),
                         "--output_dir", str(tmp_path / "export")])
    assert str(exit_.value).startswith("export_ctc: ") and "not a plain weights file" in str(exit_.value)
    assert not marker.exists() and not (tmp_path / "export").exists()


def test_real_espnet_model_files_load_weights_only(tmp_path, model):
    """What ESPnet's trainer writes: NNepoch.pth, the averaged valid.*.ave_Nbest.pth (ESPnet's own averaging) and
    checkpoint.pth (optimizer, scheduler, reporter state) all load with weights_only=True; the averaged file decodes
    through the strict loader, and checkpoint.pth is refused as a training checkpoint, not as unsafe."""
    from espnet2.main_funcs.average_nbest_models import average_nbest_models
    from espnet2.schedulers.warmup_lr import WarmupLR
    from espnet2.train.reporter import Reporter

    cfg, pth = model
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(cfg, exp / "config.yaml")
    state = torch.load(pth, weights_only=True)
    reporter = Reporter()
    for epoch, shift in ((1, 0.0), (2, 0.01)):
        reporter.set_epoch(epoch)
        with reporter.observe("valid") as sub:
            sub.register({"acc": 0.5 + epoch / 10})
        torch.save({k: v + shift if v.is_floating_point() else v for k, v in state.items()}, exp / f"{epoch}epoch.pth")
    average_nbest_models(exp, reporter, [("valid", "acc", "max")], nbest=2)
    averaged = exp / "valid.acc.ave_2best.pth"
    loaded, _ = build_model_checked(str(exp / "config.yaml"), str(averaged))
    key = "ctc.ctc_lo.weight"
    assert torch.allclose(loaded.state_dict()[key], state[key] + 0.005, atol=1e-6)

    params = [p for p in loaded.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loaded.ctc.ctc_lo.weight.sum().backward()
    optimizer.step()
    scheduler = WarmupLR(optimizer, warmup_steps=10)
    torch.save({"model": loaded.state_dict(), "reporter": reporter.state_dict(),
                "optimizers": [optimizer.state_dict()], "schedulers": [scheduler.state_dict()], "scaler": None},
               exp / "checkpoint.pth")
    # Refused either way: as a training checkpoint (ESPnet 202611's reporter state loads weights-only) or as not plain
    # weights (202511's reporter holds numpy scalars, which a weights-only load does not take)
    with pytest.raises(ModelFileError, match="is a training checkpoint|is not a plain weights file") as err:
        build_model_checked(str(exp / "config.yaml"), str(exp / "checkpoint.pth"))
    assert str(exp / "checkpoint.pth") in str(err.value)
