"""The KD decoder loss against a brute-force reference written here from the definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from espnet_bertkd.kd.loss import KDDecoderLoss, topk_kl

B, L, V, K = 3, 5, 11, 4
IGNORE = -1


def make_inputs(seed: int = 0):
    """Random logits, targets padded with IGNORE (lengths 5, 3, 1), and a top-k teacher with garbage at padding."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g) * 2
    lengths = [5, 3, 1]
    ys_out = torch.randint(0, V, (B, L), generator=g)
    for b, n in enumerate(lengths):
        ys_out[b, n:] = IGNORE
    topk_ids = torch.stack([torch.stack([torch.randperm(V, generator=g)[:K] for _ in range(L)]) for _ in range(B)])
    topk_probs = torch.distributions.Dirichlet(torch.ones(K)).sample((B, L))
    topk_probs[0, 1] = torch.tensor([0.7, 0.3, 0.0, 0.0])  # zero-probability entries: 0 log 0 = 0
    # garbage at padded positions: it must not count
    for b, n in enumerate(lengths):
        topk_probs[b, n:] = torch.rand(L - n, K, generator=g) * 5
    return logits, ys_out, topk_ids, topk_probs


def reference_kl_sum(logits, ys_out, topk_ids, topk_probs) -> float:
    """sum over non-padded positions of KL(q || p), q the full-vocabulary teacher vector (0 off the top-k)."""
    logp = np.log(np.exp(logits.double().numpy()) / np.exp(logits.double().numpy()).sum(-1, keepdims=True))
    total = 0.0
    for b in range(logits.size(0)):
        for t in range(logits.size(1)):
            if ys_out[b, t] == IGNORE:
                continue
            q = np.zeros(logits.size(2))
            for i, p in zip(topk_ids[b, t].tolist(), topk_probs[b, t].tolist()):
                q[i] = p
            support = q > 0
            total += float((q[support] * (np.log(q[support]) - logp[b, t][support])).sum())
    return total


def reference_ce_sum(logits, ys_out, eps: float) -> float:
    """sum over non-padded positions of KL(true || p), true = 1 - eps on the target and eps / (V - 1) elsewhere."""
    v = logits.size(2)
    logp = np.log(np.exp(logits.double().numpy()) / np.exp(logits.double().numpy()).sum(-1, keepdims=True))
    total = 0.0
    for b in range(logits.size(0)):
        for t in range(logits.size(1)):
            y = int(ys_out[b, t])
            if y == IGNORE:
                continue
            true = np.full(v, eps / (v - 1))
            true[y] = 1.0 - eps
            support = true > 0
            total += float((true[support] * (np.log(true[support]) - logp[b, t][support])).sum())
    return total


def n_tokens(ys_out) -> int:
    return int((ys_out != IGNORE).sum())


def test_topk_kl_matches_reference():
    logits, ys_out, ids, probs = make_inputs()
    got = topk_kl(torch.log_softmax(logits, -1), ids, probs, ys_out != IGNORE)
    assert got.dim() == 0
    assert math.isclose(float(got), reference_kl_sum(logits, ys_out, ids, probs), rel_tol=1e-5)


def test_topk_kl_is_zero_when_student_equals_teacher():
    ids = torch.tensor([[[2, 0, 5]]])
    probs = torch.tensor([[[0.5, 0.3, 0.2]]])
    logits = torch.full((1, 1, 6), -1e4)
    logits[0, 0, ids[0, 0]] = probs[0, 0].log()
    kl = topk_kl(torch.log_softmax(logits, -1), ids, probs, torch.ones(1, 1, dtype=torch.bool))
    assert abs(float(kl)) < 1e-6


def test_topk_kl_ignores_padding():
    logits, ys_out, ids, probs = make_inputs()
    valid = ys_out != IGNORE
    a = topk_kl(torch.log_softmax(logits, -1), ids, probs, valid)
    logits2, probs2 = logits.clone(), probs.clone()
    logits2[~valid] = torch.randn(int((~valid).sum()), V) * 10
    probs2[~valid] = 123.0
    b = topk_kl(torch.log_softmax(logits2, -1), ids, probs2, valid)
    assert float(a) == float(b)


