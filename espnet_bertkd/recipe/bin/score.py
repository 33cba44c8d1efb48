r"""Score a decoding with jiwer (WER, S/D/I/hits, sentence error rate), in place of asr.sh's sclite scoring.

    python -m espnet_bertkd.recipe.bin.score --ref data/test_clean/text --decode_dir exp/ctc/decode_greedy/test_clean \
        [--hyp PATH] [--allow_missing] [--ignore_case]

Reads DECODE_DIR/1best_recog/text (or --hyp) and writes DECODE_DIR/result.json and DECODE_DIR/result.txt.
An utterance of the reference without hypothesis is an error (named) unless --allow_missing, which scores it as
deletions; empty hypotheses are fine.
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.recipe.score import score_decode_dir
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="reference Kaldi text (data/<set>/text)")
    p.add_argument("--decode_dir", required=True, help="where result.json/result.txt are written")
    p.add_argument("--hyp", default=None, help="hypothesis text (default: DECODE_DIR/1best_recog/text)")
    p.add_argument("--allow_missing", action="store_true", help="score missing hypotheses as deletions")
    p.add_argument("--ignore_case", action="store_true", help="compare words case-insensitively")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        r = score_decode_dir(args.decode_dir, args.ref, args.hyp, args.allow_missing, args.ignore_case)
    except DataError as e:
        sys.exit(f"score: {e}")
    print(f"{args.decode_dir}: WER {r.wer:.2f}% ({r.errors}/{r.words}: {r.substitutions} sub, {r.deletions} del, "
          f"{r.insertions} ins), CER {r.cer:.2f}%, SER {r.ser:.2f}% over {r.sentences} sentences"
          + (f", {len(r.missing)} missing" if r.missing else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
