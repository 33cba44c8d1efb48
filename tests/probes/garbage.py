"""Probe cases 27-48: the silent garbage and the tracebacks of issue 24, items 2 and 3, through the real entry points
(extract_soft_labels, asr_train's preflight, ctc_greedy_inference, score, export_ctc, validate_data_dir): a teacher
without its tokenizer or one that cannot read the words, NaN audio, `segments`, transcripts CTC cannot align,
unsafe utterance ids, a decoding that died, too-short audio, and bad text, options, teachers and model files. ok
means one clear line naming the input (or, for a supported input, the right result)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import soundfile

from probes.common import Case, Outcome, first_line, run_cli
from probes.data import TEXTS, asr_train, data_dir, greedy, model, recipe, write_wav


def one_line(proc, expected: str, name: str = "") -> Outcome:
    """ok for exit 1 with a last line containing `expected` and no traceback."""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    if proc.returncode == 0:
        return Outcome("silent", f"{name}exit 0: {first_line(proc.stdout) or first_line(proc.stderr) or 'no output'}")
    if "Traceback" in proc.stderr or not lines or expected not in lines[-1]:
        return Outcome("crash", f"{name}exit {proc.returncode}: {(lines or ['no message'])[-1][:200]}")
    return Outcome("ok", lines[-1][:200])


def refused_by_preflight(proc, expected: str) -> Outcome:
    """asr_train's preflight: the problems (one line each, naming file, line and utterance), then how to fix them,
    and no traceback; ok when a problem line contains `expected`."""
    if proc.returncode == 0:
        return Outcome("silent", "asr_train: exit 0")
    named = [line.strip() for line in proc.stderr.splitlines() if expected in line]
    if "Traceback" in proc.stderr or not named or "ESPnet was not started" not in proc.stderr:
        lines = proc.stderr.strip().splitlines()
        return Outcome("crash", f"exit {proc.returncode}: {(lines or ['no message'])[-1][:200]}")
    return Outcome("ok", named[0][:200])


def teacher(root: Path, texts: Sequence[str] = TEXTS, tokenizer: bool = True) -> Path:
    from espnet_bertkd.kd.build_teacher import build_bert

    path = Path(build_bert(list(texts) * 4, str(root / "teacher"), vocab_size=60, seed=0))
    if not tokenizer:
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (path / name).unlink(missing_ok=True)
    return path


def text_file(root: Path, lines: Sequence[str], name: str = "text", raw: bytes = b"") -> Path:
    path = root / name
    path.write_bytes(raw or "".join(f"{line}\n" for line in lines).encode("utf-8"))
    return path


def extract(root: Path, text: Path, teacher_dir: Path, *extra: str):
    return run_cli(["-m", "espnet_bertkd.bin.extract_soft_labels", "--teacher", str(teacher_dir), "--text",
                    str(text), "--output_dir", str(root / "kd"), "--topk", "4", *extra], cwd=root)


def nan_wav(path: Path) -> Path:
    wave = (0.1 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)
    wave[100] = np.nan
    soundfile.write(str(path), wave, 16000, subtype="FLOAT")
    return path


def segmented(root: Path, segments: str = "rec1-a rec1 0.0 0.2\nrec1-b rec1 0.3 0.5\n") -> Path:
    d = root / "seg"
    write_wav(d / "rec1.wav")
    (d / "wav.scp").write_text(f"rec1 {d / 'rec1.wav'}\n")
    (d / "segments").write_text(segments)
    (d / "text").write_text("rec1-a THE KNIGHT\nrec1-b RODE\n")
    (d / "utt2spk").write_text("rec1-a spk\nrec1-b spk\n")
    (d / "spk2utt").write_text("spk rec1-a rec1-b\n")
    return d


# ----------------------------------------------------------------------------------------------------------- cases
def tokenizerless(workdir: Path) -> Outcome:
    proc = extract(workdir, text_file(workdir, ["u1 THE KNIGHT RODE"]), teacher(workdir, tokenizer=False))
    out = one_line(proc, "tokenizer files")
    return out if out.verdict != "ok" or not (workdir / "kd").exists() else Outcome("silent", "kd/ was written")


def unknown_words(workdir: Path) -> Outcome:
    text = text_file(workdir, ["u1 JAZZ QUIZ", "u2 FIX JAZZ"])
    return one_line(extract(workdir, text, teacher(workdir)), "to its unknown token")


def nan_training(workdir: Path) -> Outcome:
    recipe(workdir)
    nan_wav(workdir / "data/train/wav/spk1-train-001.wav")
    return refused_by_preflight(asr_train(workdir), "holds NaN or infinite samples")


def nan_decoding(workdir: Path) -> Outcome:
    scp = workdir / "wav.scp"
    scp.write_text(f"u1 {nan_wav(workdir / 'nan.wav')}\n")
    return one_line(greedy(workdir, scp), "utterance u1: ")


def segments_decoding(workdir: Path) -> Outcome:
    return one_line(greedy(workdir, segmented(workdir) / "wav.scp"), "format_wav_scp.sh --segments")


def segments_training(workdir: Path) -> Outcome:
    recipe(workdir)
    d = workdir / "data/train"
    (d / "segments").write_text("".join(f"{u} {u} 0.0 0.4\n" for u in (d / "utt2spk").read_text().split()[::2]))
    return refused_by_preflight(asr_train(workdir), "format_wav_scp.sh --segments")


def impossible_segments(workdir: Path) -> Outcome:
    d = segmented(workdir, "rec1-a rec1 0.4 0.2\nrec1-b rec1 0.3 9.0\n")
    proc = run_cli(["-m", "espnet_bertkd.recipe.bin.validate_data_dir", str(d), "--check_audio"], cwd=workdir)
    out = one_line(proc, "past the end of recording rec1")
    if out.verdict == "crash" and "empty or reversed" in proc.stderr and "past the end" in proc.stderr:
        return Outcome("ok", "both segments named: empty or reversed; past the end of the recording")
    return out


def infeasible_ctc(workdir: Path) -> Outcome:
    recipe(workdir)
    shapes = workdir / "speech_shape"
    shapes.write_text("".join(f"{line.split()[0]} 2000\n" for line in (workdir / "data/train/text").read_text()
                              .splitlines()))
    return refused_by_preflight(asr_train(workdir, "--train_shape_file", str(shapes)), "have more tokens than CTC can align")


def unsafe_ids(workdir: Path) -> Outcome:
    recipe(workdir)
    d = workdir / "data/train"
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        lines = (d / name).read_text().replace("spk1-train-000 ", "../../evil ").replace(" spk1-train-000", " ../../evil")
        (d / name).write_text(lines)
    return refused_by_preflight(asr_train(workdir), "not a safe file name")


def decoding_died(workdir: Path) -> Outcome:
    out = workdir / "decode"
    (out / "1best_recog").mkdir(parents=True)
    (out / "1best_recog/text").write_text("u1 AN OLDER RUN\n")
    (out / "speed.json").write_text("{}\n")
    cut = workdir / "cut.flac"
    soundfile.write(str(cut), (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32), 16000, format="FLAC")
    cut.write_bytes(cut.read_bytes()[:2000])
    scp = workdir / "wav.scp"
    scp.write_text(f"u1 {cut}\n")
    greedy(workdir, scp)
    (workdir / "ref").write_text("u1 A\n")
    proc = run_cli(["-m", "espnet_bertkd.recipe.bin.score", "--ref", "ref", "--decode_dir", "decode"], cwd=workdir)
    return one_line(proc, "did not finish")


def too_short(workdir: Path) -> Outcome:
    write_wav(workdir / "u1.wav")
    soundfile.write(str(workdir / "tiny.wav"), np.zeros(160, dtype=np.float32), 16000)
    scp = workdir / "wav.scp"
    scp.write_text(f"a-tiny {workdir / 'tiny.wav'}\nu1 {workdir / 'u1.wav'}\n")
    proc = greedy(workdir, scp)
    text = workdir / "decode/1best_recog/text"
    if proc.returncode != 0:
        return Outcome("crash", f"exit {proc.returncode}: {first_line(proc.stderr.splitlines()[-1] if proc.stderr else '')}")
    keys = [line.split()[0] for line in text.read_text().splitlines()] if text.is_file() else []
    if keys != ["a-tiny", "u1"] or "a-tiny" not in proc.stderr:
        return Outcome("silent", f"decoded {keys}, the short utterance not named")
    return Outcome("ok", "a-tiny: an empty hypothesis and a warning naming it; u1 decoded")


def extract_bad(raw: bytes, expected: str, *extra: str) -> Callable[[Path], Outcome]:
    def run(workdir: Path) -> Outcome:
        text = text_file(workdir, [], raw=raw)
        return one_line(extract(workdir, text, teacher(workdir), *extra), expected)

    return run


def extract_other_settings(workdir: Path) -> Outcome:
    text = text_file(workdir, ["u1 THE KNIGHT RODE", "u2 AT NIGHT"])
    t = teacher(workdir)
    first = extract(workdir, text, t)
    if first.returncode != 0:
        return Outcome("crash", f"the first extraction failed: {first_line(first.stderr)}")
    return one_line(extract(workdir, text, t, "--topk", "3"), "holds soft labels made with other settings")


def corrupt_teacher(workdir: Path) -> Outcome:
    t = teacher(workdir)
    (t / "config.json").write_text("{not json")
    return one_line(extract(workdir, text_file(workdir, ["u1 THE KNIGHT"]), t), "config.json")


def model_file(kind: str) -> Callable[[Path], Outcome]:
    def run(workdir: Path) -> Outcome:
        m = model()
        d = workdir / "m"
        d.mkdir()
        shutil.copy(m / "config.yaml", d / "config.yaml")
        data = (m / "model.pth").read_bytes()
        (d / "model.pth").write_bytes({"empty": b"", "truncated": data[:3000]}.get(kind, data))
        if kind == "other":  # a config of other shapes with the same layer names
            text = (m / "config.yaml").read_text().replace("output_size: 16", "output_size: 32")
            (d / "config.yaml").write_text(text)
        write_wav(workdir / "u1.wav")
        (workdir / "wav.scp").write_text(f"u1 {workdir / 'u1.wav'}\n")
        proc = run_cli(["-m", "espnet_bertkd.bin.ctc_greedy_inference", "--asr_train_config", str(d / "config.yaml"),
                        "--asr_model_file", str(d / "model.pth"), "--data_path_and_name_and_type",
                        f"{workdir / 'wav.scp'},speech,sound", "--output_dir", str(workdir / "decode")], cwd=workdir)
        return one_line(proc, {"empty": "is empty", "truncated": "is truncated",
                               "other": "does not match the model built from"}[kind])

    return run


def empty_list(workdir: Path) -> Outcome:
    (workdir / "wav.scp").write_text("")
    return one_line(greedy(workdir, workdir / "wav.scp"), "no utterances to decode")


def export_to_a_file(workdir: Path) -> Outcome:
    m = model()
    (workdir / "out").write_text("a file\n")
    proc = run_cli(["-m", "espnet_bertkd.bin.export_ctc", "--asr_train_config", str(m / "config.yaml"),
                    "--asr_model_file", str(m / "model.pth"), "--output_dir", "out"], cwd=workdir)
    return one_line(proc, "is a file, not a directory")


def train_into_a_file(workdir: Path) -> Outcome:
    recipe(workdir)
    (workdir / "exp").write_text("a file\n")
    return refused_by_preflight(asr_train(workdir), "is a file, not a directory")


CASES = [
    Case(27, "teacher directory without its tokenizer", tokenizerless),
    Case(28, "teacher whose tokenizer cannot read the words", unknown_words),
    Case(29, "NaN samples in training audio", nan_training),
    Case(30, "NaN samples in decoding audio", nan_decoding),
    Case(31, "segments file given to the decoder", segments_decoding),
    Case(32, "segments file in a training directory", segments_training),
    Case(33, "impossible segments", impossible_segments),
    Case(34, "transcripts CTC cannot align", infeasible_ctc),
    Case(35, "utterance id with ../ in training", unsafe_ids),
    Case(36, "a decoding that died, then scored", decoding_died),
    Case(37, "a 0.01 s utterance among others", too_short),
    Case(38, "extract_soft_labels: duplicate ids", extract_bad(b"u1 THE KNIGHT\nu1 RODE\n", "u1")),
    Case(39, "extract_soft_labels: non-UTF-8 text", extract_bad(b"u1 THE KNIGHT \xff\xfe\n", "UTF-8")),
    Case(40, "extract_soft_labels --chunk_size 0", extract_bad(b"u1 THE KNIGHT\n", "--chunk_size must be at least 1",
                                                               "--chunk_size", "0")),
    Case(41, "extract_soft_labels again with other settings", extract_other_settings),
    Case(42, "teacher with a corrupt config.json", corrupt_teacher),
    Case(43, "model file of another config", model_file("other")),
    Case(44, "empty model file", model_file("empty")),
    Case(45, "truncated model file", model_file("truncated")),
    Case(46, "empty wav.scp to the decoder", empty_list),
    Case(47, "export_ctc --output_dir a file", export_to_a_file),
    Case(48, "asr_train --output_dir a file", train_into_a_file),
]
