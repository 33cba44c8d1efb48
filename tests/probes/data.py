"""Probe cases 5-9: data inputs and model config (a BOM, wav.scp commands, ark offsets, stereo and truncated audio,
ctc_weight without a decoder), through the real entry points: asr_train (its preflight, or collect-stats where the
preflight accepts), validate_data_dir --fix and ctc_greedy_inference."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import soundfile

from probes.common import Case, Outcome, first_line, run_cli

TEXTS = ["THEIR HOUSE IS OVER THERE", "I WANT TO GO TOO", "THE KNIGHT RODE AT NIGHT", "WRITE THE RIGHT ANSWER"]
TOKENS = ["<blank>", "<unk>", "<space>"] + sorted(set("".join(TEXTS)) - {" "}) + ["<sos/eos>"]
CTC_CONFIG = """model: espnet
model_conf: {ctc_weight: 1.0}
frontend_conf: {n_fft: 256, hop_length: 128, n_mels: 20}
encoder: transformer
encoder_conf: {output_size: 16, attention_heads: 2, linear_units: 32, num_blocks: 2}
batch_type: unsorted
batch_size: 2
"""
MODEL_SCRIPT = """
import sys, yaml, torch
import espnet_bertkd
from espnet2.tasks.asr import ASRTask
root = sys.argv[1]
args = ASRTask.get_parser().parse_args(["--config", root + "/train.yaml", "--token_list", root + "/tokens.txt",
                                        "--token_type", "char"])