@pytest.mark.parametrize("normalize_length", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("lsm", [0.0, 0.1])
def test_kd_decoder_loss_matches_reference(normalize_length, alpha, lsm):
    logits, ys_out, ids, probs = make_inputs(seed=1)
    crit = KDDecoderLoss(V, alpha=alpha, lsm_weight=lsm, ignore_id=IGNORE, normalize_length=normalize_length)
    loss, ce, kl = crit(logits, ys_out, ids, probs)
    denom = n_tokens(ys_out) if normalize_length else B
    ce_ref = reference_ce_sum(logits, ys_out, lsm) / denom
    kl_ref = reference_kl_sum(logits, ys_out, ids, probs) / denom
    assert math.isclose(float(ce), ce_ref, rel_tol=1e-5)
    if alpha == 0.0:
        assert float(kl) == 0.0
        assert float(loss) == float(ce)
    else:
        assert math.isclose(float(kl), kl_ref, rel_tol=1e-5)
    assert math.isclose(float(loss), (1 - alpha) * ce_ref + alpha * kl_ref, rel_tol=1e-5, abs_tol=1e-7)
    if alpha == 1.0:
        assert math.isclose(float(loss), kl_ref, rel_tol=1e-5)


def test_normalisation_by_batch_and_by_tokens_differ_by_token_count():
    logits, ys_out, ids, probs = make_inputs(seed=2)
    by_batch = KDDecoderLoss(V, 0.5, 0.1, IGNORE, normalize_length=False)(logits, ys_out, ids, probs)[0]
    by_tokens = KDDecoderLoss(V, 0.5, 0.1, IGNORE, normalize_length=True)(logits, ys_out, ids, probs)[0]
    assert math.isclose(float(by_batch) * B, float(by_tokens) * n_tokens(ys_out), rel_tol=1e-5)


def test_padding_positions_contribute_nothing():
    logits, ys_out, ids, probs = make_inputs(seed=3)
    crit = KDDecoderLoss(V, 0.5, 0.1, IGNORE, normalize_length=True)
    loss = crit(logits, ys_out, ids, probs)[0]
    pad = ys_out == IGNORE
    logits2, ids2, probs2 = logits.clone(), ids.clone(), probs.clone()
    logits2[pad] = torch.randn(int(pad.sum()), V) * 7
    ids2[pad] = 0
    probs2[pad] = 0.0
    loss2 = crit(logits2, ys_out, ids2, probs2)[0]
    assert math.isclose(float(loss), float(loss2), rel_tol=1e-6)


def test_gradient_flows_and_skips_padding():
    logits, ys_out, ids, probs = make_inputs(seed=4)
    logits.requires_grad_(True)
    loss = KDDecoderLoss(V, 0.5, 0.1, IGNORE, normalize_length=False)(logits, ys_out, ids, probs)[0]
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    pad = ys_out == IGNORE
    assert (grad[~pad].abs().sum(-1) > 0).all()
    assert (grad[pad] == 0).all()
    # the gradient matches the autograd gradient of a torch reference written from the definition
    x = logits.detach().double().requires_grad_(True)
    logp = torch.log_softmax(x, -1)
    valid = ~pad
    true = torch.full_like(logp, 0.1 / (V - 1))
    true.scatter_(-1, ys_out.clamp_min(0)[..., None], 0.9)
    ce = ((true * (true.log() - logp)).sum(-1) * valid).sum() / B
    q = torch.zeros_like(logp).scatter(-1, ids, probs.double())
    kl_terms = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - logp), torch.zeros_like(q))
    kl = (kl_terms.sum(-1) * valid).sum() / B
    (0.5 * ce + 0.5 * kl).backward()
    torch.testing.assert_close(grad.double(), x.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_raises(alpha):
    with pytest.raises(ValueError, match="kd_alpha"):
        KDDecoderLoss(V, alpha, 0.1, IGNORE, normalize_length=False)


@pytest.mark.parametrize("smoothing,normalize_length", [(0.0, False), (0.1, False), (0.2, True)])
def test_closed_form_ce_equals_espnet_label_smoothing_loss(smoothing, normalize_length):
    """The closed-form CE term has exactly the value (and gradient) of ESPnet's LabelSmoothingLoss."""
    from espnet_bertkd.compat import LabelSmoothingLoss

    torch.manual_seed(3)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    target = torch.randint(0, 11, (3, 5))
    target[1, 3:] = -1
    target[2, 1:] = -1
    ours = KDDecoderLoss(11, 0.0, smoothing, -1, normalize_length)(logits, target, None, None)[1]
    espnet = LabelSmoothingLoss(11, -1, smoothing, normalize_length)(logits, target)
    assert torch.allclose(ours, espnet, atol=1e-5)
    g_ours, = torch.autograd.grad(ours, logits)
    g_espnet, = torch.autograd.grad(espnet, logits)
    assert torch.allclose(g_ours, g_espnet, atol=1e-6)
