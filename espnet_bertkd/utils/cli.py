"""Options every entry point spells the same way (ESPnet's `true`/`false` booleans)."""
from __future__ import annotations

import argparse


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    """`--overwrite true|false` (default false): the only way to let a tool replace a directory it did not make
    (espnet_bertkd.utils.fileio.check_output_dir). Parsed by ESPnet's str2bool, as ESPnet's own options."""
    from espnet2.utils.types import str2bool  # light: no torch

    parser.add_argument("--overwrite", type=str2bool, default=False, metavar="true|false",
                        help=f"true: replace {what} (default false: refuse it, nothing is lost)")