args.token_list = [l.rstrip("\\n") for l in open(root + "/tokens.txt")]
model = ASRTask.build_model(args)
open(root + "/config.yaml", "w").write(yaml.safe_dump(vars(args)))
torch.save(model.state_dict(), root + "/model.pth")
"""
_MODEL: List[Path] = []


def write_wav(path: Path, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = (0.1 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)
    soundfile.write(str(path), wave if channels == 1 else np.stack([wave] * channels, axis=1), 16000)
    return path


def data_dir(root: Path, name: str, texts: Sequence[str] = TEXTS[:2]) -> Path:
    d = root / "data" / name
    ids = [f"spk1-{name}-{i:03d}" for i in range(len(texts))]
    for u in ids:
        write_wav(d / "wav" / f"{u}.wav")
    (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / u}.wav\n" for u in ids))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, t in zip(ids, texts)))
    (d / "utt2spk").write_text("".join(f"{u} spk1\n" for u in ids))
    (d / "spk2utt").write_text(f"spk1 {' '.join(ids)}\n")
    return d


def recipe(root: Path, config: str = CTC_CONFIG) -> None:
    data_dir(root, "train", TEXTS[:2])
    data_dir(root, "dev", TEXTS[2:])
    (root / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    (root / "train.yaml").write_text(config)


def asr_train(root: Path, *extra: str, kind: str = "sound", collect_stats: bool = False):
    argv = ["-m", "espnet_bertkd.bin.asr_train", "--config", str(root / "train.yaml"), "--token_type", "char",
            "--token_list", str(root / "tokens.txt"), "--output_dir", str(root / "exp"), "--ngpu", "0",
            "--num_workers", "0"]
    for split, name in (("train", "train"), ("valid", "dev")):
        flag = f"--{split}_data_path_and_name_and_type"
        argv += [flag, f"{root}/data/{name}/wav.scp,speech,{kind}", flag, f"{root}/data/{name}/text,text,text"]
        if collect_stats:
            argv += [f"--{split}_shape_file", f"{root}/data/{name}/wav.scp"]
    if collect_stats:
        argv += ["--collect_stats", "true"]
    return run_cli(argv + list(extra), cwd=root)


def model() -> Path:
    """A tiny CTC model on raw audio (built once per probe run)."""
    if not _MODEL:
        root = Path(tempfile.mkdtemp(prefix="bertkd_probe_model_"))
        recipe(root)
        proc = run_cli(["-c", MODEL_SCRIPT, str(root)], cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"building the probe model failed: {proc.stderr[-500:]}")
        _MODEL.append(root)
    return _MODEL[0]


def greedy(root: Path, scp: Path, kind: str = "sound"):
    m = model()
    return run_cli(["-m", "espnet_bertkd.bin.ctc_greedy_inference", "--asr_train_config", str(m / "config.yaml"),
                    "--asr_model_file", str(m / "model.pth"), "--data_path_and_name_and_type", f"{scp},speech,{kind}",
                    "--output_dir", str(root / "decode")], cwd=root)


def refusal(proc, must: Sequence[str], name: str) -> Optional[Outcome]:
    """None if `proc` was refused with every string of `must` and no traceback, else the verdict."""
    if proc.returncode == 0:
        return Outcome("silent", f"{name}: accepted")
    if "Traceback" in proc.stderr or not all(m in proc.stderr for m in must):
        last = first_line(proc.stderr.splitlines()[-1] if proc.stderr.strip() else "")
        return Outcome("crash", f"{name}: {last}")
    return None


# ----------------------------------------------------------------------------------------------------------- cases
def bom(workdir: Path) -> Outcome:
    recipe(workdir)
    text = workdir / "data/train/text"
    original = b"\xef\xbb\xbf" + text.read_bytes()
    text.write_bytes(original)
    bad = refusal(asr_train(workdir), ["text:1: byte-order mark", "validate_data_dir", "--fix"], "asr_train")
    if bad:
        return bad
    fixed = run_cli(["-m", "espnet_bertkd.recipe.bin.validate_data_dir", str(workdir / "data/train"), "--fix"], workdir)
    if fixed.returncode != 0 or text.read_bytes() != original[3:]:
        return Outcome("crash", f"validate_data_dir --fix: {first_line(fixed.stderr + fixed.stdout, 'byte-order')}")
    if (workdir / "data/train/.backup/text").read_bytes() != original:
        return Outcome("silent", "validate_data_dir --fix lost the original text")
    scp = workdir / "bom_wav.scp"
    scp.write_bytes(b"\xef\xbb\xbf" + (workdir / "data/train/wav.scp").read_bytes())
    dec = greedy(workdir, scp)
    hyp = workdir / "decode/1best_recog/text"
    if hyp.exists() and "\ufeff" in hyp.read_text(encoding="utf-8"):
        return Outcome("silent", "the decoder wrote a \\ufeff key")
    bad = refusal(dec, ["byte-order mark"], "ctc_greedy_inference")
    return bad or Outcome("ok", "preflight names the BOM and --fix; --fix stripped it (original in .backup); "
                                f"decoder: {first_line(dec.stderr, 'byte-order')[-70:]}")


def pipes(workdir: Path) -> Outcome:
    recipe(workdir)
    wav_scp = workdir / "data/train/wav.scp"
    lines = wav_scp.read_text().splitlines()
    key = lines[1].split()[0]
    lines[1] = f"{key} flac -c -d -s {workdir}/x.flac |"
    wav_scp.write_text("\n".join(lines) + "\n")
    for kind in ("sound", "kaldi_ark"):
        bad = refusal(asr_train(workdir, kind=kind), [f"utterance {key}: audio entry is a command", "format_wav_scp"],
                      f"asr_train ({kind})")
        if bad:
            return bad
    dec = greedy(workdir, wav_scp)
    bad = refusal(dec, [f"utterance {key}: audio entry is a command"], "ctc_greedy_inference")
    return bad or Outcome("ok", "refused by the preflight (sound, kaldi_ark) and the decoder: "
                                + first_line(dec.stderr, "audio entry is a command")[-110:])


def to_ark(data_dir: Path) -> Path:
    """wav.scp rewritten as ESPnet's dump stage writes audio arks: `utt ARK:OFFSET` (kaldi_ark type)."""
    import kaldiio  # ESPnet 202611 reads these arks with omniio, 202511 with kaldiio: the same layout

    wavs = {}
    for line in (data_dir / "wav.scp").read_text().splitlines():
        key, path = line.split(maxsplit=1)
        array, rate = soundfile.read(path, dtype="int16")
        wavs[key] = (rate, array)
    kaldiio.save_ark(str(data_dir / "audio.ark"), wavs, scp=str(data_dir / "wav.scp"), write_function="soundfile")
    return data_dir / "wav.scp"


