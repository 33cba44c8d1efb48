"""Atomic file output and strict reading of Kaldi-style tables (`<key> <value>` per line).

Recipes are re-run after crashes and interrupts; a half-written `text` or `result.json` that looks complete is worse
than none, so every output goes to a temporary name beside its destination and is renamed into place.
Input problems are reported with the file, the line and the key, because the key is what a user greps for.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

MAX_REPORTED = 20  # problems listed in one error message; the rest are counted


def where(path: PathLike, line: Optional[int] = None, key: Optional[str] = None) -> str:
    """`path:line: utterance KEY` — the prefix of every input error."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if key is not None:
        text += f": utterance {key}"
    return text


class DataError(ValueError):
    """Bad input data. The message holds one problem per line, each naming the file, line and key, then an optional
    hint on how to fix them."""

    def __init__(self, problems: Union[str, Sequence[str]], hint: Optional[str] = None):
        self.problems: List[str] = [problems] if isinstance(problems, str) else list(problems)
        self.hint = hint
        shown = self.problems[:MAX_REPORTED]
        message = "\n".join(shown)
        if len(self.problems) > 1:
            message = f"{len(self.problems)} problems:\n  " + "\n  ".join(shown)
        if len(self.problems) > MAX_REPORTED:
            message += f"\n  ... and {len(self.problems) - MAX_REPORTED} more"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)


def tmp_name(path: Path) -> Path:
    """A temporary sibling of `path` (same file system, so the final rename is atomic)."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing; on success rename it to `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in on success, so no stale file of an earlier run
    survives beside the new ones and a crash leaves the old directory intact."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    old = path.with_name(f"{path.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: PathLike, text: str) -> Path:
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def write_table(path: PathLike, rows: Iterable[Tuple[str, str]]) -> Path:
    """Write `key value` lines (`key` alone where the value is empty), atomically."""
    with atomic_open(path) as f:
        for key, value in rows:
            f.write(f"{key} {value}\n" if value else f"{key}\n")
    return Path(path)


def open_text(path: PathLike) -> IO[str]:
    """Read UTF-8 text, transparently un-gzipping `*.gz` (the LibriSpeech LM text ships gzipped)."""
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


@dataclass(frozen=True)
class Entry:
    """One line of a Kaldi table: 1-based line number, key and the rest of the line (stripped)."""

    line: int
    key: str
    value: str


def read_table(path: PathLike, unique: bool = True) -> List[Entry]:
    """Read a `key value` file. Blank lines, undecodable bytes and (with `unique`) duplicate keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    entries: List[Entry] = []
    seen: dict = {}
    problems: List[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{where(path, lineno)}: not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            parts = line.strip().split(maxsplit=1)
            if not parts:
                problems.append(f"{where(path, lineno)}: empty line")
                continue
            key = parts[0]
            if unique and key in seen:
                problems.append(f"{where(path, lineno, key)}: duplicate key (first on line {seen[key]})")
                continue
            seen[key] = lineno
            entries.append(Entry(lineno, key, parts[1] if len(parts) > 1 else ""))
    if problems:
        raise DataError(problems)
    return entries
