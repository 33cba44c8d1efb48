"""Generate the synthetic LibriSpeech-style corpus (eSpeak NG speech + LM text).

    python local/make_corpus.py --output_dir downloads/synth [--size smoke|default] [--seed 0] \
        [--num_train N --num_dev N --num_test N --num_dev_other N --num_test_other N] [--lm_ratio 20] \
        [--voices narrow|wide] [--nj 2]

Writes <output_dir>/{train-clean,dev-clean,test-clean,...}/<speaker>/<chapter>/*.flac + *.trans.txt, SPEAKERS.TXT,
lm_text.txt and corpus_info.json. Re-running with the same options is a no-op (and resumes an interrupted run);
other options into the same directory are refused. See homophones.
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from homophones import PRESETS, CorpusOptionsError, make_corpus
from homophones.config import CorpusConfig
from homophones.voices import VOICE_SETS


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--size", default="default", choices=sorted(PRESETS), help="size preset; options below override it")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    for name in ("num_train", "num_dev", "num_test", "num_dev_other", "num_test_other"):
        p.add_argument(f"--{name}", type=int, default=None, help="utterances (default: from --size)")
    p.add_argument("--lm_ratio", type=float, default=None, help="LM-text words / paired-text words (default 20)")
    p.add_argument("--lm_only_fraction", type=float, default=None,
                   help="share of open-class words kept out of the paired training text (default 0.1)")
    for name in ("train_utts_per_speaker", "eval_utts_per_speaker", "utts_per_chapter"):
        p.add_argument(f"--{name}", type=int, default=None)
    p.add_argument("--voices", default=None, choices=sorted(VOICE_SETS),
                   help="accents and voice variants to draw speakers from (default narrow; see corpus/voices.py)")
    p.add_argument("--nj", type=int, default=os.cpu_count() or 1, help="synthesis processes")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--log_level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    overrides = {f: getattr(args, f) for f in CorpusConfig.__dataclass_fields__ if hasattr(args, f)}
    return PRESETS[args.size].replace(**overrides)


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        info = make_corpus(args.output_dir, config_from_args(args), nj=args.nj, progress=not args.no_progress)
    except CorpusOptionsError as e:
        sys.exit(f"error: {e}")
    for name, s in info["sets"].items():
        logging.info("%-12s %5d utts %3d speakers %6.2f h %7d words", name, s["utterances"], s["speakers"],
                     s["hours"], s["words"])
    lm = info["lm_text"]
    logging.info("%-12s %5d sentences %d words (%.1fx the paired text)", "lm_text", lm["sentences"], lm["words"],
                 lm["ratio_to_paired_words"])
    logging.info("corpus ready in %s (generation took %.1f s)", args.output_dir, info.get("generation_seconds", 0.0))


if __name__ == "__main__":
    main(sys.argv[1:])
