r"""Speed-perturbed copies of a Kaldi data directory (ESPnet's --speed_perturb_factors), written as FLAC files.

    python -m espnet_bertkd.recipe.bin.perturb_speed --src data/train --dst data/train_sp \
        --audio_dir dump/audio/train_sp --factors "0.9 1.0 1.1" --nj 8 --job J     # J = 1..8, in parallel
    python -m espnet_bertkd.recipe.bin.perturb_speed --src data/train --dst data/train_sp \
        --audio_dir dump/audio/train_sp --factors "0.9 1.0 1.1" --nj 8 --finalise  # once all jobs are done

Without --job or --finalise every job runs here, then the finalise. Job J writes the copies of its share of the
utterances (factor F: AUDIO_DIR/spF/<speaker>/spF-<utt>.flac, the waveform resampled by F at the same sample rate:
pitch and tempo change together, as `sox speed F`); a re-run keeps the files already complete. --finalise checks
that every file exists and writes DST: the source's utterances under their own ids (factor 1: the same wav.scp
entries) and `spF-<utt>` of speaker `spF-<spk>` for the other factors, with the same text, sorted as Kaldi sorts,
then validates it. A `segments` file in SRC is refused (not supported yet). See espnet_bertkd.recipe.speed_perturb.
"""
import argparse
import logging
import sys
from typing import List, Optional

from espnet_bertkd.recipe.speed_perturb import finalise, parse_factors, run_job
from espnet_bertkd.utils.cli import add_overwrite
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source Kaldi data directory (wav.scp, text, utt2spk, spk2utt)")
    p.add_argument("--dst", required=True, help="output data directory, e.g. data/train_sp (replaced whole)")
    p.add_argument("--audio_dir", required=True, help="where the perturbed FLAC files go")
    p.add_argument("--factors", default="0.9 1.0 1.1", help="speed factors, space separated (1.0: the source)")
    p.add_argument("--nj", type=int, default=1, help="number of jobs the utterances are split into")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--job", type=int, default=None, help="run only this job (1-based)")
    which.add_argument("--finalise", action="store_true", help="write --dst once every job is done")
    p.add_argument("--num_threads", type=int, default=1,
                   help="torch threads per job (the jobs already run in parallel)")
    add_overwrite(p, "a --dst directory that perturb_speed did not make")
    p.add_argument("--log_level", default="INFO")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    if args.nj < 1 or (args.job is not None and not 1 <= args.job <= args.nj):
        sys.exit(f"perturb_speed: --job must be in 1..--nj ({args.nj}), got {args.job}" if args.nj >= 1 else
                 f"perturb_speed: --nj must be at least 1, got {args.nj}")
    import torch

    torch.set_num_threads(args.num_threads)
    try:
        factors = parse_factors(args.factors)
        if not args.finalise:
            for job in [args.job] if args.job is not None else range(1, args.nj + 1):
                run_job(args.src, args.dst, args.audio_dir, factors, args.nj, job, args.overwrite)
        if args.finalise or args.job is None:
            utts, speakers = finalise(args.src, args.dst, args.audio_dir, factors, args.nj, args.overwrite)
            print(f"{args.dst}: {utts} utterances, {speakers} speakers (factors {args.factors} of {args.src})")
    except DataError as e:
        sys.exit(f"perturb_speed: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
