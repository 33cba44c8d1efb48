r"""Summarise a multi-seed benchmark: summary.json, RESULTS.md and plots (homophones.evidence).

    python local/evidence_summary.py --root evidence/exp --data_dir data --seeds 0 1 2 \
        --systems ctc/greedy ctc/beam_lm aed/greedy final_aed_kd/greedy inter_aed_kd/greedy \
        --test_sets dev_clean test_clean \
        --compare inter_aed_kd/greedy:ctc/greedy inter_aed_kd/greedy:aed/greedy ... \
        [--corpus_info downloads/homophones/corpus_info.json] \
        [--train_text data/train_clean/text --sizes 0.5=evidence/exp/size0.5 ...] \
        --output_dir evidence [--command "..."] [--wall_seconds S]

ROOT/seed<S>/<system>/decode_<decoding>/<set>/ holds each decoding. --compare A:B adds a paired bootstrap of A
against B. --sizes FRACTION=ROOT adds the KD gain (inter_aed_kd/greedy against aed/greedy) of systems trained on
that fraction of the paired data (round(FRACTION x the lines of --train_text) utterances), beside the full size
(ROOT itself). Writes OUTPUT_DIR/summary.json, RESULTS.md, wer_vs_rtf.png and, with --sizes, data_size.png.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from homophones.evidence import (collect, plot_data_size, plot_wer_vs_rtf, render_markdown, summarise,
                                         word_errors, write_summary)
from espnet_bertkd.utils.fileio import DataError, atomic_write_text, read_table

KD, AED = "inter_aed_kd/greedy", "aed/greedy"


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="holds seed<S>/ directories")
    p.add_argument("--data_dir", default="data", help="holds <set>/text")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--systems", nargs="+", required=True, help="<system>/<decoding> rows, in this order")
    p.add_argument("--test_sets", nargs="+", required=True)
    p.add_argument("--compare", nargs="*", default=[], metavar="A:B", help="paired tests of A against B")
    p.add_argument("--corpus_info", default=None, help="corpus_info.json: word errors by kind")
    p.add_argument("--train_text", default=None, help="the full paired training text (for --sizes)")
    p.add_argument("--sizes", nargs="*", default=[], metavar="FRACTION=ROOT")
    p.add_argument("--size_seeds", type=int, nargs="+", default=None,
                   help="the seeds trained at every paired-data size (default: --seeds); the full-data row "
                        "uses them too")
    p.add_argument("--samples", type=int, default=10000, help="bootstrap samples")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--command", default=None, help="the command that made the runs (recorded)")
    p.add_argument("--wall_seconds", type=float, default=None, help="their wall time (recorded)")
    p.add_argument("--default_run_seconds", type=float, default=None,
                   help="the part of --wall_seconds spent in the recipe's default run (recorded)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    out = Path(args.output_dir)
    try:
        comparisons = []
        for item in args.compare:
            a, sep, b = item.partition(":")
            if not sep:
                raise DataError(f"--compare expects A:B, not {item!r}")
            comparisons.append((a, b))
        results = collect(args.root, args.data_dir, args.seeds, args.systems, args.test_sets)
        summary = summarise(results, args.seeds, comparisons, args.samples)
        if args.corpus_info:
            info = json.loads(Path(args.corpus_info).read_text(encoding="utf-8"))
            summary["word_errors"] = word_errors(results, info["homophone_sets"], info["lm_only_words"])
        if args.sizes:
            if not args.train_text:
                raise DataError("--sizes needs --train_text (the full paired training text)")
            full = len(read_table(args.train_text))
            size_seeds = args.size_seeds or args.seeds
            at_full = results if size_seeds == args.seeds else collect(args.root, args.data_dir, size_seeds,
                                                                       [AED, KD], args.test_sets)
            sizes = {"1.0": (at_full, full)}
            for item in args.sizes:
                fraction, sep, root = item.partition("=")
                if not sep:
                    raise DataError(f"--sizes expects FRACTION=ROOT, not {item!r}")
                sizes[str(float(fraction))] = (collect(root, args.data_dir, size_seeds, [AED, KD], args.test_sets),
                                               round(float(fraction) * full))
            summary["data_size"] = {}
            for fraction, (res, utterances) in sizes.items():
                gain = summarise(res, size_seeds, [(KD, AED)], args.samples)
                summary["data_size"][fraction] = {
                    "utterances": utterances, "seeds": list(size_seeds),
                    "aed": {t: gain["systems"][AED][t] for t in args.test_sets},
                    "inter_aed_kd": {t: gain["systems"][KD][t] for t in args.test_sets},
                    "gain": gain["tests"]["inter_aed_kd-vs-aed"],
                }
    except DataError as e:
        sys.exit(f"evidence_summary: {e}")
    summary.update(command=args.command, commit=git_commit(), wall_seconds=args.wall_seconds,
                   default_run_seconds=args.default_run_seconds)
    write_summary(summary, out / "summary.json")
    plot = plot_wer_vs_rtf(summary, args.test_sets[-1], out / "wer_vs_rtf.png")
    if args.sizes:
        plot_data_size(summary, args.test_sets[-1], out / "data_size.png")
    markdown = render_markdown(summary, args.test_sets, plot.name)
    if args.sizes:
        markdown += "\n![KD gain vs paired data](data_size.png)\n"
    atomic_write_text(out / "RESULTS.md", markdown)
    print(f"wrote {out / 'summary.json'}, {out / 'RESULTS.md'} and plots")


if __name__ == "__main__":
    main(sys.argv[1:])
