"""Atomic file output and strict reading of Kaldi-style tables (`<key> <value>` per line).

Recipes are re-run after crashes and interrupts; a half-written `text` or `result.json` that looks complete is worse
than none, so every output goes to a temporary name beside its destination and is renamed into place: atomic_open
(text, or binary with mode="wb": torch.save, soundfile and pickle write into the file object), atomic_write_text,
write_table, and for directories atomic_dir / replace_dir (the old directory is replaced, never lost).
A tool replaces a whole directory only where it made it: check_output_dir refuses, before any work, a non-empty
directory without the tool's owner marker (OWNER_FILE, written by atomic_dir/replace_dir) and any output directory
that holds one of the tool's inputs; `overwrite=True` (a tool's --overwrite true) is the only way past the first.
Input problems are reported with the file, the line and the key, because the key is what a user greps for.
Every Kaldi-style table (`text`, `wav.scp`, `utt2spk`, scps, hypotheses) is read by read_table, so one file gets the
same verdict in every stage: validation, soft-label extraction, teacher accuracy, scoring.
"""
from __future__ import annotations

import contextlib
import glob
import gzip
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

MAX_REPORTED = 20  # problems listed in one error message; the rest are counted


def location(path: PathLike, line: Optional[int] = None, key: Optional[str] = None) -> str:
    """`path:line: utterance KEY`, the prefix of every input error."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if key is not None:
        text += f": utterance {key}"
    return text


def first_few(items: Sequence, show: int = 5, fmt: Callable[[object], str] = repr) -> str:
    """`'a', 'b' and 3 more`: the first items an error message names, and how many it leaves out."""
    more = f" and {len(items) - show} more" if len(items) > show else ""
    return ", ".join(fmt(x) for x in items[:show]) + more


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


OWNER_FILE = ".espnet_bertkd_owner"  # in every directory atomic_dir/replace_dir swaps in: the tool that made it


class OutputDirError(DataError):
    """An output directory a tool must not write: a file, another tool's or a user's directory, or one holding an
    input. Raised before any work, so nothing is lost and nothing is computed in vain."""


def dir_owner(path: PathLike) -> Optional[str]:
    """The tool that made directory `path` (its OWNER_FILE), or None."""
    try:
        return (Path(path) / OWNER_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def check_output_dir(path: PathLike, owner: str, inputs: Iterable[PathLike] = (), overwrite: bool = False,
                     option: str = "--output_dir", own_files: Sequence[str] = (), ignore: Sequence[str] = ()) -> None:
    """Refuse to let `owner` (a tool's name) replace directory `path` unless it is absent, empty or `owner`'s own
    earlier output (its OWNER_FILE, or an entry whose name starts with one of `own_files`, for a tool that writes
    into its directory in place); with `overwrite`, any directory, but never one that is or holds one of `inputs` (a
    slip of the arguments such as `combine_data_dirs data data/train` would delete the sources). Entries named in
    `ignore` do not count (the job logs a launcher writes into an in-place tool's directory, ESPnet's OUTPUT/log/;
    never for a tool that replaces the directory, which would delete them). One line, naming the fix."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {path}: is a file, not a directory; choose another directory")
    resolved = path.resolve()
    for name in inputs:
        if _inside(Path(name).resolve(), resolved):
            raise OutputDirError(f"{option} {path}: holds the input {name}, which writing it would delete; choose a "
                                 "directory outside the inputs")
    if overwrite or not path.is_dir():
        return
    entries = sorted(p.name for p in path.iterdir() if p.name not in ignore)
    made_by = dir_owner(path)
    if not entries or made_by == owner or any(e.startswith(own) for e in entries for own in own_files):
        return
    whose = f"was made by {made_by}" if made_by else f"was not made by {owner}"
    if own_files:  # a tool writing in place: nothing would be deleted, but its files would mix with these
        raise OutputDirError(f"{option} {path}: exists, {whose} and holds {first_few(entries, 3)}; choose another "
                             "directory, or an empty one")
    raise OutputDirError(f"{option} {path}: exists, {whose} and holds {first_few(entries, 3)}, which writing it "
                         "would delete; choose another directory, or pass --overwrite true to replace it")


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


