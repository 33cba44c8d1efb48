"""Split a key file into N consecutive parts for N jobs (Kaldi's utils/split_scp.pl), or merge the jobs' outputs.

    python -m espnet_bertkd.recipe.bin.split_scp --nj 8 data/test_clean/wav.scp exp/x/logdir/keys.JOB.scp
    python -m espnet_bertkd.recipe.bin.split_scp --merge --nj 8 exp/x/logdir/output.JOB/1best_recog/text exp/x/1best_recog/text

Split: parts differ in size by at most one line, order kept. Merge: concatenates and sorts by key (C order);
a key written by two jobs is an error naming both.
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.utils.fileio import DataError
from espnet_bertkd.recipe.scp import job_paths, merge_scp, split_scp


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("--merge", action="store_true", help="merge SOURCE pattern (with JOB) into TARGET")
    p.add_argument("source", help="split: the key file; merge: the jobs' files, with JOB")
    p.add_argument("target", help="split: the parts, with JOB; merge: the merged file")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        if args.merge:
            n = merge_scp(job_paths(args.source, args.nj), args.target)
            print(f"wrote {args.target} ({n} lines from {args.nj} jobs)")
        else:
            sizes = split_scp(args.source, job_paths(args.target, args.nj))
            print(f"split {args.source} into {args.nj} parts of {min(sizes)}-{max(sizes)} lines")
    except (DataError, ValueError) as e:
        sys.exit(f"split_scp: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