def ark_offsets(workdir: Path) -> Outcome:
    recipe(workdir)
    for name in ("train", "dev"):
        to_ark(workdir / "data" / name)
    proc = asr_train(workdir, kind="kaldi_ark", collect_stats=True)
    stats = workdir / "exp/train/feats_stats.npz"
    if proc.returncode != 0:
        detail = first_line(proc.stderr, "does not exist") or first_line(proc.stderr.splitlines()[-1])
        return Outcome("crash", f"collect-stats on `utt x.ark:N` (kaldi_ark): {detail}")
    if not stats.exists():
        return Outcome("silent", "collect-stats succeeded without writing feats_stats.npz")
    return Outcome("ok", "preflight accepted `utt ARK:OFFSET` (kaldi_ark); collect-stats read it and wrote "
                         "exp/train/feats_stats.npz")


def stereo_truncated(workdir: Path) -> Outcome:
    recipe(workdir)
    wav = workdir / "data/train/wav/spk1-train-001.wav"
    write_wav(wav, channels=2)
    bad = refusal(asr_train(workdir), ["utterance spk1-train-001", "has 2 channels"], "asr_train (stereo)")
    if bad:
        return bad
    write_wav(wav)
    flac = workdir / "data/train/wav/spk1-train-001.flac"
    soundfile.write(str(flac), (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32), 16000, format="FLAC")
    flac.write_bytes(flac.read_bytes()[:2000])
    wav_scp = workdir / "data/train/wav.scp"
    wav_scp.write_text(wav_scp.read_text().replace(str(wav), str(flac)))
    named = f"utterance spk1-train-001: cannot read '{flac}'"
    proc = asr_train(workdir, collect_stats=True)
    if proc.returncode == 0:
        return Outcome("silent", "collect-stats accepted a truncated FLAC")
    if f"AudioReadError: cannot read '{flac}'" not in proc.stderr:  # its iterable dataset knows the entry only
        return Outcome("crash", f"collect-stats (truncated FLAC): {first_line(proc.stderr.splitlines()[-1])}")
    dec = greedy(workdir, wav_scp)
    if dec.returncode == 0 or named not in dec.stderr:
        return Outcome("crash", f"decoder (truncated FLAC): {first_line(dec.stderr.splitlines()[-1])}")
    return Outcome("ok", "stereo refused by the preflight; truncated FLAC named by collect-stats and the decoder: "
                   + first_line(dec.stderr, named)[-90:])


def no_decoder(workdir: Path) -> Outcome:
    for model_name, conf in (("bertkd", "{kd_layers: [], ctc_weight: 0.5}"), ("espnet", "{ctc_weight: 0.5}")):
        recipe(workdir, CTC_CONFIG.replace("model: espnet", f"model: {model_name}").replace(
            "model_conf: {ctc_weight: 1.0}", f"model_conf: {conf}"))
        proc = asr_train(workdir)
        if proc.returncode == 0:
            return Outcome("silent", f"model: {model_name}: accepted")
        if "decoder should not be None" in proc.stderr or "model_conf.ctc_weight=0.5" not in proc.stderr:
            return Outcome("crash", f"model: {model_name}: {first_line(proc.stderr.splitlines()[-1])}")
    return Outcome("ok", first_line(proc.stderr, "model_conf.ctc_weight=0.5")[:160])


CASES = [
    Case(5, "BOM in text / wav.scp", bom),
    Case(6, "wav.scp command entries", pipes),
    Case(7, "wav.scp ark offsets (kaldi_ark)", ark_offsets),
    Case(8, "stereo and truncated audio", stereo_truncated),
    Case(9, "ctc_weight < 1 without a decoder", no_decoder),
]
