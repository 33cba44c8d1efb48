r"""Homophone errors of decodings: how many reference homophones each decoding got right, and how many it wrote as
another word that sounds the same (the errors only context can fix), next to the accuracy on the words seen only in
the text-only part (LM-only) and on every other word.

    python local/homophone_errors.py --ref data/test_clean/text \
        [--corpus_info downloads/homophones/corpus_info.json] \
        exp/ctc/decode_greedy/test_clean exp/ctc/decode_beam_lm/test_clean exp/inter_aed_kd/decode_greedy/test_clean

Reads each DECODE_DIR/1best_recog/text. The homophone groups and LM-only words are the generated corpus' own
(`homophone_sets` and `lm_only_words` of its corpus_info.json); without --corpus_info the generator's homophone
groups are used and no word counts as LM-only. Prints a Markdown table, one row per decoding.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from homophones.lexicon import HOMOPHONE_SETS
from homophones.errors import count_homophone_errors, percent
from espnet_bertkd.recipe.score import score_texts
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="reference Kaldi text (data/<set>/text)")
    p.add_argument("--corpus_info", default=None, help="the corpus' corpus_info.json (homophone groups, LM-only words)")
    p.add_argument("decode_dirs", nargs="+", help="decoding directories holding 1best_recog/text")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    groups, lm_only = HOMOPHONE_SETS, ()
    if args.corpus_info:
        with open(args.corpus_info, encoding="utf-8") as f:
            info = json.load(f)
        groups, lm_only = info["homophone_sets"], info["lm_only_words"]
    print("| decoding | homophones | correct (%) | confused within group (%) | LM-only words | correct (%) "
          "| other words correct (%) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for decode_dir in args.decode_dirs:
        try:
            _, utts = score_texts(args.ref, Path(decode_dir) / "1best_recog" / "text")
        except DataError as e:
            sys.exit(f"homophone_errors: {e}")
        c = count_homophone_errors(utts, groups, lm_only)
        print(f"| {decode_dir} | {c.homophones} | {percent(c.homophones_correct, c.homophones):.1f} | "
              f"{percent(c.homophones_confused, c.homophones):.1f} | {c.lm_only} | "
              f"{percent(c.lm_only_correct, c.lm_only):.1f} | {percent(c.others_correct, c.others):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
