"""Validate and fix Kaldi-style data directories, as Kaldi's `utils/validate_data_dir.sh --no-feats` and
`utils/fix_data_dir.sh` do (the pip install of ESPnet has neither).

ESPnet's data loaders assume what these scripts enforce: every table sorted by key in C (byte) order, no duplicate
keys, the same utterances in wav.scp (or segments), text and utt2spk, spk2utt the inverse of utt2spk, speaker ids
prefixes of utterance ids. A violation shows up much later as a silent mismatch or a crash in a worker; here it is
reported up front with the file, the line and the utterance.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from espnet_bertkd.utils.fileio import DataError, Entry, PathLike, atomic_dir, read_table, where, write_table

# Characters of LibriSpeech transcripts (upper-case letters and the apostrophe; the space separates words).
CHARSETS = {"librispeech": "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"}
# Utterance-level tables checked for the same keys as utt2spk when present.
UTT_TABLES = ("text", "utt2spk", "utt2dur", "utt2num_samples", "utt2category", "utt2lang")


@dataclass
class Report:
    """What validation found: counts and the non-fatal findings (warnings)."""

    utterances: int = 0
    speakers: int = 0
    warnings: List[str] = field(default_factory=list)


def c_sorted(keys: Iterable[str]) -> List[str]:
    """C-locale order: by UTF-8 bytes, which for Python strings is code point order."""
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def _raw_checks(path: Path, problems: List[str]) -> None:
    """Byte-level checks Kaldi makes: final newline, no carriage returns."""
    data = path.read_bytes()
    lines = data.count(b"\n")
    if data and not data.endswith(b"\n"):
        problems.append(f"{where(path, lines + 1)}: last line has no newline")
    if b"\r" in data:
        first = data[: data.index(b"\r")].count(b"\n") + 1
        problems.append(f"{where(path, first)}: carriage return (DOS line endings)")


def _read(path: Path, problems: List[str]) -> Optional[List[Entry]]:
    """Read a table and check it is sorted with unique keys; problems are appended, None if unreadable."""
    try:
        entries = read_table(path)
    except DataError as e:
        problems.extend(e.problems)
        return None
    _raw_checks(path, problems)
    for prev, cur in zip(entries, entries[1:]):
        if cur.key.encode("utf-8") < prev.key.encode("utf-8"):
            problems.append(f"{where(path, cur.line, cur.key)}: not sorted (comes before {prev.key} on line "
                            f"{prev.line} in C order; run fix_data_dir)")
            break
    return entries


def _compare_keys(ref_path: Path, ref: List[Entry], path: Path, entries: List[Entry], problems: List[str]) -> None:
    ref_keys = {e.key for e in ref}
    keys = {e.key for e in entries}
    for e in ref:
        if e.key not in keys:
            problems.append(f"{where(ref_path, e.line, e.key)}: missing from {path}")
    for e in entries:
        if e.key not in ref_keys:
            problems.append(f"{where(path, e.line, e.key)}: not in {ref_path}")


def _check_text(path: Path, entries: List[Entry], allowed: Optional[Set[str]], allow_empty: bool,
                problems: List[str], warnings: List[str]) -> None:
    for e in entries:
        if not e.value.strip():
            (warnings if allow_empty else problems).append(f"{where(path, e.line, e.key)}: empty transcript")
            continue
        if allowed is not None:
            bad = sorted({c for c in e.value if c not in allowed and not c.isspace()})
            if bad:
                shown = " ".join(repr(c) for c in bad)
                problems.append(f"{where(path, e.line, e.key)}: character(s) outside the allowed set: {shown}")


def _check_audio(path: Path, entries: List[Entry], check_audio: bool, fs: Optional[int], problems: List[str],
                 warnings: List[str]) -> None:
    pipes = 0
    for e in entries:
        value = e.value
        if not value:
            problems.append(f"{where(path, e.line, e.key)}: no audio path")
            continue
        if value.endswith("|"):
            pipes += 1  # a command: only running it would tell
            continue
        audio = Path(value)
        if not audio.is_file():
            problems.append(f"{where(path, e.line, e.key)}: audio file {value} does not exist")
            continue
        if not check_audio and fs is None:
            continue
        import soundfile

        try:
            info = soundfile.info(str(audio))
        except Exception as err:  # soundfile raises RuntimeError/LibsndfileError/TypeError depending on the file
            problems.append(f"{where(path, e.line, e.key)}: cannot read {value}: {err}")
            continue
        if info.frames == 0:
            problems.append(f"{where(path, e.line, e.key)}: {value} has no samples")
        if fs is not None and info.samplerate != fs:
            problems.append(f"{where(path, e.line, e.key)}: {value} has sample rate {info.samplerate}, expected {fs}")
    if pipes:
        warnings.append(f"{path}: {pipes} entries are commands ('... |'); their audio was not checked")


def _check_speakers(data_dir: Path, utt2spk: List[Entry], problems: List[str]) -> int:
    path = data_dir / "utt2spk"
    for e in utt2spk:
        if len(e.value.split()) != 1:
            problems.append(f"{where(path, e.line, e.key)}: expected exactly one speaker id, got {e.value!r}")
    by_speaker: Dict[str, List[str]] = {}
    for e in utt2spk:
        by_speaker.setdefault(e.value, []).append(e.key)
    # Sorting by speaker must not reorder utterances (Kaldi: "make speaker-ids prefixes of utt-ids").
    order = sorted(utt2spk, key=lambda e: (e.value.encode("utf-8"), e.key.encode("utf-8")))
    for a, b in zip(order, utt2spk):
        if a.key != b.key:
            problems.append(f"{where(path, b.line, b.key)}: utt2spk is not in sorted order when sorted first on "
                            f"speaker id (found {b.key}, expected {a.key}); make speaker ids prefixes of "
                            "utterance ids")
            break
    spk2utt_path = data_dir / "spk2utt"
    spk2utt = _read(spk2utt_path, problems) if spk2utt_path.is_file() else None
    if spk2utt is None:
        if not spk2utt_path.is_file():
            problems.append(f"{spk2utt_path}: no such file (fix_data_dir writes it from utt2spk)")
        return len(by_speaker)
    listed: Set[str] = set()
    for e in spk2utt:
        listed.add(e.key)
        expected = by_speaker.get(e.key)
        if expected is None:
            problems.append(f"{where(spk2utt_path, e.line)}: speaker {e.key} has no utterance in utt2spk")
        elif e.value.split() != expected:
            extra = sorted(set(e.value.split()) - set(expected))
            lacking = sorted(set(expected) - set(e.value.split()))
            detail = (f"not in utt2spk for this speaker: {' '.join(extra[:5])}" if extra else
                      f"missing: {' '.join(lacking[:5])}" if lacking else "utterances out of order")
            problems.append(f"{where(spk2utt_path, e.line)}: speaker {e.key} disagrees with utt2spk ({detail})")
    for speaker in c_sorted(set(by_speaker) - listed):
        problems.append(f"{spk2utt_path}: speaker {speaker} (utterance {by_speaker[speaker][0]} in utt2spk) "
                        "is missing")
    gender_path = data_dir / "spk2gender"
    if gender_path.is_file():
        genders = _read(gender_path, problems) or []
        for e in genders:
            if e.value not in ("m", "f"):
                problems.append(f"{where(gender_path, e.line)}: speaker {e.key}: gender must be m or f, "
                                f"not {e.value!r}")
        have = {e.key for e in genders}
        for speaker in c_sorted(set(by_speaker) - have):
            problems.append(f"{gender_path}: speaker {speaker} is missing")
    return len(by_speaker)


def validate_data_dir(data_dir: PathLike, check_audio: bool = False, fs: Optional[int] = None,
                      allowed_chars: Optional[str] = None, allow_empty_text: bool = False,
                      require_text: bool = True) -> Report:
    """Check a data directory; raise DataError listing every problem, else return a Report.

    `check_audio` opens each audio file's header (readable, non-empty); `fs` also checks its sample rate.
    `allowed_chars` is a string of allowed transcript characters (whitespace always allowed) or a CHARSETS name.
    Empty transcripts are errors unless `allow_empty_text` (then warnings).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory")
    problems: List[str] = []
    report = Report()
    required = ["wav.scp", "utt2spk", "spk2utt"] + (["text"] if require_text else [])
    for name in required:
        if not (data_dir / name).is_file():
            problems.append(f"{data_dir / name}: no such file")
    if problems:
        raise DataError(problems)

    utt2spk_path = data_dir / "utt2spk"
    utt2spk = _read(utt2spk_path, problems)
    if utt2spk is None:
        raise DataError(problems)
    report.utterances = len(utt2spk)
    if not utt2spk:
        problems.append(f"{utt2spk_path}: no utterances")

    for name in UTT_TABLES:
        path = data_dir / name
        if name == "utt2spk" or not path.is_file():
            continue
        entries = _read(path, problems)
        if entries is None:
            continue
        _compare_keys(utt2spk_path, utt2spk, path, entries, problems)
        if name == "text":
            allowed = None
            if allowed_chars is not None:
                allowed = set(CHARSETS.get(allowed_chars, allowed_chars))
            _check_text(path, entries, allowed, allow_empty_text, problems, report.warnings)

    wav_path = data_dir / "wav.scp"
    wavs = _read(wav_path, problems)
    segments_path = data_dir / "segments"
    if segments_path.is_file():
        segments = _read(segments_path, problems)
        if segments is not None:
            _compare_keys(utt2spk_path, utt2spk, segments_path, segments, problems)
            recordings = {e.key for e in wavs or []}
            for e in segments:
                fields = e.value.split()
                if len(fields) != 3:
                    problems.append(f"{where(segments_path, e.line, e.key)}: expected '<utt> <recording> <start> "
                                    "<end>'")
                elif wavs is not None and fields[0] not in recordings:
                    problems.append(f"{where(segments_path, e.line, e.key)}: recording {fields[0]} not in {wav_path}")
    elif wavs is not None:
        _compare_keys(utt2spk_path, utt2spk, wav_path, wavs, problems)
    if wavs is not None:
        _check_audio(wav_path, wavs, check_audio, fs, problems, report.warnings)

    report.speakers = _check_speakers(data_dir, utt2spk, problems)
    if problems:
        raise DataError(problems)
    for w in report.warnings:
        logging.warning(w)
    return report


