"""Run an ESPnet module or script with the plugin registered.

    python -m espnet_bertkd.launch -m espnet2.bin.asr_train --config conf/train.yaml ...
    python -m espnet_bertkd.launch path/to/script.py ARGS...

This is the hook for ESPnet's own `asr.sh`: with `--python "python -m espnet_bertkd.launch"` every
`${python} -m espnet2.bin.X` it runs sees `model: bertkd`. A training module runs as `__main__` while this module
stays the process's main module, so DDP workers (spawned, they re-import the main module) register the plugin too.
Every other module becomes the main module itself, as with `python -m`: typeguard's `@typechecked` looks up the
functions it checks in `sys.modules["__main__"]` and, not finding them in this module, would warn on every call and
check nothing (`espnet2.bin.tokenize_text`, 5 calls per asr.sh run).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import runpy
import sys
from argparse import Namespace
from typing import Iterator, List, Optional, Sequence

import espnet_bertkd  # noqa: F401  (registers the plugin once ESPnet's ASR task is imported)
from espnet_bertkd.compat import LIGHTNING_TRAIN

USAGE = "usage: python -m espnet_bertkd.launch (-m MODULE | SCRIPT.py) [ARGS...]"


@contextlib.contextmanager
def _progress_to_stderr() -> Iterator[None]:
    """Show the preflight's INFO messages (ESPnet configures logging only later, in its worker; a handler left on
    the root logger would make its logging.basicConfig a no-op, so this one is removed again)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s (espnet_bertkd) %(levelname)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def preflight(module: str, argv: Sequence[str]) -> List[str]:
    """Checks that must fail before ESPnet builds anything or reads any data (ASR training, by ESPnet's trainer or its
    Lightning trainer with `--task asr`; see espnet_bertkd.tasks.preflight). Returns options to append to ESPnet's
    command line (what the preflight resolved, e.g. the teacher's vocabulary size, for ESPnet to save in
    config.yaml)."""
    if "--print_config" in argv:
        return []
    try:
        args = parse_asr_training_args(module, list(argv))
    except SystemExit:
        return []  # ESPnet itself reports the bad command line
    if args is None:
        return []
    from espnet_bertkd.tasks.preflight import check_lightning_args, run_preflight

    with _progress_to_stderr():
        if module == LIGHTNING_TRAIN:
            check_lightning_args(args)
        return run_preflight(args)


def parse_asr_training_args(module: str, argv: List[str]) -> Optional[Namespace]:
    """The ASR training options as the trainer will parse them; None for any other module (or Lightning task)."""
    from espnet2.tasks.asr import ASRTask

    if module == "espnet2.bin.asr_train":
        return ASRTask.get_parser().parse_args(argv)
    if module != LIGHTNING_TRAIN:
        return None
    # lightning_train parses --task first, then the rest with the task's parser plus its own options
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task")
    known, rest = task.parse_known_args(argv)
    if known.task != "asr":
        return None
    from espnet2.bin.lightning_train import get_parser

    return get_parser(ASRTask).parse_args(rest)


def run_module(module: str, argv: Sequence[str]) -> None:
    try:
        argv = list(argv) + preflight(module, argv)
    except (ValueError, OSError) as e:  # bad config or data: the message says what and how to fix it
        sys.exit(f"{module}: not started, the preflight refused the run ({type(e).__name__}):\n{e}")
    sys.argv = [module] + list(argv)
    runpy.run_module(module, run_name="__main__", alter_sys=not spawns_workers(module))


def spawns_workers(module: str) -> bool:
    """ESPnet modules that may start worker processes which must register the plugin (`*_train`, `launch`)."""
    return module.endswith("_train") or module == "espnet2.bin.launch"


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "-m":
        run_module(argv[1], argv[2:])
    elif argv and argv[0].endswith(".py"):
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
    else:
        sys.exit(USAGE)


if __name__ == "__main__":
    main()
