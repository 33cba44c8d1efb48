#!/usr/bin/env python3
"""Word lists of the generated corpus, for the tools that report by kind of word: the homophone groups (one group
per line) and the words that occur only in the text-only part (one per line), from its corpus_info.json.

    local/word_lists.py downloads/homophones/corpus_info.json data/local

Used by `teacher_accuracy --subset homophones=data/local/homophones.txt` (asr.sh --teacher_subsets).
"""
import json
import sys
from pathlib import Path

from espnet_bertkd.utils.fileio import atomic_write_text


def main(info_path: str, out_dir: str) -> None:
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    out = Path(out_dir)
    atomic_write_text(out / "homophones.txt", "".join(" ".join(g) + "\n" for g in info["homophone_sets"]))
    atomic_write_text(out / "lm_only_words.txt", "".join(w + "\n" for w in info["lm_only_words"]))
    print(f"wrote {out / 'homophones.txt'} ({len(info['homophone_sets'])} groups) and {out / 'lm_only_words.txt'} "
          f"({len(info['lm_only_words'])} words)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
