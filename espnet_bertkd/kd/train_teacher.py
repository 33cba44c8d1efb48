"""Train (or fine-tune) a masked-LM teacher on a text corpus, saved in Hugging Face format.

A recipe without a pretrained teacher (the embedded corpus; any language without a BERT) trains a small BERT from
scratch on its LM text: a WordPiece vocabulary from `tokenizers`, `BertForMaskedLM`, BERT's 15% masking
(80% [MASK], 10% random, 10% kept, via transformers' DataCollatorForLanguageModeling). With `init` it fine-tunes an
existing masked LM (e.g. bert-base-uncased on librispeech-lm-norm) instead. A held-out slice of the text gives the
masked-token accuracy that the note of a recipe run should quote: a teacher that cannot predict masked words has no
knowledge to distil.
"""
from __future__ import annotations

import logging
import math
import random
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import torch

from espnet_bertkd.kd.build_teacher import build_bert
from espnet_bertkd.utils.fileio import check_output_dir, replace_dir, tmp_name
from espnet_bertkd.utils.progress import Progress

OWNER = "train_teacher"  # the owner marker of the teacher directories written here (check_output_dir)


@dataclass
class TeacherTraining:
    """Options of `train_masked_lm` (also the CLI's)."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 5e-4
    warmup_fraction: float = 0.05
    max_length: int = 64
    mlm_probability: float = 0.15
    valid_fraction: float = 0.01
    seed: int = 0
    device: str = "cpu"
    # architecture when training from scratch
    vocab_size: int = 2000
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4


def length_bucketed_batches(lengths: List[int], batch_size: int, rng: random.Random,
                            bucket_batches: int = 50) -> List[List[int]]:
    """Batches of similar-length lines in random order: shuffle, sort each span of `bucket_batches` batches by
    length, cut it into batches, shuffle the batches. Padding then costs little (the LM text's lines are 4 to 30
    words), while every epoch still sees a new order and new batch mates."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * bucket_batches
    batches: List[List[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start: start + span], key=lambda i: lengths[i])
        batches += [chunk[j: j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def warmup_linear_decay(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor of update `step` (0-based): up linearly over `warmup` updates from 1/warmup (the
    first update already learns), then down linearly to 0 at `total`.

    After the warmup this is transformers' `get_linear_schedule_with_warmup` to the bit; during it, transformers'
    factor is one update behind (step/warmup: the first update at lr 0). The teacher keeps its own, so that a
    retrained teacher, and every soft label it gives, stays the same."""
    return min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))


def masked_lm_loss(model, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The MLM loss (mean cross-entropy over the masked positions, as `BertForMaskedLM` computes it).

    For a BERT the output head runs on the masked positions only: the loss is the same, and the head, which
    `BertForMaskedLM` applies to every position although 85 % of them carry no label, is a fifth of a small
    teacher's compute. Other masked LMs take their own forward pass."""
    if not (hasattr(model, "bert") and hasattr(model, "cls")):
        return model(**batch).loss
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.bert(**inputs)[0]
    picked = labels != -100
    return torch.nn.functional.cross_entropy(model.cls(hidden[picked]).float(), labels[picked])


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def split_valid(lines: List[str], fraction: float, seed: int) -> tuple:
    rng = random.Random(seed)
    lines = lines[:]
    rng.shuffle(lines)
    n_valid = max(1, int(len(lines) * fraction)) if len(lines) > 1 else 0
    return lines[n_valid:], lines[:n_valid]


@torch.no_grad()
def masked_accuracy(model, tokenizer, lines: List[str], options: TeacherTraining) -> float:
    """Accuracy of predicting every token of held-out lines with that token masked (one masked copy each)."""
    from espnet_bertkd.kd.teacher_config import TeacherConfig
    from espnet_bertkd.kd.teacher import MaskedLMTeacher

    config = TeacherConfig(model="<in training>", topk=1, max_length=options.max_length)
    teacher = MaskedLMTeacher(config, device=options.device, model=model, tokenizer=tokenizer)
    correct = total = 0
    for labels in teacher.soft_labels(lines):
        correct += int((labels.topk_ids[:, 0] == labels.token_ids).sum())
        total += len(labels.token_ids)
    return correct / max(total, 1)


def train_masked_lm(text: str, output_dir: str, options: TeacherTraining, init: Optional[str] = None,
                    overwrite: bool = False) -> Dict:
    """Train on the lines of `text`; write the model + tokenizer to output_dir atomically; return a summary.
    output_dir is checked first (check_output_dir): an experiment or another tool's directory there is refused
    unless `overwrite`, and one holding the text or the `init` model always."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    inputs = [text] + ([init] if init is not None and Path(init).exists() else [])
    check_output_dir(output_dir, OWNER, inputs, overwrite)
    torch.manual_seed(options.seed)
    lines = read_lines(text)
    if not lines:
        raise ValueError(f"{text} has no text to train the teacher on")
    train, valid = split_valid(lines, options.valid_fraction, options.seed)
    out = Path(output_dir)
    tmp = tmp_name(out)  # built here, swapped in by replace_dir once complete
    shutil.rmtree(tmp, ignore_errors=True)
    if init is None:
        build_bert(train, str(tmp), vocab_size=options.vocab_size, hidden_size=options.hidden_size,
                   num_layers=options.num_layers, num_heads=options.num_heads,
                   max_position_embeddings=max(512, options.max_length), seed=options.seed)
        init_from = str(tmp)
    else:
        init_from = init
    tokenizer = AutoTokenizer.from_pretrained(init_from)
    model = AutoModelForMaskedLM.from_pretrained(init_from).to(options.device)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=options.mlm_probability)
    encoded = tokenizer(train, truncation=True, max_length=options.max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]

    steps_per_epoch = math.ceil(len(encoded) / options.batch_size)
    total = steps_per_epoch * options.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.01)
    warmup = max(1, int(total * options.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_linear_decay, warmup=warmup, total=total))
    rng = random.Random(options.seed)
    losses = []
    bar = Progress(total, "teacher MLM", unit="step")
    for epoch in range(options.epochs):
        model.train()
        epoch_loss, used = 0.0, 0
        for indices in length_bucketed_batches(lengths, options.batch_size, rng):
            batch = collator([{"input_ids": encoded[i]} for i in indices])
            if not bool((batch["labels"] != -100).any()):
                # nothing masked (a small batch can draw no mask): no loss to learn from, and its NaN would make the
                # epoch's reported loss NaN
                bar.update(1, note=f"epoch {epoch + 1}/{options.epochs}, batch without a masked token skipped")
                continue
            loss = masked_lm_loss(model, {k: v.to(options.device) for k, v in batch.items()})
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            epoch_loss += loss.item()
            used += 1
            bar.update(1, note=f"epoch {epoch + 1}/{options.epochs}, loss {loss.item():.3f}")
        losses.append(epoch_loss / used if used else float("nan"))
        logging.info("teacher epoch %d/%d: MLM loss %.3f", epoch + 1, options.epochs, losses[-1])
    bar.close()
    accuracy = masked_accuracy(model, tokenizer, valid, options) if valid else float("nan")
    logging.info("teacher held-out masked-token accuracy: %.3f on %d lines", accuracy, len(valid))

    model.cpu().save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out, OWNER, overwrite)  # never leaves neither the old teacher nor the new one
    return {"epoch_losses": losses, "valid_masked_accuracy": accuracy, "train_lines": len(train),
            "valid_lines": len(valid), "parameters": sum(p.numel() for p in model.parameters())}
