"""LibriSpeech's on-disk layout, so LibriSpeech data-preparation code runs on the synthetic corpus unchanged.

    <root>/SPEAKERS.TXT                                  ";ID  |SEX| SUBSET | MINUTES | NAME" (data_prep.sh reads SEX)
    <root>/<set>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac      16 kHz mono 16-bit FLAC
    <root>/<set>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt          "UTTID TRANSCRIPT" per line, sorted
    <root>/lm_text.txt                                   LM text, one upper-case sentence per line

Every file is written under a temporary name and renamed, so an interrupted run never leaves a truncated file that
a re-run would take for finished.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, Mapping, Sequence, Tuple

import numpy as np

from espnet_bertkd.utils.fileio import atomic_open, atomic_write_text

LM_TEXT = "lm_text.txt"
SPEAKERS_TXT = "SPEAKERS.TXT"
INFO_JSON = "corpus_info.json"
OPTIONS_MARKER = ".corpus_options.json"  # written first: which options this directory belongs to
DONE_MARKER = ".corpus_done.json"  # written last: everything is there


def utt_id(speaker: int, chapter: int, index: int) -> str:
    return f"{speaker}-{chapter}-{index:04d}"


def chapter_dir(root: Path, set_name: str, speaker: int, chapter: int) -> Path:
    return Path(root) / set_name / str(speaker) / str(chapter)


def flac_path(root: Path, set_name: str, speaker: int, chapter: int, index: int) -> Path:
    return chapter_dir(root, set_name, speaker, chapter) / f"{utt_id(speaker, chapter, index)}.flac"


def trans_path(root: Path, set_name: str, speaker: int, chapter: int) -> Path:
    return chapter_dir(root, set_name, speaker, chapter) / f"{speaker}-{chapter}.trans.txt"


def write_text_if_changed(path: Path, text: str) -> bool:
    """atomic_write_text unless the file already holds exactly `text` (keeps mtimes of finished files)."""
    path = Path(path)
    if path.is_file():
        with open(path, encoding="utf-8", newline="") as f:
            if f.read() == text:
                return False
    atomic_write_text(path, text)
    return True


def atomic_write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit FLAC, written to a temporary name and renamed (fileio.atomic_open; the temporary name does not end in
    .flac, so data preparation never takes it for an utterance)."""
    import soundfile as sf

    with atomic_open(path, "wb") as f:
        sf.write(f, audio, sample_rate, format="FLAC", subtype="PCM_16")


def trans_text(lines: Sequence[Tuple[str, str]]) -> str:
    """A chapter's trans.txt: 'UTTID TRANSCRIPT' lines sorted by utterance id, as LibriSpeech has them."""
    return "".join(f"{u} {t}\n" for u, t in sorted(lines))


def speakers_txt(rows: Iterable[Tuple[int, str, str, float, str]]) -> str:
    """SPEAKERS.TXT in LibriSpeech's format: (id, sex M/F, subset, minutes, name). Kaldi's data_prep.sh greps
    '^<id>[ ]+|' and reads the second field as the gender."""
    out = [
        "; Synthetic readers of the espnet-bertkd corpus (eSpeak NG voices), in LibriSpeech's SPEAKERS.TXT format.\n",
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n",
    ]
    for sid, sex, subset, minutes, name in sorted(rows):
        if sex not in ("M", "F"):
            raise ValueError(f"speaker {sid}: sex must be M or F, got {sex!r}")
        out.append(f"{sid:<5}| {sex} | {subset:<16} | {minutes:6.2f} | {name}\n")
    return "".join(out)


def lm_text(sentences: Iterable[str]) -> str:
    return "".join(f"{s}\n" for s in sentences)


def read_json(path: Path) -> Dict[str, object]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: Path, obj: Mapping[str, object]) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=True) + "\n")
