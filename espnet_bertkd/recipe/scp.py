"""Split a key file into N parts for N jobs and merge the jobs' outputs back, as asr.sh does with Kaldi's
`utils/split_scp.pl` and `cat output.*/... | sort` (the pip install of ESPnet has neither).

The split keeps the lines' order and gives the parts sizes that differ by at most one (the first parts take the
remainder), exactly as split_scp.pl without --utt2spk. The merge refuses a key that two jobs both wrote: that means
overlapping splits, and a silent overwrite would score the wrong hypothesis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from espnet_bertkd.utils.fileio import DataError, PathLike, atomic_open, read_table, where


def split_sizes(lines: int, parts: int) -> List[int]:
    base, extra = divmod(lines, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def split_scp(scp: PathLike, outputs: Sequence[PathLike]) -> List[int]:
    """Write consecutive chunks of `scp` to `outputs`; returns the number of lines of each."""
    if not outputs:
        raise ValueError("split_scp needs at least one output")
    with open(scp, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    if len(lines) < len(outputs):
        raise DataError(f"{scp}: {len(lines)} lines cannot be split into {len(outputs)} non-empty parts "
                        "(use fewer jobs)")
    sizes = split_sizes(len(lines), len(outputs))
    start = 0
    for out, size in zip(outputs, sizes):
        with atomic_open(out) as f:
            f.writelines(lines[start: start + size])
        start += size
    return sizes


def merge_scp(inputs: Sequence[PathLike], output: PathLike) -> int:
    """Concatenate key-value files and sort by key (C order); a key in two inputs is an error naming both.
    Returns the number of lines written."""
    rows: Dict[str, str] = {}
    origin: Dict[str, str] = {}
    problems = []
    for path in inputs:
        for e in read_table(path):
            if e.key in rows:
                problems.append(f"{where(path, e.line, e.key)}: also in {origin[e.key]}")
                continue
            rows[e.key] = e.value
            origin[e.key] = f"{path}:{e.line}"
    if problems:
        raise DataError(problems)
    with atomic_open(output) as f:
        for key in sorted(rows, key=lambda k: k.encode("utf-8")):
            f.write(f"{key} {rows[key]}\n" if rows[key] else f"{key}\n")
    return len(rows)


def job_paths(pattern: str, nj: int, var: str = "JOB") -> List[Path]:
    """`split.JOB.scp` -> [split.1.scp, ..., split.N.scp]."""
    if var not in pattern:
        raise ValueError(f"{pattern!r} has no {var} to replace")
    return [Path(pattern.replace(var, str(j))) for j in range(1, nj + 1)]