def recording(tables: Dict[str, Dict[str, str]], utt: str) -> str:
    return tables["segments"][utt].split()[0]


def fix_data_dir(data_dir: PathLike, drop_empty_text: bool = False) -> Tuple[int, int]:
    """Make a data directory consistent, as Kaldi's fix_data_dir.sh: keep the utterances present in all of
    utt2spk, text, wav.scp (or segments) and the other utterance tables, sort every table (C order, first of
    duplicate keys kept), rebuild spk2utt from utt2spk, filter spk2gender. The originals are copied to
    `<data_dir>/.backup/` first. Returns (kept, dropped) utterance counts."""
    data_dir = Path(data_dir)
    if not (data_dir / "utt2spk").is_file():
        raise DataError(f"{data_dir / 'utt2spk'}: no such file")

    def load(name: str) -> Dict[str, str]:
        path = data_dir / name
        table: Dict[str, str] = {}
        for e in read_table(path, unique=False):
            if e.key in table:
                logging.warning("%s: duplicate key dropped (only the first is kept)", where(path, e.line, e.key))
            else:
                table.setdefault(e.key, e.value)
        return table

    names = [n for n in (*UTT_TABLES, "segments", "wav.scp", "spk2utt", "spk2gender") if (data_dir / n).is_file()]
    backup = data_dir / ".backup"
    backup.mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(data_dir / name, backup / name)

    tables = {name: load(name) for name in names if name not in ("spk2utt",)}
    utt_names = [n for n in UTT_TABLES if n in tables]
    if "segments" in tables:
        utt_names.append("segments")
    elif "wav.scp" in tables:
        utt_names.append("wav.scp")
    all_utts = set().union(*(tables[n] for n in utt_names))
    keep = set.intersection(*(set(tables[n]) for n in utt_names))
    if drop_empty_text and "text" in tables:
        keep = {k for k in keep if tables["text"][k].strip()}
    if "segments" in tables and "wav.scp" in tables:
        keep = {k for k in keep if tables["segments"][k].split()[:1] and recording(tables, k) in tables["wav.scp"]}
    for name in utt_names:
        write_table(data_dir / name, ((k, tables[name][k]) for k in c_sorted(keep)))
    if "segments" in tables and "wav.scp" in tables:
        used = {recording(tables, k) for k in keep}
        write_table(data_dir / "wav.scp", ((k, tables["wav.scp"][k]) for k in c_sorted(tables["wav.scp"]) if k in used))
    by_speaker: Dict[str, List[str]] = {}
    for utt in c_sorted(keep):
        by_speaker.setdefault(tables["utt2spk"][utt], []).append(utt)
    write_table(data_dir / "spk2utt", ((s, " ".join(by_speaker[s])) for s in c_sorted(by_speaker)))
    if "spk2gender" in tables:
        write_table(data_dir / "spk2gender",
                    ((s, tables["spk2gender"][s]) for s in c_sorted(by_speaker) if s in tables["spk2gender"]))
    dropped = len(all_utts) - len(keep)
    if dropped:
        logging.warning("%s: dropped %d of %d utterances (not in every table%s)", data_dir, dropped, len(all_utts),
                        " or empty transcript" if drop_empty_text else "")
    return len(keep), dropped


