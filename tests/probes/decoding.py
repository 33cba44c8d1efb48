"""Decoding inputs and model files (cases 4, 11, 12): audio at another sample rate than the model's, integer-PCM
`kaldi_ark` audio, a read-only output directory, and a model file whose pickle would run code.

The helpers build what the cases need in a few seconds (also used by tests/test_reliability_decoding.py): a tiny ESPnet
CTC model with a waveform front-end, saved as config.yaml + model file the way ESPnet's trainer writes them; noise
waveforms as `sound` (wav.scp) or Kaldi wav-in-ark (`kaldi_ark`, int16 PCM as Kaldi's WaveHolder stores it).
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from probes.common import Case, Outcome, first_line, run_cli

RATE = 16000
LENGTHS = [9000, 4100, 7300, 2600, 8800, 5000]  # samples: mixed, so batches carry padding
ENCODER_CONF = {"num_blocks": 2, "output_size": 16, "attention_heads": 2, "linear_units": 32,
                "rel_pos_type": "latest", "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn"}


def write_model(root: Path, fs: int = RATE) -> Tuple[Path, Path]:
    """config.yaml + valid.loss.ave.pth of a random plain ESPnet CTC model (conformer, STFT/fbank front-end at `fs`)
    whose CTC output is sharpened so that different inputs give different, non-empty hypotheses."""
    import argparse

    import torch
    import yaml
    from espnet2.tasks.asr import ASRTask

    from conftest import TOKENS

    exp = root / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    # global mean/variance normalisation, as ESPnet recipes train with: log-mel stats of audio in [-1, 1)
    count = 1000
    np.savez(exp / "feats_stats.npz", count=count, sum=np.full(20, -6.0 * count),
             sum_square=np.full(20, (36.0 + 4.0) * count))
    argv = ["--token_list", "dummy", "--token_type", "char", "--encoder", "conformer", "--model", "espnet",
            "--normalize", "global_mvn", "--normalize_conf", f"stats_file={exp / 'feats_stats.npz'}",
            "--frontend_conf", "n_fft=256",
            "--frontend_conf", "hop_length=128", "--frontend_conf", "n_mels=20", "--frontend_conf", f"fs={fs}"]
    for k, v in ENCODER_CONF.items():
        argv += ["--encoder_conf", f"{k}={v}"]
    args = ASRTask.get_parser().parse_args(argv)
    args.token_list = list(TOKENS)
    args.model_conf = {"ctc_weight": 1.0}
    torch.manual_seed(0)
    model = ASRTask.build_model(argparse.Namespace(**vars(args)))
    with torch.no_grad():
        model.ctc.ctc_lo.weight.mul_(30.0)
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args), sort_keys=False), encoding="utf-8")
    torch.save(model.state_dict(), exp / "valid.loss.ave.pth")
    return exp / "config.yaml", exp / "valid.loss.ave.pth"


def waves(seed: int = 0, lengths: List[int] = LENGTHS) -> Dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {f"utt{i:02d}": (0.3 * g.standard_normal(n)).clip(-0.99, 0.99).astype(np.float32)
            for i, n in enumerate(lengths)}


def write_sound(d: Path, audio: Dict[str, np.ndarray], fs: int = RATE) -> Path:
    """d/wav.scp over 16-bit PCM wav files."""
    import soundfile

    (d / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for key, x in audio.items():
        soundfile.write(d / "wav" / f"{key}.wav", x, fs, subtype="PCM_16")
        lines.append(f"{key} {d / 'wav' / f'{key}.wav'}")
    (d / "wav.scp").write_text("\n".join(lines) + "\n")
    return d / "wav.scp"


def write_wav_ark(d: Path, audio: Dict[str, np.ndarray], fs: int = RATE) -> Path:
    """d/wav_ark.scp over d/wav.ark: each utterance a RIFF/WAVE 16-bit PCM object, as Kaldi's WaveHolder writes
    (ESPnet's kaldi_ark loader reads it back as (rate, int16 array))."""
    import soundfile

    d.mkdir(parents=True, exist_ok=True)
    ark, lines = d / "wav.ark", []
    with open(ark, "wb") as f:
        for key, x in audio.items():
            f.write(key.encode() + b" ")
            offset = f.tell()
            buf = io.BytesIO()
            soundfile.write(buf, x, fs, format="WAV", subtype="PCM_16")
            f.write(buf.getvalue())
            lines.append(f"{key} {ark}:{offset}")
    (d / "wav_ark.scp").write_text("\n".join(lines) + "\n")
    return d / "wav_ark.scp"


class Payload:
    """Unpickling this runs `touch MARKER`: what a hostile model file does on an unrestricted torch.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def write_payload(path: Path, marker: Path) -> Path:
    """A model file that looks like a state dict and runs code when fully unpickled."""
    import torch

    torch.save({"encoder.embed.conv.0.weight": torch.zeros(2), "hook": Payload(marker)}, path)
    return path


def greedy(cfg: Path, pth: Path, scp: Path, kind: str, out: Path, cwd: Path, **env: str):
    return run_cli(["-m", "espnet_bertkd.bin.ctc_greedy_inference", "--asr_train_config", str(cfg),
                    "--asr_model_file", str(pth), "--data_path_and_name_and_type", f"{scp},speech,{kind}",
                    "--output_dir", str(out), "--batch_size", "3"], cwd, **env)


def beam(cfg: Path, pth: Path, scp: Path, kind: str, out: Path, cwd: Path, *extra: str, **env: str):
    return run_cli(["-m", "espnet_bertkd.bin.asr_inference", "--asr_train_config", str(cfg),
                    "--asr_model_file", str(pth), "--data_path_and_name_and_type", f"{scp},speech,{kind}",
                    "--output_dir", str(out), "--ctc_weight", "1.0", "--beam_size", "1", "--lm_weight", "0",
                    "--ngpu", "0", *extra], cwd, **env)


def write_lm(root: Path) -> Path:
    """config.yaml of a small ESPnet Transformer LM over the same tokens (for --lm_train_config)."""
    import yaml
    from espnet2.tasks.lm import LMTask

    from conftest import TOKENS

    argv = ["--token_list", "dummy", "--token_type", "char", "--lm", "transformer", "--lm_conf", "layer=1",
            "--lm_conf", "unit=32", "--lm_conf", "att_unit=16", "--lm_conf", "head=2", "--lm_conf", "embed_unit=16",
            "--lm_conf", "pos_enc=null"]
    args = LMTask.get_parser().parse_args(argv)
    args.token_list = list(TOKENS)
    (root / "lm").mkdir(parents=True, exist_ok=True)
    (root / "lm/config.yaml").write_text(yaml.safe_dump(vars(args)))
    return root / "lm/config.yaml"


def _refused(proc, *needles: str) -> bool:
    return proc.returncode != 0 and all(n in proc.stderr for n in needles)


def _message(proc, containing: str) -> str:
    return first_line(proc.stderr, containing) or first_line(proc.stderr.splitlines()[-1] if proc.stderr else "")


def case_sample_rate(workdir: Path) -> Outcome:
    cfg, pth = write_model(workdir)
    audio = waves()
    low = write_sound(workdir / "data8k", {k: x[::2] for k, x in audio.items()}, fs=8000)
    proc = greedy(cfg, pth, low, "sound", workdir / "out8k", workdir)
    if proc.returncode == 0:
        return Outcome("silent", "ctc_greedy_inference decoded 8 kHz audio with a 16 kHz model without a word")
    if not _refused(proc, "utt00 (8000 Hz)", "16000 Hz"):
        return Outcome("crash", f"8 kHz audio: {_message(proc, 'Error')}")
    beam8k = beam(cfg, pth, low, "sound", workdir / "beam8k", workdir)
    if not _refused(beam8k, "utt00 (8000 Hz)", "16000 Hz"):
        return Outcome("silent" if beam8k.returncode == 0 else "crash",
                       f"asr_inference on 8 kHz audio: rc {beam8k.returncode} {_message(beam8k, 'Error')}")
    sound = write_sound(workdir / "data", audio)
    ark = write_wav_ark(workdir / "data", audio)
    ref, got = greedy(cfg, pth, sound, "sound", workdir / "ref", workdir), \
        greedy(cfg, pth, ark, "kaldi_ark", workdir / "ark", workdir)
    if ref.returncode or got.returncode:
        return Outcome("crash", f"decoding 16 kHz sound / kaldi_ark: {_message(ref if ref.returncode else got, '')}")
    a, b = [(workdir / d / "1best_recog/text").read_text().splitlines() for d in ("ref", "ark")]
    changed = sum(x != y for x, y in zip(a, b))
    if changed or len(a) != len(audio):
        return Outcome("silent", f"int16 kaldi_ark audio: {changed} of {len(a)} hypotheses differ from the same wavs")
    beam_ark = beam(cfg, pth, ark, "kaldi_ark", workdir / "beam_ark", workdir)
    if not _refused(beam_ark, "integer PCM"):
        return Outcome("silent" if beam_ark.returncode == 0 else "crash",
                       f"asr_inference on int16 kaldi_ark: rc {beam_ark.returncode} {_message(beam_ark, 'Error')}")
    return Outcome("ok", f"8 kHz refused by both decoders ({first_line(proc.stderr, 'sample rate')[:90]}...); "
                         f"int16 kaldi_ark scaled: {len(a)} of {len(a)} hypotheses as from the wavs")


def _readonly_dir(workdir: Path) -> Path:
    """An existing directory this process cannot write to (chmod is no barrier for root: then sysfs)."""
    d = workdir / "readonly"
    d.mkdir()
    d.chmod(0o555)
    try:
        tempfile.NamedTemporaryFile(dir=d).close()
    except OSError:
        return d
    d.chmod(0o755)
    return Path("/sys/kernel")


def case_readonly_output(workdir: Path) -> Outcome:
    cfg, pth = write_model(workdir)
    scp = write_sound(workdir / "data", waves(lengths=LENGTHS[:2]))
    out = _readonly_dir(workdir)
    results = []
    for name, run in (("ctc_greedy_inference", greedy), ("asr_inference", beam)):
        proc = run(cfg, pth, scp, "sound", out, workdir)
        if proc.returncode == 0:
            return Outcome("silent", f"{name} reported success with a read-only --output_dir {out}")
        if not _refused(proc, f"--output_dir {out}", "nothing was decoded"):
            return Outcome("crash", f"{name}: {_message(proc, 'Error')}")
        # before the model is loaded: a model file that does not exist is never reached
        early = run(cfg, workdir / "missing.pth", scp, "sound", out, workdir)
        if not _refused(early, f"--output_dir {out}"):
            return Outcome("crash", f"{name} checks --output_dir only after loading the model: "
                                    f"{_message(early, 'Error')}")
        results.append(name)
    return Outcome("ok", f"{' and '.join(results)} refuse before loading the model: "
                         f"{first_line(proc.stderr, '--output_dir')[:110]}")


def case_model_file_payload(workdir: Path) -> Outcome:
    cfg, pth = write_model(workdir)
    scp = write_sound(workdir / "data", waves(lengths=LENGTHS[:1]))
    lm_cfg = write_lm(workdir)
    marker = workdir / "MARKER"
    bad = write_payload(workdir / "payload.pth", marker)
    import yaml

    kd_cfg = workdir / "exp/config_bertkd.yaml"  # export_ctc takes `model: bertkd` configs (read before the file)
    kd_cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "model": "bertkd"}, sort_keys=False))
    # ESPnet 202611 falls back to an unrestricted load with this set (a user who trusted their own files once)
    env = {"ESPNET_ALLOW_UNSAFE_TORCH_LOAD": "1"}
    runs = {
        "ctc_greedy_inference": greedy(cfg, bad, scp, "sound", workdir / "g", workdir, **env),
        "asr_inference": beam(cfg, bad, scp, "sound", workdir / "b", workdir, **env),
        "asr_inference --lm_file": beam(cfg, pth, scp, "sound", workdir / "lm", workdir, "--lm_train_config",
                                        str(lm_cfg), "--lm_file", str(bad), **env),
        "export_ctc": run_cli(["-m", "espnet_bertkd.bin.export_ctc", "--asr_train_config", str(kd_cfg),
                               "--asr_model_file", str(bad), "--output_dir", str(workdir / "e")], workdir, **env),
    }
    if marker.exists():
        return Outcome("code-exec", "a model file's pickle ran `touch MARKER`")
    for name, proc in runs.items():
        if not _refused(proc, str(bad), "not a plain weights file"):
            return Outcome("crash", f"{name}: rc {proc.returncode} {_message(proc, 'Error')}")
    return Outcome("ok", f"{len(runs)} entry points refuse it unread (even with ESPNET_ALLOW_UNSAFE_TORCH_LOAD=1): "
                         f"{first_line(runs['ctc_greedy_inference'].stderr, 'not a plain')[:100]}")


CASES = [
    Case(4, "decode audio at another sample rate / int16 kaldi_ark", case_sample_rate),
    Case(11, "read-only decoding output directory", case_readonly_output),
    Case(12, "model file with a code-running pickle", case_model_file_payload),
]
