r"""Write ESPnet's LM training text (`<id> <words>` per line), as asr.sh builds data/lm_train.txt.

    python -m espnet_bertkd.recipe.bin.prepare_lm_text --output data/lm_train.txt \
        --text data/train_960/text --lm_text downloads/librispeech-lm-norm.txt.gz

Kaldi `text` files (--text) come first with their ids; plain LM text files (--lm_text, `.gz` allowed) get ids
<id_prefix><line number>. Whitespace is collapsed and lines without words dropped.
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.recipe.librispeech import prepare_lm_text
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="data/lm_train.txt")
    p.add_argument("--text", action="append", default=[], help="Kaldi text file (with ids); repeatable")
    p.add_argument("--lm_text", action="append", default=[], help="plain text, one sentence a line; repeatable")
    p.add_argument("--id_prefix", default="librispeech_lng_")
    p.add_argument("--case", choices=["upper", "lower"], default=None, help="fold case (default: keep)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if not args.text and not args.lm_text:
        sys.exit("prepare_lm_text: give at least one --text or --lm_text")
    try:
        n = prepare_lm_text(args.output, args.lm_text, args.text, args.id_prefix, args.case)
    except DataError as e:
        sys.exit(f"prepare_lm_text: {e}")
    print(f"wrote {args.output} ({n} lines)")


if __name__ == "__main__":
    main(sys.argv[1:])
