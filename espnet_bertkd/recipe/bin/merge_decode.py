r"""Merge the decode directories of N jobs into one (1best_recog/* by key, speed.json summed).

    python -m espnet_bertkd.recipe.bin.merge_decode --nj 4 exp/ctc/decode_greedy/test_clean/split/output.JOB \
        exp/ctc/decode_greedy/test_clean
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.recipe.decode_jobs import merge_decode_dirs
from espnet_bertkd.utils.fileio import DataError
from espnet_bertkd.recipe.scp import job_paths


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("jobs", help="the jobs' output directories, with JOB")
    p.add_argument("output_dir")
    args = p.parse_args(argv)
    try:
        n = merge_decode_dirs(job_paths(args.jobs, args.nj), args.output_dir)
    except (DataError, ValueError) as e:
        sys.exit(f"merge_decode: {e}")
    print(f"{args.output_dir}: {n} utterances from {args.nj} jobs")


if __name__ == "__main__":
    main(sys.argv[1:])
