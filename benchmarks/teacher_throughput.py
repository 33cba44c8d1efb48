"""Soft-label extraction throughput (teacher tokens scored per second), and the projected cost for LibriSpeech 960 h.

    python benchmarks/teacher_throughput.py [--device cpu] [--sizes small,base] [--repeats 3]

Teachers are random-weight BertForMaskedLM models with a BERT-base vocabulary size (30522) so the output layer
costs what it costs in practice: `small` = 4 layers x 256, `base` = 12 layers x 768 (bert-base-uncased's shape).
Each transcript of ~35 WordPiece tokens needs 35 masked copies, as in extract_soft_labels.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch

from espnet_bertkd.kd.build_teacher import build_bert
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.teacher import MaskedLMTeacher

SIZES = {"small": dict(hidden_size=256, num_layers=4, num_heads=4), "base": dict(hidden_size=768, num_layers=12,
                                                                                  num_heads=12)}
LIBRISPEECH_UTTS, LIBRISPEECH_TOKENS_PER_UTT = 281_241, 35
WORDS = ("the a of to and in that he was it his for with as had you not be her is but at on my by which this "
         "have from they she all so were there their then one would when him out could what been them said no into "
         "night knight right write sea see two too four for eye i hear here son sun").split()


def sentences(n: int, words: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--sizes", default="small,base")
    p.add_argument("--utterances", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    texts = sentences(args.utterances, words=33)
    print(f"device={args.device} dtype={args.dtype} torch_threads={torch.get_num_threads()} "
          f"utterances={args.utterances} repeats={args.repeats}")
    print(f"{'teacher':8s} {'params':>11s} {'tokens':>7s} {'median s':>9s} {'tokens/s':>9s} "
          f"{'LibriSpeech 960h (h)':>21s}")
    for size in args.sizes.split(","):
        directory = build_bert(sentences(400, 12, seed=1), tempfile.mkdtemp(), vocab_size=400,
                               max_position_embeddings=512, model_vocab_size=30522, **SIZES[size])
        teacher = MaskedLMTeacher(TeacherConfig(model=directory, dtype=args.dtype), device=args.device)
        tokens = sum(len(teacher.tokenize(t)) for t in texts)
        teacher.soft_labels(texts[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            teacher.soft_labels(texts)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        rate = tokens / med
        hours = LIBRISPEECH_UTTS * LIBRISPEECH_TOKENS_PER_UTT / rate / 3600
        params = sum(p.numel() for p in teacher.model.parameters())
        print(f"{size:8s} {params:11d} {tokens:7d} {med:9.2f} {rate:9.1f} {hours:21.1f}")


if __name__ == "__main__":
    main()
