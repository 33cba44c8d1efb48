"""Split a key file into N parts for N jobs and merge the jobs' outputs back, as asr.sh does with Kaldi's
`utils/split_scp.pl` and `cat output.*/... | sort` (the pip install of ESPnet has neither).

The split keeps the lines' order and gives the parts sizes that differ by at most one, with the boundaries of every
job split of the plugin and the recipe (espnet_bertkd.utils.jobs: the later parts take the remainder, where Kaldi's
split_scp.pl gives it to the first parts; any contiguous split serves asr.sh, whose merge sorts by key). The merge refuses a key that two jobs both wrote: that means
overlapping splits, and a silent overwrite would score the wrong hypothesis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from espnet_bertkd.utils.fileio import DataError, PathLike, location, read_table, write_table
from espnet_bertkd.utils.jobs import split_sizes


def split_scp(scp: PathLike, outputs: Sequence[PathLike]) -> List[int]:
    """Write consecutive chunks of `scp` to `outputs`; returns the number of lines of each."""
    if not outputs:
        raise ValueError("split_scp needs at least one output")
    lines = read_table(scp)
    if len(lines) < len(outputs):
        raise DataError(f"{scp}: {len(lines)} lines cannot be split into {len(outputs)} non-empty parts "
                        "(use fewer jobs)")
    sizes = split_sizes(len(lines), len(outputs))
    start = 0
    for out, size in zip(outputs, sizes):
        write_table(out, ((e.key, e.value) for e in lines[start: start + size]))
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
                problems.append(f"{location(path, e.line, e.key)}: also in {origin[e.key]}")
                continue
            rows[e.key] = e.value
            origin[e.key] = f"{path}:{e.line}"
    if problems:
        raise DataError(problems)
    write_table(output, ((key, rows[key]) for key in sorted(rows, key=lambda k: k.encode("utf-8"))))
    return len(rows)


def job_paths(pattern: str, nj: int, var: str = "JOB") -> List[Path]:
    """`split.JOB.scp` -> [split.1.scp, ..., split.N.scp]."""
    if var not in pattern:
        raise ValueError(f"{pattern!r} has no {var} to replace")
    return [Path(pattern.replace(var, str(j))) for j in range(1, nj + 1)]
