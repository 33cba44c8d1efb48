r"""Top-1 accuracy of the teacher on the transcripts it labelled, read from the cached soft labels.

    python -m espnet_bertkd.bin.teacher_accuracy --soft_labels dump/kd/dev_clean --text data/dev_clean/text \
        [--teacher exp/teacher] [--subset homophones=data/local/homophones.txt ...] [--output FILE.json]

For every teacher token of every transcript: is the teacher's most probable token (with that token masked) the
token itself? A --subset NAME=FILE (words separated by spaces or lines) adds the accuracy on those words, counted
per word. The teacher's tokenizer (default: the `teacher` recorded in the soft labels' kd_meta.json) locates them.
Prints one line and writes the counts to --output as JSON.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import kaldiio

from espnet_bertkd.kd.soft_labels import KD_TOKEN, read_meta
from espnet_bertkd.kd.teacher_accuracy import format_summary, read_transcripts, read_word_list, teacher_accuracy
from espnet_bertkd.utils.fileio import DataError, atomic_write_text


def parse_subsets(items: List[str]) -> Dict[str, List[str]]:
    subsets = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--subset expects NAME=FILE, not {item!r}")
        subsets[name] = read_word_list(path)
    return subsets


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soft_labels", required=True, help="directory of kd_token.scp (extract_soft_labels' output)")
    p.add_argument("--text", required=True, help="the transcripts the soft labels were made from")
    p.add_argument("--teacher", default=None, help="teacher (tokenizer) directory or hub id; default: kd_meta.json's")
    p.add_argument("--subset", action="append", default=[], metavar="NAME=FILE", help="words to report apart")
    p.add_argument("--output", default=None, help="write the counts here as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    directory = Path(args.soft_labels)
    scp = directory / f"{KD_TOKEN}.scp"
    try:
        if not scp.is_file():
            raise DataError(f"{scp}: no such file (run espnet_bertkd.bin.extract_soft_labels first)")
        teacher = args.teacher or (read_meta(directory) or {}).get("teacher")
        if not teacher:
            raise DataError(f"{directory}/kd_meta.json names no teacher: pass --teacher")
        subsets = parse_subsets(args.subset)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(teacher)
        result = teacher_accuracy(
            kaldiio.load_scp_sequential(str(scp)), read_transcripts(args.text),
            lambda word: tokenizer(word, add_special_tokens=False)["input_ids"], subsets, source=str(scp),
        )
    except DataError as e:
        sys.exit(f"teacher_accuracy: {e}")
    summary = format_summary(result, f"teacher {teacher} on {args.text}")
    if args.output:
        atomic_write_text(args.output, json.dumps({**result.to_dict(), "teacher": teacher, "text": args.text,
                                                   "summary": summary}, indent=2) + "\n")
    print(summary)


if __name__ == "__main__":
    main(sys.argv[1:])
