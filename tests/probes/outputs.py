"""Probe cases 14-26: output directories that hold something else (issue 24, item 1). Every tool that writes a
directory is pointed at one it did not make, at one holding its inputs, or at a file, through its real entry point;
the verdict is data-loss if anything that was there changed, ok only for a one-line refusal naming the option and
the fix."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np

from probes.common import Case, Outcome, first_line, run_cli

TEXTS = ["THEIR HOUSE IS OVER THERE", "I WANT TO GO TOO", "THE KNIGHT RODE AT NIGHT", "WRITE THE RIGHT ANSWER"]


def snapshot(directory: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def data_dir(d: Path, speaker: str) -> Path:
    """A valid Kaldi data directory of two 0.5 s WAVs."""
    import soundfile

    (d / "wav").mkdir(parents=True)
    utts = [f"{speaker}-{i:04d}" for i in range(2)]
    for i, u in enumerate(utts):
        soundfile.write(str(d / "wav" / f"{u}.wav"), 0.1 * np.sin(np.arange(8000) * (0.05 + i / 100)), 16000)
    (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / u}.wav\n" for u in utts))
    (d / "text").write_text("".join(f"{u} {TEXTS[i]}\n" for i, u in enumerate(utts)))
    (d / "utt2spk").write_text("".join(f"{u} {speaker}\n" for u in utts))
    (d / "spk2utt").write_text(f"{speaker} {' '.join(utts)}\n")
    return d


def recipe(workdir: Path) -> Path:
    """data/{train,dev} with audio, a user's file in data/, an experiment in exp/ and a LibriSpeech-layout corpus."""
    data_dir(workdir / "data" / "train", "spkA")
    data_dir(workdir / "data" / "dev", "spkB")
    (workdir / "data" / "notes.txt").write_text("my notes\n")
    (workdir / "data" / "mine").mkdir()
    (workdir / "data" / "mine" / "segments").write_text("a user's own table\n")
    exp = workdir / "exp" / "asr"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("model: bertkd\n")
    (exp / "valid.loss.ave.pth").write_bytes(b"a trained model")
    (workdir / "exp" / "lm.txt").write_text("the knight rode at night\nthey went there too\n")
    chapter = workdir / "LibriSpeech" / "dev-clean" / "84" / "121"
    chapter.mkdir(parents=True)
    import soundfile

    soundfile.write(str(chapter / "84-121-0000.flac"), 0.1 * np.sin(np.arange(8000) * 0.05), 16000)
    (chapter / "84-121.trans.txt").write_text(f"84-121-0000 {TEXTS[0]}\n")
    (workdir / "data" / "dev_clean").mkdir()
    (workdir / "data" / "dev_clean" / "feats.scp").write_text("a user's features\n")
    with zipfile.ZipFile(workdir / "exp" / "asr_model.zip", "w") as z:
        z.writestr("meta.yaml", "yaml_files: {}\nfiles: {}\n")
    return workdir


def refused(args: Sequence[str], expected: str, protected: Sequence[str] = ("data", "exp")) -> Callable[[Path], Outcome]:
    """A case: run `args` in a fresh recipe; ok when it exits 1 with one line containing `expected` and every
    protected directory is byte for byte as it was."""

    def run(workdir: Path) -> Outcome:
        root = recipe(workdir)
        before = {p: snapshot(root / p) for p in protected}
        proc = run_cli(list(args), cwd=root)
        lost: List[str] = []
        for p in protected:
            after = snapshot(root / p) if (root / p).is_dir() else {}
            lost += [f"{p}/{name}" for name in before[p] if after.get(name) != before[p][name]]
        if lost:
            return Outcome("data-loss", f"exit {proc.returncode}; changed or deleted: {', '.join(lost[:4])}")
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        if proc.returncode == 0:
            return Outcome("silent", f"exit 0: {first_line(proc.stdout) or 'no output'}")
        if "Traceback" in proc.stderr or len(lines) != 1 or expected not in lines[0]:
            return Outcome("crash", f"exit {proc.returncode}: {(lines or ['no message'])[-1][:200]}")
        return Outcome("ok", lines[0][:200])

    return run


