"""Online teacher mode: a frozen masked LM inside the training process, scoring each transcript once per run.

The teacher lives outside the model's module tree on purpose: it is not a parameter, not in the state dict, not
seen by the optimizer, and DistributedDataParallel never tries to synchronise it.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_bertkd.kd.soft_labels import collate_arrays, pack
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.teacher import MaskedLMTeacher, log_teacher


def token_text_mode(token_list: Sequence[str], sym_space: str = "<space>") -> str:
    """How a token list spells text, decided once from the whole list: `bpe` (sentencepiece pieces marked with
    U+2581), `char` (the list holds the space symbol) or `word`."""
    if any(t.startswith("\u2581") for t in token_list):
        return "bpe"
    if sym_space in token_list:
        return "char"
    return "word"


def tokens_to_text(tokens: Sequence[str], mode: str, sym_space: str = "<space>") -> str:
    """Recover a transcript from ESPnet tokens, as ESPnet's tokenizers' tokens2text do."""
    if mode == "bpe":
        return "".join(tokens).replace("\u2581", " ").strip()
    if mode == "char":
        return "".join(" " if t == sym_space else t for t in tokens).strip()
    if mode == "word":
        return " ".join(tokens)
    raise ValueError(f"unknown token text mode {mode!r}")


class OnlineSoftLabels:
    """Turns a batch of CTC token ids into packed soft-label arrays, memoised per transcript."""

    def __init__(self, config: TeacherConfig, token_list: Sequence[str], sym_space: str) -> None:
        self.config = config
        self.token_list = list(token_list)
        self.sym_space = sym_space
        self.mode = token_text_mode(self.token_list, sym_space)
        self.teacher: Optional[MaskedLMTeacher] = None
        self.memo: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def _load(self, device: torch.device) -> MaskedLMTeacher:
        if self.teacher is None:
            target = device if self.config.device == "auto" else torch.device(self.config.device)
            self.teacher = MaskedLMTeacher(self.config, device=str(target))
            log_teacher(self.teacher)
        return self.teacher

    def texts(self, text: torch.Tensor, text_lengths: torch.Tensor) -> List[str]:
        rows = text.tolist()
        return [
            tokens_to_text([self.token_list[i] for i in row[:n]], self.mode, self.sym_space)
            for row, n in zip(rows, text_lengths.tolist())
        ]

    def __call__(self, text: torch.Tensor, text_lengths: torch.Tensor, device: torch.device) -> Dict[str, torch.Tensor]:
        texts = self.texts(text, text_lengths)
        todo = sorted({t for t in texts if t not in self.memo})
        if todo:
            teacher = self._load(device)
            for t, labels in zip(todo, teacher.soft_labels(todo)):
                self.memo[t] = pack(labels, teacher.vocab_size)
            logging.debug("online teacher scored %d new transcripts (%d memoised)", len(todo), len(self.memo))
        return {k: v.to(device) for k, v in collate_arrays([self.memo[t] for t in texts]).items()}
