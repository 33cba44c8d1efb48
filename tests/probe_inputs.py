r"""Probe the installed package with the bad and unusual inputs of the reliability issue, as a careless or hostile
user would give them, and say for each what happened.

    python tests/probe_inputs.py [--workdir DIR] [--cases 1,3,12] [--keep]

Every case (tests/probes/*.py, CASES) runs in its own empty directory and prints one line:
`case N name: detail -> verdict`, the verdict one of ok / silent / crash / code-exec / data-loss
(tests/probes/common.py). The last line is the count: `probe: N cases, N ok, S silent, C crash, X code-exec,
L data-loss`. Exit status 1 unless every case is ok. Not part of the pytest suite (the pytest tests provoke the same cases one at a time); a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Iterator, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from probes.common import VERDICTS, Case, Outcome  # noqa: E402


def all_cases() -> List[Case]:
    import probes

    cases = []
    for info in pkgutil.iter_modules(probes.__path__):
        if info.name != "common":
            cases += importlib.import_module(f"probes.{info.name}").CASES
    numbers = [c.number for c in cases]
    duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicated:
        raise SystemExit(f"probe cases numbered twice: {duplicated}")
    return sorted(cases, key=lambda c: c.number)


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send everything written to this process's stdout and stderr (and its children's) to `log`, at the file
    descriptor level: what a case's libraries print (progress bars, ESPnet's warnings) stays out of the report."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_case(case: Case, workdir: Path) -> Outcome:
    """A case that raises is itself a crash of the probe: reported, never hidden. Its output goes to
    WORKDIR/output.log (kept with --keep)."""
    try:
        with output_to(workdir / "output.log"):
            return case.run(workdir)
    except Exception as e:  # noqa: BLE001  (the probe reports every failure as a line)
        last = traceback.format_exception(e)[-1].strip()
        return Outcome("crash", f"the probe case raised {last[:200]}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=None, help="where the cases' directories go (default: a temporary one)")
    p.add_argument("--cases", default="", help="comma-separated case numbers (default: all)")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    args = p.parse_args(argv)
    cases = all_cases()
    if args.cases:
        wanted = {int(n) for n in args.cases.split(",")}
        cases = [c for c in cases if c.number in wanted]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bertkd_probe_"))
    root.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    for case in cases:
        workdir = root / f"case{case.number:02d}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        start = time.time()
        outcome = run_case(case, workdir)
        counts[outcome.verdict] += 1
        print(f"case {case.number} {case.name}: {outcome.detail} ({time.time() - start:.0f} s) -> {outcome.verdict}",
              flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(f"probe: {len(cases)} cases, " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    return 0 if cases and counts["ok"] == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
