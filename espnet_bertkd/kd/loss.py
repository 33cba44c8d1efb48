"""The loss of one KD decoder: (1 - a) * label-smoothed CE with the transcript + a * KL(q_i || p_i) on the top-k."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from espnet_bertkd.kd.config import check_range


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


def label_smoothed_kl(log_probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Sum over valid positions of KL(t || p), t = 1 - eps on the target and eps / (V - 1) elsewhere.

    This is the value of ESPnet's LabelSmoothingLoss, computed in closed form from one log-softmax instead of
    materialising t: with s = eps / (V - 1) and c = 1 - eps,
    KL = c log c + (V - 1) s log s - s * sum_v log p_v - (c - s) * log p_target.
    For a BERT-sized vocabulary this saves several passes over (tokens x 30k) tensors per decoder.
    """
    vocab = log_probs.size(-1)
    confidence, spread = 1.0 - smoothing, smoothing / (vocab - 1)
    entropy = (confidence * math.log(confidence) if confidence > 0 else 0.0) + (
        (vocab - 1) * spread * math.log(spread) if spread > 0 else 0.0
    )
    target_lp = log_probs.gather(-1, target.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1)
    row = entropy - (confidence - spread) * target_lp
    if spread > 0:
        row = row - spread * log_probs.sum(-1)
    return row.masked_fill(~valid, 0.0).sum()


class KDDecoderLoss(torch.nn.Module):
    """Loss of one decoder. Normalised like ESPnet's attention loss: by batch size, or by tokens if
    `normalize_length` (ESPnet's `length_normalized_loss`), for both terms alike."""

    def __init__(self, vocab_size: int, alpha: float, lsm_weight: float, ignore_id: int, normalize_length: bool):
        super().__init__()
        check_range("kd_alpha", alpha, 0.0, 1.0)
        check_range("lsm_weight", lsm_weight, 0.0, 1.0, high_open=True)
        self.vocab_size = vocab_size
        self.alpha = alpha
        self.lsm_weight = lsm_weight
        self.ignore_id = ignore_id
        self.normalize_length = normalize_length

    def forward(
        self, logits: torch.Tensor, ys_out: torch.Tensor, topk_ids: torch.Tensor, topk_probs: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (loss, ce, kl). logits (B, L, V); ys_out (B, L) with ignore_id padding; top-k as in topk_kl."""
        assert logits.size(-1) == self.vocab_size, (logits.shape, self.vocab_size)
        valid = ys_out != self.ignore_id
        denom = valid.sum() if self.normalize_length else logits.size(0)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        ce = label_smoothed_kl(log_probs, ys_out, valid, self.lsm_weight) / denom
        if self.alpha == 0.0:
            return ce, ce, torch.zeros_like(ce)
        kl = topk_kl(log_probs, topk_ids, topk_probs, valid) / denom
        return (1.0 - self.alpha) * ce + self.alpha * kl, ce, kl