TEACHER = ["--epochs", "1", "--vocab_size", "60", "--hidden_size", "16", "--num_layers", "1", "--num_heads", "1"]
CASES = [
    Case(14, "combine_data_dirs into the sources' parent", refused(
        ["-m", "espnet_bertkd.recipe.bin.combine_data_dirs", "data", "data/train", "data/dev", "--overwrite", "true"],
        "OUTPUT data: holds the input data/train")),
    Case(15, "combine_data_dirs into one of its sources", refused(
        ["-m", "espnet_bertkd.recipe.bin.combine_data_dirs", "data/train", "data/train", "data/dev"],
        "holds the input data/train")),
    Case(16, "combine_data_dirs into a user's directory", refused(
        ["-m", "espnet_bertkd.recipe.bin.combine_data_dirs", "data/mine", "data/train", "data/dev"],
        "was not made by combine_data_dirs")),
    Case(17, "train_teacher --output_dir an experiment", refused(
        ["-m", "espnet_bertkd.bin.train_teacher", "--text", "exp/lm.txt", "--output_dir", "exp/asr", *TEACHER],
        "--output_dir exp/asr: exists, was not made by train_teacher")),
    Case(18, "train_teacher --overwrite true over its own text", refused(
        ["-m", "espnet_bertkd.bin.train_teacher", "--text", "exp/lm.txt", "--output_dir", "exp", "--overwrite", "true",
         *TEACHER], "holds the input exp/lm.txt")),
    Case(19, "prepare_librispeech over a user's data/dev_clean", refused(
        ["-m", "espnet_bertkd.recipe.bin.prepare_librispeech", "--root", "LibriSpeech", "--data_dir", "data",
         "dev-clean"], "was not made by prepare_librispeech")),
    Case(20, "perturb_speed --dst the source's parent", refused(
        ["-m", "espnet_bertkd.recipe.bin.perturb_speed", "--src", "data/train", "--dst", "data", "--audio_dir",
         "dump/sp"], "a parent of the source")),
    Case(21, "perturb_speed --dst a user's directory", refused(
        ["-m", "espnet_bertkd.recipe.bin.perturb_speed", "--src", "data/train", "--dst", "data/mine", "--audio_dir",
         "dump/sp"], "--dst data/mine: exists, was not made by perturb_speed")),
    Case(22, "share_soft_labels --output_dir the source's parent", refused(
        ["-m", "espnet_bertkd.bin.share_soft_labels", "--src_dir", "exp/asr", "--text", "data/train/text",
         "--output_dir", "exp", "--overwrite", "true"], "holds the input exp/asr")),
    Case(23, "upload_hf --repo_dir the zip's folder", refused(
        ["-m", "espnet_bertkd.recipe.bin.upload_hf", "--packed_zip", "exp/asr_model.zip", "--hf_repo", "me/model",
         "--repo_dir", "exp", "--dry_run", "true", "--overwrite", "true"], "holds the input exp/asr_model.zip")),
    Case(24, "export_ctc --output_dir the training directory", refused(
        ["-m", "espnet_bertkd.bin.export_ctc", "--asr_train_config", "exp/asr/config.yaml", "--asr_model_file",
         "exp/asr/valid.loss.ave.pth", "--output_dir", "exp/asr", "--overwrite", "true"],
        "holds the input exp/asr/config.yaml")),
    Case(25, "extract_soft_labels --output_dir a data directory", refused(
        ["-m", "espnet_bertkd.bin.extract_soft_labels", "--teacher", "exp/asr", "--text", "data/train/text",
         "--output_dir", "data/train"], "was not made by extract_soft_labels")),
    Case(26, "extract_soft_labels --output_dir a file", refused(
        ["-m", "espnet_bertkd.bin.extract_soft_labels", "--teacher", "exp/asr", "--text", "data/train/text",
         "--output_dir", "data/notes.txt"], "is a file, not a directory")),
]
