"""The masked-LM teacher: windows, masked copies, top-k softmax, soft labels against a brute-force reference, config."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import pytest
import torch

from conftest import TEXTS
from espnet_bertkd.kd.teacher import (
    MaskedLMTeacher,
    SoftLabels,
    TeacherConfig,
    masked_copies,
    softmax_topk,
    window_bounds,
)

LONG = " ".join(TEXTS[:3])  # 15 teacher tokens


@pytest.fixture(scope="module")
def teacher(teacher_dir) -> MaskedLMTeacher:
    return MaskedLMTeacher(TeacherConfig(model=teacher_dir))


# --------------------------------------------------------------------------------------------------------------------
# brute-force reference: build each masked input by hand, run the full model (logits at every position), pick i


@torch.no_grad()
def reference(
    teacher: MaskedLMTeacher,
    tokens: Sequence[int],
    positions: Sequence[int],
    window: Optional[int] = None,
    topk: int = 8,
    temperature: float = 1.0,
    drop_special: bool = True,
):
    """For each position i of `tokens`: [CLS] (window of tokens with w_i -> [MASK]) [SEP] -> full logits -> top-k
    (over the non-special tokens unless `drop_special` is False)."""
    tok = teacher.tokenizer
    ids_out, probs_out = [], []
    for i in positions:
        start, stop = (0, len(tokens)) if window is None else window_bounds(i, len(tokens), window)
        seq = list(tokens[start:stop])
        seq[i - start] = tok.mask_token_id
        x = [tok.cls_token_id] + seq + [tok.sep_token_id]
        logits = teacher.model(input_ids=torch.tensor([x])).logits
        assert logits.shape == (1, len(x), teacher.vocab_size)  # the full head ran (no hook here)
        scores = logits[0, i - start + 1].float()
        if drop_special:
            scores[tok.all_special_ids] = float("-inf")
        values, ids = scores.topk(topk)
        ids_out.append(ids.numpy())
        probs_out.append(torch.softmax(values / temperature, -1).numpy())
    k = topk
    return (
        np.array(ids_out, dtype=np.int64).reshape(-1, k),
        np.array(probs_out, dtype=np.float32).reshape(-1, k),
    )


def assert_labels_equal(a: SoftLabels, b: SoftLabels, atol: float = 1e-6) -> None:
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    np.testing.assert_allclose(a.topk_probs, b.topk_probs, atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# window_bounds / masked_copies


def test_window_bounds_short_sequence_is_whole_sequence():
    for pos in range(5):
        assert window_bounds(pos, 5, 8) == (0, 5)
        assert window_bounds(pos, 5, 5) == (0, 5)


def test_window_bounds_hand_examples():
    # length 10, window 4: centred start = pos - 2, clamped to [0, 6]
    assert window_bounds(0, 10, 4) == (0, 4)
    assert window_bounds(1, 10, 4) == (0, 4)
    assert window_bounds(2, 10, 4) == (0, 4)
    assert window_bounds(3, 10, 4) == (1, 5)
    assert window_bounds(5, 10, 4) == (3, 7)
    assert window_bounds(8, 10, 4) == (6, 10)
    assert window_bounds(9, 10, 4) == (6, 10)
    # odd window: position in the middle
    assert window_bounds(5, 10, 5) == (3, 8)
    assert window_bounds(9, 10, 5) == (5, 10)


@pytest.mark.parametrize("length,window", [(10, 4), (11, 5), (7, 1), (20, 19), (3, 2)])
def test_window_bounds_properties(length, window):
    for pos in range(length):
        start, stop = window_bounds(pos, length, window)
        assert stop - start == window
        assert 0 <= start <= pos < stop <= length
        # centred unless clamped by an edge
        if start > 0 and stop < length:
            assert pos - start == window // 2


def test_masked_copies_short_sequence():
    tokens = [10, 11, 12]
    copies = list(masked_copies(tokens, 0, 3, 8, 0))
    assert copies == [([0, 11, 12], 0), ([10, 0, 12], 1), ([10, 11, 0], 2)]


def test_masked_copies_sub_range_hand_example():
    tokens = list(range(10, 20))
    copies = list(masked_copies(tokens, 2, 5, 4, 0))
    assert copies == [([10, 11, 0, 13], 2), ([11, 12, 0, 14], 2), ([12, 13, 0, 15], 2)]
    # the last position of a long sequence: clamped at the right edge
    assert list(masked_copies(tokens, 9, 10, 4, 0)) == [([16, 17, 18, 0], 3)]


def test_masked_copies_long_sequence_properties():
    tokens = list(range(100, 117))  # 17 distinct tokens, mask id 0 is not among them
    window = 6
    copies = list(masked_copies(tokens, 0, len(tokens), window, 0))
    assert len(copies) == len(tokens)
    for i, (copy, index) in enumerate(copies):
        start, stop = window_bounds(i, len(tokens), window)
        assert len(copy) == window
        assert copy.count(0) == 1 and copy[index] == 0
        assert start + index == i
        expected = tokens[start:stop]
        assert [c for j, c in enumerate(copy) if j != index] == [t for j, t in enumerate(expected) if j != index]
    # the input is not modified
    assert tokens == list(range(100, 117))


# --------------------------------------------------------------------------------------------------------------------
# softmax_topk


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_softmax_topk_hand_example(temperature):
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    ids, probs = softmax_topk(logits, 2, temperature)
    assert ids.tolist() == [[1, 2]]
    e = np.exp(np.array([3.0, 2.0]) / temperature)
    np.testing.assert_allclose(probs.numpy()[0], e / e.sum(), rtol=1e-6)
    assert probs.dtype == torch.float32


def test_softmax_topk_temperature_three_value():
    _, probs = softmax_topk(torch.tensor([1.0, 3.0, 2.0, 0.0]), 2, 3.0)
    # softmax([1, 2/3]) = [1 / (1 + e^(-1/3)), ...]
    p0 = 1.0 / (1.0 + np.exp(-1.0 / 3.0))
    np.testing.assert_allclose(probs.numpy(), [p0, 1 - p0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softmax_topk_low_precision_logits_give_fp32(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=g) * 4).to(dtype)
    ids, probs = softmax_topk(logits, 5, 1.0)
    assert probs.dtype == torch.float32
    assert ids.shape == probs.shape == (3, 7, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 7), atol=1e-6, rtol=0)
    # the top-k values of the (rounded) logits, whatever order ties come in
    ref_values, _ = logits.float().topk(5, dim=-1)
    torch.testing.assert_close(torch.gather(logits.float(), -1, ids), ref_values, atol=0, rtol=0)
    torch.testing.assert_close(probs, torch.softmax(ref_values, -1), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# MaskedLMTeacher


def test_soft_labels_shapes_and_normalisation(teacher):
    labels = teacher.soft_labels(TEXTS)
    assert len(labels) == len(TEXTS)
    for text, lab in zip(TEXTS, labels):
        n = len(teacher.tokenize(text))
        assert n > 0
        assert lab.token_ids.shape == (n,) and lab.token_ids.dtype == np.int64
        assert lab.token_ids.tolist() == teacher.tokenize(text)
        assert lab.topk_ids.shape == (n, 8) and lab.topk_ids.dtype == np.int64
        assert lab.topk_probs.shape == (n, 8) and lab.topk_probs.dtype == np.float32
        np.testing.assert_allclose(lab.topk_probs.sum(-1), 1.0, atol=1e-6)
        assert (lab.topk_ids >= 0).all() and (lab.topk_ids < teacher.vocab_size).all()
        # top-k ids are distinct and sorted by probability
        assert all(len(set(row)) == 8 for row in lab.topk_ids.tolist())
        assert (np.diff(lab.topk_probs, axis=-1) <= 0).all()


def test_uncased_teacher_ignores_case(teacher):
    upper = teacher.soft_labels([TEXTS[0]])[0]
    lower = teacher.soft_labels([TEXTS[0].lower()])[0]
    assert_labels_equal(upper, lower, atol=0)


def test_empty_transcript_gives_no_rows(teacher):
    labels = teacher.soft_labels(["", "   ", TEXTS[0]])
    for lab in labels[:2]:
        assert lab.token_ids.shape == (0,)
        assert lab.topk_ids.shape == (0, 8)
        assert lab.topk_probs.shape == (0, 8)
    assert_labels_equal(labels[2], teacher.soft_labels([TEXTS[0]])[0])


def test_soft_labels_equal_brute_force_reference(teacher):
    labels = teacher.soft_labels(TEXTS)
    for text, lab in zip(TEXTS, labels):
        tokens = teacher.tokenize(text)
        ids, probs = reference(teacher, tokens, range(len(tokens)))
        np.testing.assert_array_equal(lab.topk_ids, ids)
        np.testing.assert_allclose(lab.topk_probs, probs, atol=1e-6, rtol=0)


def test_temperature(teacher_dir, teacher):
    hot = MaskedLMTeacher(TeacherConfig(model=teacher_dir, temperature=3.0, topk=5))
    labels = hot.soft_labels(TEXTS[:2])
    for text, lab in zip(TEXTS[:2], labels):
        tokens = teacher.tokenize(text)
        ids, probs = reference(teacher, tokens, range(len(tokens)), topk=5, temperature=3.0)
        np.testing.assert_array_equal(lab.topk_ids, ids)
        np.testing.assert_allclose(lab.topk_probs, probs, atol=1e-6, rtol=0)
    # T = 3 is flatter than T = 1 on the same ids
    cold = MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=5)).soft_labels(TEXTS[:2])
    for h, c in zip(labels, cold):
        np.testing.assert_array_equal(h.topk_ids, c.topk_ids)
        assert (h.topk_probs[:, 0] < c.topk_probs[:, 0]).all()


def test_tiny_batches_equal_one_big_batch(teacher_dir, teacher):
    big = teacher.soft_labels(TEXTS)
    tiny_teacher = MaskedLMTeacher(TeacherConfig(model=teacher_dir, max_tokens_per_batch=8))
    # count the forward passes: a tiny budget really splits the rows
    shapes: List[tuple] = []
    handle = tiny_teacher.model.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        tiny = tiny_teacher.soft_labels(TEXTS)
    finally:
        handle.remove()
    n_rows = sum(len(teacher.tokenize(t)) for t in TEXTS)
    assert sum(b for b, _ in shapes) == n_rows and len(shapes) > 1
    assert all(b * length <= 8 or b == 1 for b, length in shapes)
    for a, b in zip(big, tiny):
        assert_labels_equal(a, b)


def test_windowing_equals_reference_on_centred_windows(teacher_dir, teacher):
    tokens = teacher.tokenize(LONG)
    assert len(tokens) == 15
    windowed = MaskedLMTeacher(TeacherConfig(model=teacher_dir, max_length=6))
    assert windowed.window == 4
    lab = windowed.soft_labels([LONG])[0]
    assert lab.token_ids.tolist() == tokens
    ids, probs = reference(teacher, tokens, range(len(tokens)), window=4)
    np.testing.assert_array_equal(lab.topk_ids, ids)
    np.testing.assert_allclose(lab.topk_probs, probs, atol=1e-6, rtol=0)
    # and it really differs from the full-context labels
    full = teacher.soft_labels([LONG])[0]
    assert not np.allclose(full.topk_probs, lab.topk_probs, atol=1e-4) or not np.array_equal(
        full.topk_ids, lab.topk_ids
    )


@pytest.mark.parametrize("max_length", [17, 40])  # 15 tokens + [CLS] + [SEP] = 17 fits exactly
def test_window_not_smaller_than_sequence_equals_unwindowed(teacher_dir, teacher, max_length):
    lab = MaskedLMTeacher(TeacherConfig(model=teacher_dir, max_length=max_length)).soft_labels([LONG])[0]
    assert_labels_equal(lab, teacher.soft_labels([LONG])[0])


def test_contexts_change_labels_not_rows(teacher):
    plain = teacher.soft_labels([TEXTS[1]])[0]
    ctx = teacher.soft_labels([TEXTS[1]], [TEXTS[0]], [TEXTS[2]])[0]
    np.testing.assert_array_equal(ctx.token_ids, plain.token_ids)
    assert ctx.topk_ids.shape == plain.topk_ids.shape and ctx.topk_probs.shape == plain.topk_probs.shape
    assert not np.allclose(ctx.topk_probs, plain.topk_probs, atol=1e-5)
    # the contexts are seen by the model, only the utterance's own positions are labelled
    left, own, right = (teacher.tokenize(t) for t in TEXTS[:3])
    ids, probs = reference(teacher, left + own + right, range(len(left), len(left) + len(own)))
    np.testing.assert_array_equal(ctx.topk_ids, ids)
    np.testing.assert_allclose(ctx.topk_probs, probs, atol=1e-6, rtol=0)
    # empty contexts are the same as none
    assert_labels_equal(teacher.soft_labels([TEXTS[1]], [""], [""])[0], plain)
    # only the left context
    left_only = teacher.soft_labels([TEXTS[1]], [TEXTS[0]], None)[0]
    ids, probs = reference(teacher, left + own, range(len(left), len(left) + len(own)))
    np.testing.assert_array_equal(left_only.topk_ids, ids)
    np.testing.assert_allclose(left_only.topk_probs, probs, atol=1e-6, rtol=0)


def test_special_tokens_dropped_before_topk_unless_kept(teacher_dir, teacher):
    special = set(teacher.tokenizer.all_special_ids)
    tokens = teacher.tokenize(LONG)
    # top-k as large as the vocabulary: kept special tokens must then appear, dropped ones never
    k = teacher.vocab_size - len(special)
    dropped = MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=k)).soft_labels([LONG])[0]
    assert not special & set(dropped.topk_ids.ravel().tolist())
    ids, probs = reference(teacher, tokens, range(len(tokens)), topk=k)
    np.testing.assert_array_equal(dropped.topk_ids, ids)
    np.testing.assert_allclose(dropped.topk_probs, probs, atol=1e-6, rtol=0)
    kept = MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=teacher.vocab_size, drop_special=False))
    labels = kept.soft_labels([LONG])[0]
    assert special <= set(labels.topk_ids[0].tolist())
    ids, probs = reference(teacher, tokens, range(len(tokens)), topk=teacher.vocab_size, drop_special=False)
    np.testing.assert_array_equal(labels.topk_ids, ids)


def test_metadata(teacher):
    meta = teacher.metadata()
    assert meta["vocab_size"] == teacher.vocab_size == len(teacher.tokenizer)
    assert meta["topk"] == 8 and meta["temperature"] == 1.0 and meta["drop_special"] is True
    assert isinstance(meta["vocab_hash"], str) and len(meta["vocab_hash"]) == 16


def test_bf16_teacher_probabilities_are_fp32_and_normalised(teacher_dir, teacher):
    bf16 = MaskedLMTeacher(TeacherConfig(model=teacher_dir, dtype="bfloat16"))
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    labels = bf16.soft_labels(TEXTS)
    for text, lab in zip(TEXTS, labels):
        assert lab.topk_probs.dtype == np.float32
        assert lab.topk_probs.shape == (len(teacher.tokenize(text)), 8)
        np.testing.assert_allclose(lab.topk_probs.sum(-1, dtype=np.float64), 1.0, atol=1e-5, rtol=0)
        assert (lab.topk_ids >= 0).all() and (lab.topk_ids < bf16.vocab_size).all()


# --------------------------------------------------------------------------------------------------------------------
# TeacherConfig


def test_from_dict_ok(teacher_dir):
    conf = TeacherConfig.from_dict({"model": teacher_dir, "mode": "online", "topk": 4, "temperature": 3.0})
    assert conf == TeacherConfig(model=teacher_dir, mode="online", topk=4, temperature=3.0)


def test_from_dict_unknown_key_is_named(teacher_dir):
    with pytest.raises(ValueError, match="topK"):
        TeacherConfig.from_dict({"model": teacher_dir, "topK": 4})


def test_from_dict_needs_model():
    with pytest.raises(ValueError, match="model"):
        TeacherConfig.from_dict({"topk": 4})
    with pytest.raises(TypeError):
        TeacherConfig.from_dict(["model"])


@pytest.mark.parametrize(
    "key,value",
    [
        ("mode", "offline"),
        ("topk", 0),
        ("topk", -3),
        ("topk", 2.5),
        ("topk", "8"),
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("dtype", "float8"),
        ("dtype", "fp16"),
        ("max_length", 3),
    ],
)
def test_from_dict_bad_values(teacher_dir, key, value):
    with pytest.raises(ValueError, match=key):
        TeacherConfig.from_dict({"model": teacher_dir, key: value})


def test_empty_model_name_rejected():
    with pytest.raises(ValueError):
        TeacherConfig(model="")


@pytest.mark.parametrize("name", ["/nonexistent/dir/bert", "no-such-user/no-such-masked-lm"])
def test_missing_teacher_says_to_pass_local_directory(name):
    with pytest.raises(OSError, match="local directory"):
        MaskedLMTeacher(TeacherConfig(model=name))


def test_vocab_size_mismatch_and_topk_too_large(teacher_dir, teacher):
    with pytest.raises(ValueError, match="vocab_size"):
        MaskedLMTeacher(TeacherConfig(model=teacher_dir, vocab_size=teacher.vocab_size + 1))
    with pytest.raises(ValueError, match="topk"):
        MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=teacher.vocab_size + 1))
    assert MaskedLMTeacher(TeacherConfig(model=teacher_dir, vocab_size=teacher.vocab_size)).vocab_size == (
        teacher.vocab_size
    )
