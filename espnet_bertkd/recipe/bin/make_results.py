r"""Collect scored decodings into RESULTS.md and results.png (WER vs real-time factor).

    python -m espnet_bertkd.recipe.bin.make_results --exp_dir exp [--output_dir exp] [--systems ctc interctc ...] \
        [--decodings greedy beam10+LM] [--test_sets dev_clean test_clean ...] [--params ctc=26430000 ...] \
        [--teacher_accuracy exp/teacher_accuracy.json]

Reads EXP_DIR/<system>/decode_<decoding>/<test_set>/{result.json,speed.json} and EXP_DIR/<system>/params.json
(or EXP_DIR/<system>/decode_<decoding>/params.json), {"params": N}. One row per system / decoding, one WER column
per test set, then RTF, utt/s and parameters. --params SYSTEM[/DECODING]=N overrides the files.
"""
import argparse
import shlex
import sys
from typing import Dict, List, Optional

from espnet_bertkd.recipe.results import make_results
from espnet_bertkd.utils.fileio import DataError


def parse_params(items: List[str]) -> Dict[str, int]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"make_results: --params expects SYSTEM[/DECODING]=N, not {item!r}")
        params[key] = int(float(value))
    return params


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", default="exp")
    p.add_argument("--output_dir", default=None, help="default: EXP_DIR")
    p.add_argument("--systems", nargs="+", default=None, help="rows to include, in this order")
    p.add_argument("--decodings", nargs="+", default=None, help="decodings to include, in this order")
    p.add_argument("--test_sets", nargs="+", default=None, help="WER columns, in this order")
    p.add_argument("--params", nargs="+", default=[], help="SYSTEM[/DECODING]=N parameter counts")
    p.add_argument("--teacher_accuracy", default=None, help="teacher_accuracy's JSON, quoted in the header")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = get_parser().parse_args(argv)
    command = "python -m espnet_bertkd.recipe.bin.make_results " + shlex.join(argv)
    try:
        md, png = make_results(args.exp_dir, args.output_dir, args.systems, args.decodings, args.test_sets,
                               parse_params(args.params), command=command.strip(),
                               teacher_accuracy=args.teacher_accuracy)
    except DataError as e:
        sys.exit(f"make_results: {e}")
    print(f"wrote {md}" + (f" and {png}" if png else " (no plot: no decoding has a speed.json)"))


if __name__ == "__main__":
    main()
