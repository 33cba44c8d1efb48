"""Train a small BERT teacher from scratch on a text corpus, or fine-tune an existing masked LM (`--init`).

    python -m espnet_bertkd.bin.train_teacher --text data/lm_train.txt --output_dir exp/teacher \
        [--init bert-base-uncased | --vocab_size 2000 --hidden_size 256 --num_layers 4 --num_heads 4] \
        [--epochs 3 --batch_size 64 --lr 5e-4 --device cpu]

Writes a Hugging Face model directory (usable as `teacher.model`) and OUTPUT_DIR/training.json with the epoch
losses and the held-out masked-token accuracy.
"""
import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_bertkd.kd.train_teacher import TeacherTraining, train_masked_lm
from espnet_bertkd.utils.cli import add_overwrite
from espnet_bertkd.utils.fileio import DataError, atomic_write_text


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, help="one sentence per line")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--init", default=None, help="masked LM to fine-tune (hub id or directory); default: from scratch")
    for field in dataclasses.fields(TeacherTraining):
        p.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
    add_overwrite(p, "an --output_dir that train_teacher did not make (e.g. an ASR experiment)")
    p.add_argument("--log_level", default="INFO")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    options = TeacherTraining(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TeacherTraining)})
    try:
        summary = train_masked_lm(args.text, args.output_dir, options, init=args.init, overwrite=args.overwrite)
    except DataError as e:  # bad input or output directory: before any training
        sys.exit(f"train_teacher: {e}")
    summary["options"] = dataclasses.asdict(options)
    summary["init"] = args.init
    atomic_write_text(Path(args.output_dir) / "training.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("epoch_losses", "valid_masked_accuracy")}))


if __name__ == "__main__":
    main(sys.argv[1:])
