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


# Rows of logits one chunk of the fused head holds at a time (about 64 MiB of float32 logits, whatever the vocabulary).
CHUNK_ELEMENTS = 1 << 24


class _FusedHeadLoss(torch.autograd.Function):
    """Output layer + log-softmax + both loss terms over (N, D) hidden states, one chunk of rows at a time.

    The loss of a row is -sum_v w_v log p_v + const, with w = (1 - a) t + a q (t the label-smoothed target, q the
    teacher's top-k), so its gradient with respect to the logits is (sum_v w_v) p - w: known in the forward pass.
    Each chunk's gradient is therefore formed right away and pushed through the output layer, and no (N, V) tensor
    outlives its chunk; backward only scales the stored gradients by the incoming one (as Liger-Kernel's fused linear
    cross-entropy does). Precision is set here, not by autocast: the logits are computed in `compute_dtype` (the
    autocast dtype under AMP), the gradient matmuls too for bfloat16 but in float32 for float16 (the gradients are
    formed before AMP's loss scale, too small for float16); softmax, loss and accumulation are float32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, topk_ids, topk_probs, alpha, smoothing, compute_dtype, need_grad):
        with torch.autocast(hidden.device.type, enabled=False):
            return _FusedHeadLoss._forward(ctx, hidden, weight, bias, target, topk_ids, topk_probs, alpha, smoothing,
                                           compute_dtype, need_grad)

    @staticmethod
    def _forward(ctx, hidden, weight, bias, target, topk_ids, topk_probs, alpha, smoothing, compute_dtype, need_grad):
        rows, vocab = hidden.size(0), weight.size(0)
        confidence, spread = 1.0 - smoothing, smoothing / (vocab - 1)
        w, b = weight.to(compute_dtype), None if bias is None else bias.to(compute_dtype)
        grad_dtype = torch.float32 if compute_dtype == torch.float16 else compute_dtype
        w_grad = w.to(grad_dtype)
        sums = torch.zeros(3, dtype=torch.float32, device=hidden.device)  # ce, kl, correct
        # Only what some input needs (need_grad: hidden, weight, bias; False under no_grad, e.g. validation).
        need_h, need_w, need_b = (n and need_grad for n in ctx.needs_input_grad[:3])
        grad_hidden = torch.empty(rows, hidden.size(1), dtype=torch.float32, device=hidden.device) if need_h else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_bias = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if need_b else None
        step = max(1, CHUNK_ELEMENTS // vocab)
        for start in range(0, rows, step):
            h = hidden[start : start + step].to(compute_dtype)
            t, ids, q = target[start : start + step], topk_ids[start : start + step], topk_probs[start : start + step]
            z = torch.nn.functional.linear(h, w, b).float()  # (c, V) logits
            sums[2] += (z.argmax(-1) == t).sum()
            lse = torch.logsumexp(z, -1, keepdim=True)
            lp_t = z.gather(1, t[:, None]).squeeze(1) - lse.squeeze(1)
            ce = -(confidence - spread) * lp_t
            if spread > 0:
                ce = ce - spread * (z.sum(-1) - vocab * lse.squeeze(1))
            sums[0] += ce.sum()
            if alpha > 0:
                sums[1] += (torch.xlogy(q, q) - q * (z.gather(1, ids) - lse)).sum()
            if not (need_h or need_w or need_b):
                continue
            grad = z.sub_(lse).exp_()  # softmax, in place of the logits
            grad.mul_(((1.0 - alpha) + alpha * q.sum(-1))[:, None])  # (sum_v w_v) p ...
            if spread > 0:
                grad.sub_((1.0 - alpha) * spread)  # ... - w: the smoothing mass on every id,
            grad.scatter_add_(1, t[:, None], torch.full_like(lp_t, -(1.0 - alpha) * (confidence - spread))[:, None])
            if alpha > 0:
                grad.scatter_add_(1, ids, -alpha * q)  # the extra on the target and on the teacher's top-k
            grad_c = grad.to(grad_dtype)
            if need_h:
                grad_hidden[start : start + step] = grad_c @ w_grad
            if need_w:
                grad_weight += (grad_c.t() @ h.to(grad_dtype)).float()
            if need_b:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
        )
        rows_entropy = rows * ((confidence * math.log(confidence) if confidence > 0 else 0.0)
                               + ((vocab - 1) * spread * math.log(spread) if spread > 0 else 0.0))
        ce, kl, correct = sums[0] + rows_entropy, sums[1], sums[2]
        loss = (1.0 - alpha) * ce + alpha * kl
        ctx.mark_non_differentiable(ce, kl, correct)
        return loss, ce, kl, correct

    @staticmethod
    def backward(ctx, grad_loss, _ce, _kl, _correct):
        grads = tuple(None if g is None else g * grad_loss for g in ctx.saved_tensors)
        return grads + (None,) * 7


def fused_head_loss(
    loss: KDDecoderLoss, hidden: torch.Tensor, output_layer: torch.nn.Linear, ys_out: torch.Tensor,
    topk_ids: torch.Tensor, topk_probs: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`loss(output_layer(hidden), ...)` and the decoder's token accuracy, without (B, L, V) logits.

    hidden: (B, L, D) decoder states before the output layer; the rest as KDDecoderLoss.forward. Padded positions
    are dropped before the output layer. Returns (loss, ce, kl, accuracy), equal to the reference path
    (KDDecoderLoss.forward on the logits, then ESPnet's th_accuracy) up to float rounding
    (tests/test_loss.py::test_fused_head_equals_reference).
    """
    assert output_layer.out_features == loss.vocab_size, (output_layer, loss.vocab_size)
    valid = ys_out != loss.ignore_id
    denom = valid.sum() if loss.normalize_length else hidden.size(0)
    device_type = hidden.device.type
    compute_dtype = (torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type)
                     else output_layer.weight.dtype)
    need_grad = torch.is_grad_enabled()
    total, ce, kl, correct = _FusedHeadLoss.apply(
        hidden[valid], output_layer.weight, output_layer.bias, ys_out[valid], topk_ids[valid],
        topk_probs[valid].float(), loss.alpha, loss.lsm_weight, compute_dtype, need_grad,
    )
    return total / denom, ce / denom, kl / denom, correct / valid.sum().clamp_min(1)
