"""Fix and combine Kaldi-style data directories, as Kaldi's `utils/fix_data_dir.sh` and `utils/combine_data.sh`
do (the pip install of ESPnet has neither). Validation lives in the plugin (espnet_bertkd.tasks.data_check): the
training preflight needs it, the recipe's tools call it.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_bertkd.tasks.data_check import UTT_TABLES, c_sorted, spk2utt_rows, validate_data_dir
from espnet_bertkd.utils.fileio import (DataError, PathLike, atomic_dir, atomic_open, check_output_dir, location,
                                       read_table, write_table)


OWNER = "combine_data_dirs"  # the owner marker of the directories combine_data_dirs writes (check_output_dir)


def segment_recording_id(tables: Dict[str, Dict[str, str]], utt: str) -> str:
    """The wav.scp key (recording id) that a segmented utterance is cut from: the first field of its segments line."""
    return tables["segments"][utt].split()[0]


BOM = b"\xef\xbb\xbf"


def normalize_table(path: Path) -> List[str]:
    """Remove what iter_table refuses but no editor shows: a UTF-8 byte-order mark at the start, DOS line endings
    (CRLF -> LF) and a missing final newline, rewriting the file atomically if anything changed. A carriage return
    that does not end a line is left for the reader to report. Returns what was removed."""
    data = path.read_bytes()
    fixed: List[str] = []
    if data.startswith(BOM):
        data = data[len(BOM):]
        fixed.append("byte-order mark")
    if b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
        fixed.append("DOS line endings")
    if data and not data.endswith(b"\n"):
        data += b"\n"
        fixed.append("missing final newline")
    if fixed:
        with atomic_open(path, "wb") as f:
            f.write(data)
        logging.warning("%s: removed %s", path, ", ".join(fixed))
    return fixed


def _new_backup_dir(data_dir: Path) -> Path:
    """`.backup/`, or `.backup.N/` with the first free N where earlier fixes left theirs: a second --fix must not
    overwrite the originals the first one saved."""
    backup, n = data_dir / ".backup", 0
    while backup.exists():
        n += 1
        backup = data_dir / f".backup.{n}"
    backup.mkdir()
    return backup


def fix_data_dir(data_dir: PathLike, drop_empty_text: bool = False) -> Tuple[int, int]:
    """Make a data directory consistent, as Kaldi's fix_data_dir.sh: keep the utterances present in all of
    utt2spk, text, wav.scp (or segments) and the other utterance tables, sort every table (C order, first of
    duplicate keys kept), rebuild spk2utt from utt2spk, filter spk2gender. A byte-order mark, DOS line endings and a
    missing final newline are removed first (normalize_table). The originals are copied to `<data_dir>/.backup/`
    first. Returns (kept, dropped) utterance counts."""
    data_dir = Path(data_dir)
    if not (data_dir / "utt2spk").is_file():
        raise DataError(f"{data_dir / 'utt2spk'}: no such file")

    def load(name: str) -> Dict[str, str]:
        path = data_dir / name
        table: Dict[str, str] = {}
        for e in read_table(path, unique=False):
            if e.key in table:
                logging.warning("%s: duplicate key dropped (only the first is kept)", location(path, e.line, e.key))
            else:
                table.setdefault(e.key, e.value)
        return table

    names = [n for n in (*UTT_TABLES, "segments", "wav.scp", "spk2utt", "spk2gender") if (data_dir / n).is_file()]
    backup = _new_backup_dir(data_dir)
    for name in names:
        with open(data_dir / name, "rb") as src, atomic_open(backup / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    for name in names:
        normalize_table(data_dir / name)

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
        keep = {k for k in keep
                if tables["segments"][k].split()[:1] and segment_recording_id(tables, k) in tables["wav.scp"]}
    for name in utt_names:
        write_table(data_dir / name, ((k, tables[name][k]) for k in c_sorted(keep)))
    if "segments" in tables and "wav.scp" in tables:
        used = {segment_recording_id(tables, k) for k in keep}
        write_table(data_dir / "wav.scp", ((k, tables["wav.scp"][k]) for k in c_sorted(tables["wav.scp"]) if k in used))
    spk2utt = spk2utt_rows((utt, tables["utt2spk"][utt]) for utt in keep)
    write_table(data_dir / "spk2utt", spk2utt)
    if "spk2gender" in tables:
        write_table(data_dir / "spk2gender",
                    ((s, tables["spk2gender"][s]) for s, _ in spk2utt if s in tables["spk2gender"]))
    dropped = len(all_utts) - len(keep)
    if dropped:
        logging.warning("%s: dropped %d of %d utterances (not in every table%s)", data_dir, dropped, len(all_utts),
                        " or empty transcript" if drop_empty_text else "")
    return len(keep), dropped


def combine_data_dirs(sources: Sequence[PathLike], output: PathLike, first: Optional[int] = None,
                      subset: Optional[int] = None, overwrite: bool = False) -> Tuple[int, int]:
    """Merge data directories into one, as Kaldi's combine_data.sh (ESPnet's LibriSpeech recipe builds train_960 and
    dev this way). A table is carried over only if every source has it; an utterance id in two sources is an error
    (naming both); speakers and recordings may repeat if their lines agree. spk2utt is rebuilt. The result is
    written as a whole and validated. Returns (utterances, speakers).

    `first` keeps only the first N utterances in sorted order, as Kaldi's `subset_data_dir.sh --first N` (sorted
    ids start with the speaker, so whole speakers are kept but for the last). `subset` keeps N utterances evenly
    spaced through the sorted list, as Kaldi's `subset_data_dir.sh N`: a smaller training set that keeps every
    speaker, so that less paired data does not also mean fewer voices.

    `output` is replaced whole, so it must not hold a source and, unless `overwrite`, must be absent, empty or an
    earlier combine_data_dirs output (check_output_dir)."""
    if first is not None and subset is not None:
        raise ValueError("combine_data_dirs: give first or subset, not both")
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("combine_data_dirs needs at least one source directory")
    check_output_dir(output, OWNER, sources, overwrite, option="OUTPUT")
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
                    problems.append(f"{location(src / name, e.line, e.key)}: also in {origin[e.key]}")
                    continue
                table[e.key] = e.value
                origin.setdefault(e.key, f"{src / name}:{e.line}")
        merged[name] = table
    if problems:
        raise DataError(problems)
    utts = c_sorted(merged["utt2spk"])
    keep_n = first if first is not None else subset
    if keep_n is not None:
        if not 0 < keep_n <= len(utts):
            raise DataError(f"cannot keep {'the first ' if first is not None else ''}{keep_n} of {len(utts)} "
                            f"utterances of {', '.join(map(str, sources))}")
        utts = utts[:first] if first is not None else [utts[i * len(utts) // subset] for i in range(subset)]
        keep = set(utts)
        for name in names:
            if name == "spk2gender":
                speakers = {merged["utt2spk"][u] for u in utts}
                merged[name] = {k: v for k, v in merged[name].items() if k in speakers}
            elif name == "wav.scp" and "segments" in names:
                continue  # keyed by recording; filtered after segments below
            else:
                merged[name] = {k: v for k, v in merged[name].items() if k in keep}
        if "segments" in names:
            used = {merged["segments"][u].split()[0] for u in utts}
            merged["wav.scp"] = {k: v for k, v in merged["wav.scp"].items() if k in used}
    with atomic_dir(output, OWNER, sources, overwrite) as tmp:
        for name in names:
            write_table(tmp / name, ((k, merged[name][k]) for k in c_sorted(merged[name])))
        write_table(tmp / "spk2utt", spk2utt_rows((utt, merged["utt2spk"][utt]) for utt in utts))
    report = validate_data_dir(output, require_text="text" in names, allow_empty_text=True)
    return report.utterances, report.speakers
