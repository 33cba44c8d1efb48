"""The loss of one KD decoder: (1 - a) * label-smoothed CE with the transcript + a * KL(q_i || p_i) on the top-k."""
from __future__ import annotations

from typing import Tuple

import torch
from espnet.nets.pytorch_backend.transformer.label_smoothing_loss import LabelSmoothingLoss


def topk_kl(
    log_probs: torch.Tensor, topk_ids: torch.Tensor, topk_probs: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Sum over valid positions of KL(q || p) with q supported on the teacher's top-k ids.

    log_probs: (B, L, V) student log-probabilities; topk_ids/topk_probs: (B, L, k); valid: (B, L) bool.
    Zero-probability entries contribute nothing (0 log 0 = 0), which is also how padded rows drop out.
    """
    student = log_probs.gather(-1, topk_ids)
    kl = torch.xlogy(topk_probs, topk_probs) - topk_probs * student
    return kl.sum(-1).masked_fill(~valid, 0.0).sum()


class KDDecoderLoss(torch.nn.Module):
    """Loss of one decoder. Normalised like ESPnet's attention loss: by batch size, or by tokens if
    `normalize_length` (ESPnet's `length_normalized_loss`), for both terms alike."""

    def __init__(self, vocab_size: int, alpha: float, lsm_weight: float, ignore_id: int, normalize_length: bool):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"model_conf.kd_alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.ignore_id = ignore_id
        self.normalize_length = normalize_length
        self.ce = LabelSmoothingLoss(vocab_size, ignore_id, lsm_weight, normalize_length)

    def forward(
        self, logits: torch.Tensor, ys_out: torch.Tensor, topk_ids: torch.Tensor, topk_probs: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (loss, ce, kl). logits (B, L, V); ys_out (B, L) with ignore_id padding; top-k as in topk_kl."""
        ce = self.ce(logits, ys_out)
        if self.alpha == 0.0:
            return ce, ce, torch.zeros_like(ce)
        valid = ys_out != self.ignore_id
        denom = valid.sum() if self.normalize_length else logits.size(0)
        kl = topk_kl(torch.log_softmax(logits.float(), dim=-1), topk_ids, topk_probs, valid) / denom
        return (1.0 - self.alpha) * ce + self.alpha * kl, ce, kl
