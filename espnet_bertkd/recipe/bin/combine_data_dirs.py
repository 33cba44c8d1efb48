r"""Combine data directories into one (Kaldi's utils/combine_data.sh), e.g. train_960 or dev for LibriSpeech.

    python -m espnet_bertkd.recipe.bin.combine_data_dirs data/train_960 data/train_clean_100 data/train_clean_360 \
        data/train_other_500

Tables present in every source are merged and sorted, spk2utt is rebuilt, and the result is validated; an
utterance id found in two sources is an error naming both. `--first N` keeps the first N utterances in sorted order
(Kaldi's subset_data_dir.sh --first); `--subset N` keeps N utterances evenly spaced through them (Kaldi's
subset_data_dir.sh N), e.g. a smaller training set with every speaker:

    python -m espnet_bertkd.recipe.bin.combine_data_dirs data/train_clean_1250 data/train_clean --subset 1250
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.recipe.datadir import combine_data_dirs
from espnet_bertkd.utils.cli import add_overwrite
from espnet_bertkd.utils.fileio import DataError


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output")
    p.add_argument("sources", nargs="+")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--first", type=int, default=None, help="keep the first N utterances (sorted) only")
    which.add_argument("--subset", type=int, default=None, help="keep N utterances evenly spaced (sorted)")
    add_overwrite(p, "OUTPUT when it exists and was not made by combine_data_dirs")
    args = p.parse_args(argv)
    try:
        utts, speakers = combine_data_dirs(args.sources, args.output, first=args.first, subset=args.subset,
                                           overwrite=args.overwrite)
    except DataError as e:
        sys.exit(f"combine_data_dirs: {e}")
    print(f"{args.output}: {utts} utterances, {speakers} speakers from {len(args.sources)} directories")


if __name__ == "__main__":
    main(sys.argv[1:])
