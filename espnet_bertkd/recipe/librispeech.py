"""LibriSpeech -> Kaldi-style data directories, as ESPnet's egs2/librispeech `local/data.sh` (Kaldi's
`local/data_prep.sh`) makes them, and the LM training text of ESPnet's `asr.sh`.

Layout read: `<root>/<set>/<reader>/<chapter>/<reader>-<chapter>-<n>.flac` and `<reader>-<chapter>.trans.txt`
(`<root>/SPEAKERS.TXT`, if present, gives `spk2gender`). Written: `<data>/<set with '-' -> '_'>/{wav.scp, text,
utt2spk, spk2utt[, spk2gender]}`, sorted by utterance id (C order). As in Kaldi's recipe each chapter is one
"speaker" (`<reader>-<chapter>`), so per-speaker statistics are per chapter. Unlike it, wav.scp lists the FLAC files
themselves (absolute paths), not `flac -d |` pipes: ESPnet's `sound` loader reads FLAC through soundfile, and the
pip install has no `flac` binary to rely on.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_bertkd.tasks.data_check import spk2utt_rows
from espnet_bertkd.utils.fileio import (DataError, PathLike, atomic_dir, atomic_open, check_output_dir, iter_table,
                                       location, open_text, read_table, write_table)

SETS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360", "train-other-500")


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str  # <reader>-<chapter>
    wav: str  # absolute path of the FLAC file
    text: str


def kaldi_set_name(set_name: str) -> str:
    """`train-clean-100` -> `train_clean_100`, the data directory name ESPnet's recipe uses."""
    return set_name.replace("-", "_")


