"""What a probe case is and what it can find (tests/probe_inputs.py runs them).

A case provokes one bad or unusual input against the installed package, the way a careless or hostile user would,
and says what happened:
  ok         the input was handled: a clear error naming the file/key/utterance before work started, or the right
             result (a supported input decoded correctly)
  silent     a wrong result or a success that did not produce its outputs, without a word
  crash      a failure without a clear message (a traceback from deep inside ESPnet, a misleading message)
  code-exec  a user string or a model file ran code
  data-loss  something that was there before (a user's file, an input, an experiment) was changed or deleted
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

VERDICTS = ("ok", "silent", "crash", "code-exec", "data-loss")


@dataclass(frozen=True)
class Outcome:
    verdict: str  # one of VERDICTS
    detail: str  # one line: what happened (the message's first line, the wrong result)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Case:
    number: int  # the case's number in the issue
    name: str  # a few words
    run: Callable[[Path], Outcome]  # called with an empty work directory


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`python ARGS` (or a command starting with a path) with the offline environment, output captured."""
    cmd = [sys.executable, *args] if args and args[0] in ("-m", "-c") or str(args[0]).endswith(".py") else list(args)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **env}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def first_line(text: str, containing: str = "") -> str:
    """The first line of `text` (that contains `containing`), for an Outcome's detail."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and containing in line]
    return lines[0][:200] if lines else ""
