r"""Lock a file for the life of the calling shell script (asr.sh, run.sh): two runs at once in one experiment
directory would overwrite each other's outputs and logs.

    exec {fd}>>"${expdir}/.lock"
    python -m espnet_bertkd.recipe.bin.lock --fd "${fd}" --file "${expdir}/.lock" --pid $$ [--wait] [--what TEXT]

The lock is flock(2) on the shell's own open file (the descriptor it passes): it lasts while the shell, or a
process it started, keeps that file open, and the kernel drops it when they end, SIGKILL included. On success the
file holds the shell's pid, which the refusal of the next run names. Exit status: 0 locked; 1 held by another run
(without --wait: the message names the file and the holder's pid); 3 the holder removed the file while this one
waited (open it afresh and try again).
"""
import argparse
import fcntl
import os
import sys
from pathlib import Path
from typing import List, Optional

HELD, STALE = 1, 3


def holder(path: str) -> str:
    """`pid N` as the holder wrote it (with its command line where this machine still runs it)."""
    try:
        pid = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        pid = ""
    if not pid.isdigit():
        return "pid unknown (it has not written it yet)"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        cmd = " ".join(cmd.replace("\0", " ").split())
        return f"pid {pid}: {cmd[:160]}"
    except FileNotFoundError:
        return f"pid {pid}, which has exited: a process it started still holds the lock" if Path("/proc/self").exists() \
            else f"pid {pid}"
    except OSError:
        return f"pid {pid}"


def same_file(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock(fd: int, path: str, pid: int, wait: bool = False, what: str = "", prog: str = "asr.sh") -> int:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = holder(path)
        if not wait:
            print(f"{prog}: another run holds the lock {path} ({who}){': ' + what if what else ''}. Wait for it to "
                  "finish, or stop it; the lock goes with its process.", file=sys.stderr)
            return HELD
        print(f"{prog}: waiting for the lock {path} ({who}){': ' + what if what else ''}", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    if not same_file(path, fd):  # the holder removed the file on release: this lock guards nothing now
        fcntl.flock(fd, fcntl.LOCK_UN)
        return STALE
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)  # (an O_APPEND descriptor writes at the end: 0 after the truncation)
    return 0


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fd", type=int, required=True, help="the caller's descriptor open for writing on --file")
    p.add_argument("--file", required=True, help="the lock file (named in the messages)")
    p.add_argument("--pid", type=int, required=True, help="the caller's pid, written into the file")
    p.add_argument("--wait", action="store_true", help="wait for the holder instead of refusing")
    p.add_argument("--what", default="", help="what the lock guards, for the messages")
    p.add_argument("--prog", default="asr.sh", help="the caller's name, for the messages")
    args = p.parse_args(argv)
    try:
        os.fstat(args.fd)
    except OSError:
        sys.exit(f"{args.prog}: lock: descriptor {args.fd} is not open (open {args.file} on it first)")
    sys.exit(lock(args.fd, args.file, args.pid, args.wait, args.what, args.prog))


if __name__ == "__main__":
    main()
