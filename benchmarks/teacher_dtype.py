"""How far a teacher's soft labels move when it runs in bfloat16 (or float16) instead of float32.

    python benchmarks/teacher_dtype.py --teacher egs/homophones/asr1/exp/teacher \
        --text egs/homophones/asr1/data/dev_clean/text [--topk 8 --temperature 3.0] [--device cuda] [--dtype bfloat16]

Both runs score the same transcripts (Kaldi `text`: id, then words) with the same top-k and temperature; per
teacher token it compares the top-1 id, the top-k id sets and the two top-k distributions (total variation over the
union of their ids). Used to decide whether the online teacher may default to bfloat16 (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
from typing import List

import numpy as np

from espnet_bertkd.kd.teacher import MaskedLMTeacher
from espnet_bertkd.kd.teacher_config import TEACHER_DTYPES, TeacherConfig
from espnet_bertkd.utils.fileio import read_pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="masked-LM directory (or hub id)")
    p.add_argument("--text", required=True, help="Kaldi text file whose transcripts are scored")
    p.add_argument("--utterances", type=int, default=200)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16", choices=[d for d in TEACHER_DTYPES if d != "float32"])
    args = p.parse_args()

    texts = [text for _, text in read_pairs(args.text)][: args.utterances]
    labels = {}
    for dtype in ("float32", args.dtype):
        config = TeacherConfig(model=args.teacher, topk=args.topk, temperature=args.temperature, dtype=dtype)
        labels[dtype] = MaskedLMTeacher(config, device=args.device).soft_labels(texts)

    top1: List[bool] = []
    overlap: List[float] = []
    variation: List[float] = []
    for ref, low in zip(labels["float32"], labels[args.dtype]):
        for i in range(len(ref.token_ids)):
            a = dict(zip(ref.topk_ids[i].tolist(), ref.topk_probs[i].tolist()))
            b = dict(zip(low.topk_ids[i].tolist(), low.topk_probs[i].tolist()))
            top1.append(int(ref.topk_ids[i, 0]) == int(low.topk_ids[i, 0]))
            overlap.append(len(a.keys() & b.keys()) / len(a))
            variation.append(0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys()))
    print(f"teacher {args.teacher} on {args.device}, {len(texts)} transcripts, {len(top1)} teacher tokens, "
          f"top-{args.topk}, temperature {args.temperature}: {args.dtype} against float32")
    print(f"top-1 id the same:           {np.mean(top1):.4f}")
    print(f"top-k id sets, mean overlap: {np.mean(overlap):.4f}")
    print(f"total variation, mean / median / max: {np.mean(variation):.4f} / {np.median(variation):.4f} / "
          f"{np.max(variation):.4f}")


if __name__ == "__main__":
    main()