def combine_data_dirs(sources: Sequence[PathLike], output: PathLike) -> Tuple[int, int]:
    """Merge data directories into one, as Kaldi's combine_data.sh (ESPnet's LibriSpeech recipe builds train_960 and
    dev this way). A table is carried over only if every source has it; an utterance id in two sources is an error
    (naming both); speakers and recordings may repeat if their lines agree. spk2utt is rebuilt. The result is
    written as a whole and validated. Returns (utterances, speakers)."""
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("combine_data_dirs needs at least one source directory")
    names = [n for n in (*UTT_TABLES, "segments", "wav.scp", "spk2gender")
             if all((s / n).is_file() for s in sources)]
    for n in ("utt2spk", "wav.scp"):
        if n not in names:
            lacking = [str(s / n) for s in sources if not (s / n).is_file()]
            raise DataError([f"{p}: no such file" for p in lacking])
    shared_ok = {"spk2gender"} | ({"wav.scp"} if "segments" in names else set())  # keyed by speaker / recording
    problems: List[str] = []
    merged: Dict[str, Dict[str, str]] = {}
    for name in names:
        table: Dict[str, str] = {}
        origin: Dict[str, str] = {}
        for src in sources:
            for e in read_table(src / name):
                if e.key in table and not (name in shared_ok and table[e.key] == e.value):
                    problems.append(f"{where(src / name, e.line, e.key)}: also in {origin[e.key]}")
                    continue
                table[e.key] = e.value
                origin.setdefault(e.key, f"{src / name}:{e.line}")
        merged[name] = table
    if problems:
        raise DataError(problems)
    utts = c_sorted(merged["utt2spk"])
    by_speaker: Dict[str, List[str]] = {}
    for utt in utts:
        by_speaker.setdefault(merged["utt2spk"][utt], []).append(utt)
    with atomic_dir(output) as tmp:
        for name in names:
            write_table(tmp / name, ((k, merged[name][k]) for k in c_sorted(merged[name])))
        write_table(tmp / "spk2utt", ((s, " ".join(by_speaker[s])) for s in c_sorted(by_speaker)))
    report = validate_data_dir(output, require_text="text" in names, allow_empty_text=True)
    return report.utterances, report.speakers