def _subdirs(path: Path) -> List[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_set(set_dir: PathLike) -> List[Utterance]:
    """All utterances of one LibriSpeech set, sorted by id. Every transcript line needs its FLAC file and every
    FLAC file its transcript line; all problems are collected and raised together (file, line, utterance)."""
    set_dir = Path(set_dir)
    if not set_dir.is_dir():
        raise DataError(f"{set_dir}: no such directory (expected <root>/<set>/<reader>/<chapter>/)")
    utts: Dict[str, Utterance] = {}
    problems: List[str] = []
    for reader_dir in _subdirs(set_dir):
        for chapter_dir in _subdirs(reader_dir):
            speaker = f"{reader_dir.name}-{chapter_dir.name}"
            trans = chapter_dir / f"{speaker}.trans.txt"
            # hidden names (macOS "._x.flac" copies, half-written temporaries) are not utterances
            flacs = {p.name[: -len(".flac")]: p for p in chapter_dir.glob("*.flac") if not p.name.startswith(".")}
            if not trans.is_file():
                problems.append(f"{trans}: missing transcript file for {len(flacs)} FLAC file(s) in {chapter_dir}")
                continue
            id_pattern = re.compile(rf"{re.escape(speaker)}-\d+")
            try:
                entries = read_table(trans)  # blank lines, duplicate ids, DOS line endings ... are errors
            except DataError as e:
                problems.extend(e.problems)
                continue
            for e in entries:
                utt_id, text = e.key, " ".join(e.value.split())
                loc = location(trans, e.line, utt_id)
                if not id_pattern.fullmatch(utt_id):  # so no id can repeat in another chapter
                    problems.append(f"{loc}: id does not match {speaker}-<number> (the chapter's directory)")
                    continue
                if not text:
                    problems.append(f"{loc}: empty transcript")
                flac = flacs.pop(utt_id, None)
                if flac is None:
                    problems.append(f"{loc}: audio file {chapter_dir / (utt_id + '.flac')} does not exist")
                    continue
                utts[utt_id] = Utterance(utt_id, speaker, os.path.abspath(flac), text)
            for utt_id, flac in sorted(flacs.items()):
                problems.append(f"{flac}: utterance {utt_id}: no line in {trans}")
    if problems:
        raise DataError(problems)
    if not utts:
        raise DataError(f"{set_dir}: no utterances found (expected <reader>/<chapter>/*.flac and *.trans.txt)")
    return [utts[k] for k in sorted(utts)]


def read_speaker_genders(speakers_txt: PathLike) -> Dict[str, str]:
    """Reader id -> 'm'/'f' from LibriSpeech's SPEAKERS.TXT (`ID | SEX | SUBSET | MINUTES | NAME`)."""
    genders: Dict[str, str] = {}
    with open_text(speakers_txt) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|")]
            if len(fields) < 2 or fields[1].upper() not in ("M", "F"):
                raise DataError(f"{location(speakers_txt, lineno)}: expected 'ID | SEX | ...' with SEX M or F")
            genders[fields[0]] = fields[1].lower()
    return genders


OWNER = "prepare_librispeech"  # the owner marker of the data directories written here (check_output_dir)


def write_data_dir(utts: Sequence[Utterance], out_dir: PathLike, genders: Optional[Dict[str, str]] = None,
                   overwrite: bool = False) -> Path:
    """Write the data directory as a whole (built under a temporary name, then swapped in): no stale file of an
    earlier run (segments, utt2num_samples, feats.scp, ...) survives next to the new lists. A directory that this
    tool did not make is refused unless `overwrite` (check_output_dir)."""
    utts = sorted(utts, key=lambda u: u.utt_id)
    with atomic_dir(out_dir, OWNER, overwrite=overwrite) as tmp:
        write_table(tmp / "wav.scp", ((u.utt_id, u.wav) for u in utts))
        write_table(tmp / "text", ((u.utt_id, u.text) for u in utts))
        write_table(tmp / "utt2spk", ((u.utt_id, u.speaker) for u in utts))
        write_table(tmp / "spk2utt", spk2utt_rows((u.utt_id, u.speaker) for u in utts))
        if genders is not None:
            speakers = sorted({u.speaker for u in utts})
            write_table(tmp / "spk2gender", ((s, genders[s]) for s in speakers))
    return Path(out_dir)


def prepare_librispeech(root: PathLike, set_name: str, data_dir: PathLike = "data",
                        out_name: Optional[str] = None, overwrite: bool = False) -> Path:
    """Prepare `<data_dir>/<set_name with '-' -> '_'>` from `<root>/<set_name>` (or `<root>/LibriSpeech/<set_name>`,
    the archives' layout); returns the directory written. The output is checked before the corpus is scanned: it
    must not hold the corpus, nor (unless `overwrite`) be a directory this tool did not make."""
    root = Path(root)
    out = Path(data_dir) / (out_name or kaldi_set_name(set_name))
    check_output_dir(out, OWNER, [root], overwrite, option="--data_dir")
    if not (root / set_name).is_dir() and (root / "LibriSpeech" / set_name).is_dir():
        root = root / "LibriSpeech"
    utts = scan_set(root / set_name)
    genders = None
    speakers_txt = root / "SPEAKERS.TXT"
    if speakers_txt.is_file():
        by_reader = read_speaker_genders(speakers_txt)
        speakers = {u.speaker for u in utts}
        missing = sorted(s for s in speakers if s.split("-")[0] not in by_reader)
        if missing:
            logging.warning("%s lacks readers of %d chapter(s) (e.g. %s): no spk2gender written",
                            speakers_txt, len(missing), missing[0])
        else:
            genders = {s: by_reader[s.split("-")[0]] for s in speakers}
    write_data_dir(utts, out, genders, overwrite)
    logging.info("%s: %d utterances, %d speakers", out, len(utts), len({u.speaker for u in utts}))
    return out


def _normalise(text: str, case: Optional[str]) -> str:
    text = " ".join(text.split())
    if case == "upper":
        return text.upper()
    if case == "lower":
        return text.lower()
    return text


def prepare_lm_text(output: PathLike, lm_texts: Sequence[PathLike] = (), kaldi_texts: Sequence[PathLike] = (),
                    id_prefix: str = "librispeech_lng_", case: Optional[str] = None) -> int:
    """Write ESPnet's `lm_train.txt`: `<id> <words>` lines, first the Kaldi `text` files (the training transcripts,
    as asr.sh concatenates them), then the plain LM text files (one sentence per line, `.gz` allowed) with ids
    `<id_prefix><8-digit line number, counted over all LM files>` as egs2/librispeech numbers
    librispeech-lm-norm.txt. Whitespace is collapsed, lines without words are dropped (asr.sh's `awk 'NF != 1'`),
    `case` ('upper'/'lower') optionally folds case.
    Streams line by line (the LibriSpeech LM text has 40 M lines). Returns the number of lines written."""
    if case not in (None, "upper", "lower"):
        raise ValueError(f"case must be None, 'upper' or 'lower', not {case!r}")
    if not lm_texts and not kaldi_texts:
        raise ValueError("prepare_lm_text needs at least one LM text or Kaldi text file")
    count = 0
    seen_ids: Dict[str, str] = {}
    with atomic_open(output) as out:
        for path in kaldi_texts:
            for e in iter_table(path):  # streamed; its DataError comes after the last line, before the rename
                key = e.key
                if lm_texts and key.startswith(id_prefix):
                    raise DataError(f"{location(path, e.line, key)}: id clashes with the LM text ids ({id_prefix}...)")
                if key in seen_ids:
                    raise DataError(f"{location(path, e.line, key)}: duplicate key (first in {seen_ids[key]})")
                seen_ids[key] = f"{path}:{e.line}"
                text = _normalise(e.value, case)
                if text:
                    out.write(f"{key} {text}\n")
                    count += 1
        number = 0  # awk's NR over all LM text files, so ids stay unique across files
        for path in lm_texts:
            with open_text(path) as f:
                for line in f:
                    number += 1
                    text = _normalise(line, case)
                    if text:
                        out.write(f"{id_prefix}{number:08d} {text}\n")
                        count += 1
    if count == 0:
        Path(output).unlink()
        raise DataError(f"{', '.join(map(str, list(kaldi_texts) + list(lm_texts)))}: no text lines with words")
    return count
