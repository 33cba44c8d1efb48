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


# ------------------------------------------------------------------ the fused head (output layer + loss, chunked)

def head_inputs(seed: int = 0, vocab: int = V, dim: int = 6):
    """Decoder states, a Linear output layer and the targets of make_inputs, for a vocabulary of `vocab` ids."""
    _, ys_out, topk_ids, topk_probs = make_inputs(seed)
    g = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(B, L, dim, generator=g)
    layer = torch.nn.Linear(dim, vocab)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(vocab, dim, generator=g))
        layer.bias.copy_(torch.randn(vocab, generator=g))
    return hidden, layer, ys_out % vocab * (ys_out != IGNORE) + IGNORE * (ys_out == IGNORE), topk_ids % vocab, topk_probs


def reference_and_fused(loss, hidden, layer, ys_out, topk_ids, topk_probs):
    """(loss, ce, kl, accuracy) and the gradients of loss w.r.t. hidden, weight and bias, by both paths."""
    from espnet_bertkd.compat import th_accuracy
    from espnet_bertkd.kd.loss import fused_head_loss

    out = []
    for fused in (False, True):
        h = hidden.clone().requires_grad_(True)
        layer.zero_grad()
        if fused:
            total, ce, kl, acc = fused_head_loss(loss, h, layer, ys_out, topk_ids, topk_probs)
        else:
            logits = layer(h)
            total, ce, kl = loss(logits, ys_out, topk_ids, topk_probs)
            acc = th_accuracy(logits.view(-1, logits.size(-1)), ys_out, ignore_label=IGNORE)
        total.backward()
        out.append(([float(x.detach()) if torch.is_tensor(x) else x for x in (total, ce, kl, acc)],
                    [h.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]))
    return out


@pytest.mark.parametrize("normalize_length", [False, True])
@pytest.mark.parametrize("alpha,lsm", [(0.5, 0.1), (1.0, 0.0), (0.0, 0.1), (0.3, 0.0)])
def test_fused_head_equals_reference(normalize_length, alpha, lsm):
    """The loss, both terms, the accuracy and every gradient of the chunked fused head equal today's path (output
    layer, then KDDecoderLoss on the full logits, then ESPnet's th_accuracy) to float32 rounding; garbage teacher
    rows at padding count in neither."""
    hidden, layer, ys_out, topk_ids, topk_probs = head_inputs()
    loss = KDDecoderLoss(V, alpha, lsm, IGNORE, normalize_length)
    (ref, ref_grads), (fused, fused_grads) = reference_and_fused(loss, hidden, layer, ys_out, topk_ids, topk_probs)
    assert fused == pytest.approx(ref, rel=1e-5, abs=1e-6)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert ref_grads[0][ys_out == IGNORE].abs().max() == 0 == fused_grads[0][ys_out == IGNORE].abs().max()


def test_fused_head_chunks_rows(monkeypatch):
    """With a chunk of 2 rows (7 chunks for 9 valid positions) the result is the one-chunk result."""
    import espnet_bertkd.kd.loss as kd_loss

    hidden, layer, ys_out, topk_ids, topk_probs = head_inputs(seed=3, vocab=40)
    loss = KDDecoderLoss(40, 0.5, 0.1, IGNORE, False)
    whole = reference_and_fused(loss, hidden, layer, ys_out, topk_ids, topk_probs)[1]
    monkeypatch.setattr(kd_loss, "CHUNK_ELEMENTS", 2 * 40)
    chunked = reference_and_fused(loss, hidden, layer, ys_out, topk_ids, topk_probs)[1]
    assert chunked[0] == pytest.approx(whole[0], rel=1e-6)
    for a, b in zip(chunked[1], whole[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_head_under_autocast_keeps_the_loss_in_float32(dtype):
    """Under autocast the logits are computed in the autocast dtype and the loss in float32: close to the float32
    loss (8 or 11 mantissa bits), and equal to the reference path run under the same autocast."""
    hidden, layer, ys_out, topk_ids, topk_probs = head_inputs(seed=5, vocab=64, dim=16)
    loss = KDDecoderLoss(64, 0.5, 0.1, IGNORE, False)
    fp32 = reference_and_fused(loss, hidden, layer, ys_out, topk_ids, topk_probs)[1]
    with torch.autocast("cpu", dtype=dtype):
        (ref, ref_grads), (fused, fused_grads) = reference_and_fused(loss, hidden, layer, ys_out, topk_ids, topk_probs)
    assert fused[0] == pytest.approx(fp32[0][0], rel=2e-2) and fused[0] != fp32[0][0]  # bf16 logits, really
    assert fused[:3] == pytest.approx(ref[:3], rel=1e-5)  # the same bf16 logits; loss in float32 on both paths
    assert all(g.dtype == torch.float32 for g in fused_grads)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)  # low-precision gradient matmuls on the reference


def test_fused_head_without_grad_stores_nothing():
    hidden, layer, ys_out, topk_ids, topk_probs = head_inputs()
    from espnet_bertkd.kd.loss import fused_head_loss

    with torch.no_grad():
        total, _, _, _ = fused_head_loss(KDDecoderLoss(V, 0.5, 0.1, IGNORE, False), hidden, layer, ys_out,
                                         topk_ids, topk_probs)
    assert total.grad_fn is None and torch.isfinite(total)


def test_fused_head_computes_only_the_gradients_asked_for():
    """A frozen output weight (and frozen states) with a trainable bias: only the bias gets a gradient, the one the
    reference path gives it."""
    from espnet_bertkd.kd.loss import fused_head_loss

    hidden, layer, ys_out, topk_ids, topk_probs = head_inputs(seed=7)
    loss = KDDecoderLoss(V, 0.5, 0.1, IGNORE, False)
    layer.weight.requires_grad_(False)
    expected = torch.autograd.grad(loss(layer(hidden), ys_out, topk_ids, topk_probs)[0], layer.bias)[0]
    total = fused_head_loss(loss, hidden, layer, ys_out, topk_ids, topk_probs)[0]
    total.backward()
    assert layer.weight.grad is None and hidden.grad is None
    torch.testing.assert_close(layer.bias.grad, expected, rtol=1e-5, atol=1e-6)