def replace_dir(new: PathLike, path: PathLike, owner: str, overwrite: bool = False) -> Path:
    """Swap the complete directory `new` in as `path` (marked as `owner`'s), replacing an existing one that
    check_output_dir allows, so that `path` always holds either the old directory or the new one: the old one is
    renamed aside, the new one renamed in, and only then is the old one deleted. If the second rename fails the old
    directory is put back. (Between the two renames a crash leaves the old directory at `<path>.old<pid>`; the next
    atomic_dir/replace_dir of `path` puts it back first.) Tools call check_output_dir before their work too; the
    check here catches a directory that appeared meanwhile."""
    new, path = Path(new), Path(path)
    _restore_aside(path)
    check_output_dir(path, owner, overwrite=overwrite)
    (new / OWNER_FILE).write_text(owner + "\n", encoding="utf-8")
    old = path.with_name(f"{path.name}.old{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    moved = False
    if path.exists() or path.is_symlink():
        os.replace(path, old)
        moved = True
    try:
        os.replace(new, path)
    except BaseException:
        if moved:
            os.replace(old, path)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _restore_aside(path: Path) -> None:
    """Put back an old directory that replace_dir renamed aside (`<path>.old<pid>`) before its process died between
    the two renames; remove such leftovers of dead processes where `path` exists (died after the second rename)."""
    leftovers = []
    for p in path.parent.glob(f"{glob.escape(path.name)}.old*"):
        pid = p.name[len(path.name) + len(".old"):]
        if pid.isdigit() and p.is_dir() and not _alive(int(pid)):
            leftovers.append(p)
    if not leftovers:
        return
    leftovers.sort(key=lambda p: p.stat().st_mtime)
    if not path.exists():
        os.replace(leftovers.pop(), path)
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover: this call is not in the middle of a swap
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def atomic_dir(path: PathLike, owner: str, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in on success (replace_dir), so no stale file of an
    earlier run survives beside the new ones and a crash or an error leaves the old directory intact. Refuses
    (check_output_dir) before the body runs a directory `owner` did not make or one holding one of `inputs`."""
    path = Path(path)
    _restore_aside(path)
    check_output_dir(path, owner, inputs, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, path, owner, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    """All entries of a Kaldi-style table, read by iter_table (see there for what is an error)."""
    return list(iter_table(path, unique))


def iter_table(path: PathLike, unique: bool = True) -> Iterator[Entry]:
    """Read a Kaldi-style `key value` file (`*.gz` un-gzipped): the one reader of every table in the plugin and the
    recipe, so a file gets the same verdict in every stage. The key is the first whitespace-separated field, the
    value the rest of the line with surrounding whitespace stripped ("" for a key alone).

    Errors, all collected and raised together as one DataError naming file, line and key, as Kaldi's
    validate_data_dir.sh rejects them: undecodable UTF-8, a byte-order mark, carriage returns (DOS line endings;
    reported once, on the first such line), blank lines, a last line without its newline and, with `unique`,
    duplicate keys (fix_data_dir reads with unique=False to drop them).

    Entries are yielded as they are read (a 40M-line LM text streams; unique=False keeps no set of keys); the
    DataError comes after the last line, so a caller writes its output atomically and nothing of a bad input lands."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    seen: dict = {}
    problems: List[str] = []
    carriage_return = False
    raw = b""
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{location(path, lineno)}: not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if lineno == 1 and line.startswith("\ufeff"):
                problems.append(f"{location(path, lineno)}: byte-order mark (save the file as UTF-8 without BOM)")
                line = line[1:]
            if "\r" in line and not carriage_return:
                carriage_return = True
                problems.append(f"{location(path, lineno)}: carriage return (DOS line endings; convert with dos2unix)")
            parts = line.strip().split(maxsplit=1)
            if not parts:
                problems.append(f"{location(path, lineno)}: empty line")
                continue
            key = parts[0]
            if unique and key in seen:
                problems.append(f"{location(path, lineno, key)}: duplicate key (first on line {seen[key]})")
                continue
            if unique:
                seen[key] = lineno
            yield Entry(lineno, key, parts[1] if len(parts) > 1 else "")
    if raw and not raw.endswith(b"\n"):
        problems.append(f"{location(path, lineno)}: last line has no newline")
    if problems:
        raise DataError(problems)


def read_dict(path: PathLike) -> Dict[str, str]:
    """key -> value of a table read by read_table (unique keys)."""
    return {e.key: e.value for e in read_table(path)}


def read_pairs(path: PathLike) -> List[Tuple[str, str]]:
    """(key, value) pairs of a table read by read_table, in file order (unique keys)."""
    return [(e.key, e.value) for e in read_table(path)]


def read_keys(path: PathLike) -> List[str]:
    """The keys of a table read by read_table, in file order (unique keys)."""
    return [e.key for e in read_table(path)]
