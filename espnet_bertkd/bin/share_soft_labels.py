"""Give speed-perturbed copies their source utterance's soft labels (same transcript: extracted once).

    python -m espnet_bertkd.bin.share_soft_labels --src_dir dump/kd/train --text data/train_sp/text \
        --output_dir dump/kd/train_sp

Each utterance of --text is looked up in --src_dir under its own id or, failing that, without ESPnet's
`sp<factor>-` prefix (`sp0.9-X` -> `X`). The written kd_token.scp / kd_prob.scp point at the source's ark offsets
(nothing is copied), kd_text.hash holds the source's lines and kd_meta.json is the source's, so the training
preflight checks --output_dir with --text as it checks an extraction. An utterance with no source, or whose
transcript differs from the one its source was labelled from, is refused by name. Re-run it after the source set
is re-extracted (asr.sh stage 4 always does): it rewrites --output_dir whole. See
espnet_bertkd.kd.soft_labels.share_soft_labels.
"""
import argparse
import logging
import sys
from typing import List, Optional

from espnet_bertkd.kd.soft_labels import share_soft_labels
from espnet_bertkd.utils.cli import add_overwrite


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src_dir", required=True, help="soft labels of the source set (extract_soft_labels' output)")
    p.add_argument("--text", required=True, help="the copies' text, e.g. data/train_sp/text")
    p.add_argument("--output_dir", required=True, help="where the shared soft labels go, e.g. dump/kd/train_sp")
    add_overwrite(p, "an --output_dir that share_soft_labels did not make")
    p.add_argument("--log_level", default="INFO")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        n = share_soft_labels(args.src_dir, args.text, args.output_dir, overwrite=args.overwrite)
    except ValueError as e:  # DataError too: a bad table
        sys.exit(f"share_soft_labels: {e}")
    print(f"{args.output_dir}: soft labels of {n} utterances, shared from {args.src_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
