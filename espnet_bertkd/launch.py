"""Run an ESPnet module or script with the plugin registered.

    python -m espnet_bertkd.launch -m espnet2.bin.asr_train --config conf/train.yaml ...
    python -m espnet_bertkd.launch path/to/script.py ARGS...

This is the hook for ESPnet's own `asr.sh`: with `--python "python -m espnet_bertkd.launch"` every
`${python} -m espnet2.bin.X` it runs sees `model: bertkd`. The module runs as `__main__` while this module stays
the process's main module, so DDP workers (spawned, they re-import the main module) register the plugin too.
"""
from __future__ import annotations

import runpy
import sys
from typing import List, Optional, Sequence

import espnet_bertkd  # noqa: F401  (registers the plugin)

USAGE = "usage: python -m espnet_bertkd.launch (-m MODULE | SCRIPT.py) [ARGS...]"


def preflight(module: str, argv: Sequence[str]) -> None:
    """Checks that must fail before ESPnet reads any data (training only)."""
    if module != "espnet2.bin.asr_train" or "--print_config" in argv:
        return
    from espnet2.tasks.asr import ASRTask

    from espnet_bertkd.tasks.asr import check_training_args

    try:
        args = ASRTask.get_parser().parse_args(list(argv))
    except SystemExit:
        return  # ESPnet itself reports the bad command line
    check_training_args(args)


def run_module(module: str, argv: Sequence[str]) -> None:
    preflight(module, argv)
    sys.argv = [module] + list(argv)
    runpy.run_module(module, run_name="__main__", alter_sys=False)


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
