"""Packed soft-label arrays, batching/validation, and online vs cached teacher modes giving identical targets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import kaldiio
import numpy as np
import pytest
import torch

from conftest import TEXTS, TOKENS, assert_soft_labels_close, encode_text
from espnet_bertkd.kd.extract import extract
from espnet_bertkd.kd.online import OnlineSoftLabels, token_text_mode, tokens_to_text
from espnet_bertkd.kd.soft_labels import (
    KD_PROB,
    KD_TOKEN,
    MAX_TOKEN_ID,
    batch_targets,
    check_meta,
    collate_arrays,
    pack,
    read_meta,
    write_meta,
)
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.soft_labels import SoftLabels
from espnet_bertkd.kd.teacher import MaskedLMTeacher

TOPK = 4


def labels(n: int, k: int, vocab: int, seed: int = 0) -> SoftLabels:
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, vocab, n).astype(np.int64)
    topk_ids = np.array([rng.choice(vocab, k, replace=False) for _ in range(n)], dtype=np.int64).reshape(n, k)
    probs = rng.dirichlet(np.ones(k), n).astype(np.float32).reshape(n, k)
    return SoftLabels(token_ids, topk_ids, probs)


# --------------------------------------------------------------------------------------------------------------------
# pack / read back


def read_back(tokens: np.ndarray, probs: np.ndarray):
    """One utterance's stored arrays read the way the model reads them: padded as ESPnet's collate function does
    (collate_arrays), then batch_targets."""
    batch = collate_arrays([(tokens, probs)])
    return batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB])


@pytest.mark.parametrize("vocab", [120, 30522, 32769, 250002, MAX_TOKEN_ID])
def test_pack_read_round_trip(vocab):
    lab = labels(7, 5, vocab)
    # the extreme ids survive float32 storage
    lab.topk_ids[0, 0] = vocab - 1
    lab.token_ids[1] = vocab - 1
    tokens, probs = pack(lab, vocab)
    assert tokens.dtype == np.float32 and tokens.shape == (7, 6)
    assert probs.dtype == np.float32 and probs.shape == (7, 5)
    np.testing.assert_array_equal(tokens[:, 0], lab.token_ids)
    np.testing.assert_array_equal(tokens[:, 1:], lab.topk_ids)
    back = read_back(tokens, probs)
    assert back.tokens.dtype == torch.long and back.topk_ids.dtype == torch.long
    assert back.topk_probs.dtype == torch.float32
    np.testing.assert_array_equal(back.tokens[0].numpy(), lab.token_ids)
    np.testing.assert_array_equal(back.topk_ids[0].numpy(), lab.topk_ids)
    np.testing.assert_allclose(back.topk_probs[0].numpy(), lab.topk_probs, rtol=1e-6)  # rows renormalised


def test_pack_refuses_vocabularies_float32_cannot_hold():
    with pytest.raises(ValueError, match="float32"):
        pack(labels(2, 3, 10), MAX_TOKEN_ID + 1)


def test_soft_labels_of_the_old_numpy_storage_are_refused(tmp_path):
    """kd_meta.json without "storage" came from espnet-bertkd 0.1 (numpy arrays in the ark, which ESPnet 202611
    cannot read): the preflight asks for re-extraction instead of ESPnet failing on the first batch."""
    write_meta(tmp_path, {"teacher": "t", "vocab_size": 120, "topk": 3, "temperature": 1.0})
    with pytest.raises(ValueError, match="storage=.numpy-in-ark.*re-extract"):
        check_meta(tmp_path, {"vocab_size": 120, "topk": 3, "storage": "kaldi-float32-matrix"})


def test_pack_empty_utterance():
    lab = SoftLabels(np.zeros(0, np.int64), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32))
    tokens, probs = pack(lab, 100)
    assert tokens.shape == (0, 4) and probs.shape == (0, 3)
    back = read_back(tokens, probs)
    assert back.lengths.tolist() == [0] and back.tokens.shape == (1, 0) and back.topk_ids.shape == (1, 0, 3)


# --------------------------------------------------------------------------------------------------------------------
# collate_arrays / batch_targets


def packed_batch(vocab: int = 50, k: int = 3, lengths=(3, 1, 0)):
    arrays = [pack(labels(n, k, vocab, seed=i), vocab) for i, n in enumerate(lengths)]
    return arrays, collate_arrays(arrays)


def test_collate_arrays_pads_like_espnet():
    arrays, batch = packed_batch()
    assert batch[KD_TOKEN].shape == (3, 3, 4) and batch[KD_TOKEN].dtype == torch.long
    assert batch[KD_PROB].shape == (3, 3, 3) and batch[KD_PROB].dtype == torch.float32
    assert batch[f"{KD_TOKEN}_lengths"].tolist() == [3, 1, 0]
    assert (batch[KD_TOKEN][1, 1:] == -1).all() and (batch[KD_TOKEN][2] == -1).all()
    assert (batch[KD_PROB][1, 1:] == 0).all()
    assert torch.equal(batch[KD_TOKEN][0], torch.from_numpy(arrays[0][0].astype(np.int64)))


def test_batch_targets_padding_and_renormalisation():
    arrays, batch = packed_batch()
    # stored probabilities that do not sum to one (float16 rounding, truncation): renormalised per row
    batch[KD_PROB][0, 0] = torch.tensor([0.5, 0.3, 0.1])
    t = batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], ["a", "b", "c"], 50, 3)
    assert t.tokens.shape == (3, 3) and t.tokens.dtype == torch.long
    assert t.tokens[0].tolist() == arrays[0][0][:, 0].tolist()
    assert t.tokens[1].tolist() == [int(arrays[1][0][0, 0]), -1, -1]
    assert t.tokens[2].tolist() == [-1, -1, -1]
    assert t.lengths.tolist() == [3, 1, 0]
    assert t.topk_ids.shape == (3, 3, 3) and t.topk_ids.dtype == torch.long
    assert torch.equal(t.topk_ids[0], torch.from_numpy(arrays[0][0][:, 1:].astype(np.int64)))
    assert (t.topk_ids[1, 1:] == 0).all() and (t.topk_ids[2] == 0).all()
    assert t.topk_probs.dtype == torch.float32
    torch.testing.assert_close(t.topk_probs[0, 0], torch.tensor([5 / 9, 3 / 9, 1 / 9]))
    valid = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(t.topk_probs.sum(-1)[valid], torch.ones(int(valid.sum())), atol=1e-6, rtol=0)
    assert (t.topk_probs[~valid] == 0).all()


def test_batch_targets_id_outside_vocab_names_utterance():
    _, batch = packed_batch(vocab=50)
    batch[KD_TOKEN][1, 0, 2] = 50  # a top-k id of utterance "b"
    with pytest.raises(ValueError, match="'b'"):
        batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], ["a", "b", "c"], 50, 3)
    _, batch = packed_batch(vocab=50)
    batch[KD_TOKEN][0, 2, 0] = 77  # the transcript token of utterance "a"
    with pytest.raises(ValueError, match="'a'"):
        batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], ["a", "b", "c"], 50, 3)
    # ids beyond the padding are not checked (they are padding)
    _, batch = packed_batch(vocab=50)
    batch[KD_TOKEN][1, 2, 1] = 999
    batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], ["a", "b", "c"], 50, 3)


def test_batch_targets_topk_mismatch():
    _, batch = packed_batch(k=3)
    with pytest.raises(ValueError, match="topk"):
        batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], ["a", "b", "c"], 50, 8)


def test_batch_targets_shape_mismatch():
    _, batch = packed_batch(k=3)
    with pytest.raises(ValueError, match="shapes"):
        batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB][..., :2], None, 50, None)


@pytest.mark.parametrize("bad", [0.0, float("nan")])
def test_batch_targets_unnormalisable_row_names_utterance(bad):
    _, batch = packed_batch()
    batch[KD_PROB][1, 0] = bad
    with pytest.raises(ValueError, match="'b'"):
        batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], ["a", "b", "c"], 50, 3)
    # without utterance ids the batch row is named
    with pytest.raises(ValueError, match="batch row 1"):
        batch_targets(batch[KD_TOKEN], batch[f"{KD_TOKEN}_lengths"], batch[KD_PROB], None, 50, 3)


def test_meta_round_trip_and_check(tmp_path):
    assert read_meta(tmp_path) is None
    check_meta(tmp_path, {"topk": 8})  # nothing stored: nothing to compare
    write_meta(tmp_path, {"topk": 8, "vocab_hash": "abc"})
    assert read_meta(tmp_path) == {"topk": 8, "vocab_hash": "abc"}
    check_meta(tmp_path, {"topk": 8, "vocab_hash": None, "other": 1})
    with pytest.raises(ValueError, match="topk"):
        check_meta(tmp_path, {"topk": 4})


def test_write_meta_survives_a_concurrent_writer(tmp_path, monkeypatch):
    """Parallel extraction jobs all write kd_meta.json: another job's write between our temporary file and its
    rename must not make ours fail or leave a partial file."""
    real_replace = os.replace
    pid = [1000]
    monkeypatch.setattr(os, "getpid", lambda: pid[0])
    interleaved = []

    def replace(src, dst):
        if not interleaved:
            interleaved.append(str(src))
            pid[0] = 2000  # another job writes the same metadata in the meantime
            write_meta(tmp_path, {"topk": 8})
            pid[0] = 1000
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_meta(tmp_path, {"topk": 8})
    assert interleaved
    assert read_meta(tmp_path) == {"topk": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kd_meta.json"]


# --------------------------------------------------------------------------------------------------------------------
# online == cached


def write_text(path: Path, texts, prefix: str = "spk-") -> List[str]:
    utts = [f"{prefix}{i:03d}" for i in range(len(texts))]
    path.write_text("".join(f"{u} {t}\n".rstrip(" \n") + "\n" for u, t in zip(utts, texts)), encoding="utf-8")
    return utts


@pytest.mark.parametrize("texts", [TEXTS, [TEXTS[2], "", TEXTS[0], TEXTS[2]]], ids=["texts", "empty-and-repeat"])
def test_online_equals_cached(tmp_path, teacher_dir, texts):
    text_file = tmp_path / "text"
    utts = write_text(text_file, texts)
    out = tmp_path / "kd"
    assert extract(str(text_file), str(out), TeacherConfig(model=teacher_dir, topk=TOPK), chunk_size=2)
    tok = kaldiio.load_scp(str(out / f"{KD_TOKEN}.scp"))
    prob = kaldiio.load_scp(str(out / f"{KD_PROB}.scp"))
    assert list(tok.keys()) == utts and list(prob.keys()) == utts
    assert tok[utts[0]].dtype == np.float32 and prob[utts[0]].dtype == np.float32
    cached = collate_arrays([(tok[u], prob[u]) for u in utts])

    online = OnlineSoftLabels(TeacherConfig(model=teacher_dir, mode="online", topk=TOPK), TOKENS, "<space>")
    text, text_lengths = encode_text(texts)
    got = online(text, text_lengths, torch.device("cpu"))
    assert set(got) == set(cached)
    for key in cached:
        assert got[key].dtype == cached[key].dtype, key
    assert torch.equal(got[f"{KD_TOKEN}_lengths"], cached[f"{KD_TOKEN}_lengths"])
    # online scores the distinct transcripts in one batch, extraction in chunks of 2: ids exact, probs to rounding
    assert_soft_labels_close({"batch": (got[KD_TOKEN], got[KD_PROB])}, {"batch": (cached[KD_TOKEN], cached[KD_PROB])})
    # and they validate as model targets
    teacher_vocab = online.teacher.vocab_size
    t = batch_targets(got[KD_TOKEN], got[f"{KD_TOKEN}_lengths"], got[KD_PROB], utts, teacher_vocab, TOPK)
    assert t.lengths.tolist() == [len(online.teacher.tokenize(x)) for x in texts]


def test_online_memo_scores_each_transcript_once(teacher_dir, monkeypatch):
    seen: List[List[str]] = []
    original = MaskedLMTeacher.soft_labels

    def counting(self, texts, *args, **kwargs):
        seen.append(list(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(MaskedLMTeacher, "soft_labels", counting)
    online = OnlineSoftLabels(TeacherConfig(model=teacher_dir, mode="online", topk=TOPK), TOKENS, "<space>")
    cpu = torch.device("cpu")

    first = online(*encode_text(TEXTS[:3]), cpu)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(TEXTS[:3])
    again = online(*encode_text(TEXTS[:3]), cpu)
    assert len(seen) == 1  # nothing new: no teacher call
    for key in first:
        assert torch.equal(first[key], again[key])

    mixed = online(*encode_text([TEXTS[4], TEXTS[1], TEXTS[4], TEXTS[3]]), cpu)
    assert len(seen) == 2 and sorted(seen[1]) == sorted([TEXTS[3], TEXTS[4]])  # only new ones, each once
    assert len(online.memo) == 5
    # a memoised row is the same wherever it appears in a batch
    n = int(first[f"{KD_TOKEN}_lengths"][1])
    assert torch.equal(mixed[KD_TOKEN][1, :n], first[KD_TOKEN][1, :n])
    assert torch.equal(mixed[KD_TOKEN][0], mixed[KD_TOKEN][2])
    # the teacher is loaded once
    teacher = online.teacher
    online(*encode_text(TEXTS), cpu)
    assert online.teacher is teacher and len(seen) == 3 and seen[2] == [TEXTS[5]]


def test_online_teacher_is_not_a_module_attribute(teacher_dir):
    online = OnlineSoftLabels(TeacherConfig(model=teacher_dir, mode="online", topk=TOPK), TOKENS, "<space>")
    assert not isinstance(online, torch.nn.Module)
    assert online.texts(*encode_text(TEXTS[:2])) == TEXTS[:2]


# --------------------------------------------------------------------------------------------------------------------
# tokens_to_text


def test_tokens_to_text_sentencepiece():
    assert token_text_mode(["<blank>", "\u2581THE", "IR", "<sos/eos>"]) == "bpe"
    assert tokens_to_text(["\u2581THE", "IR", "\u2581HOUSE"], "bpe") == "THEIR HOUSE"
    assert tokens_to_text(["\u2581I", "\u2581WANT", "\u2581TO", "\u2581G", "O"], "bpe") == "I WANT TO GO"


def test_tokens_to_text_characters():
    assert token_text_mode(TOKENS, "<space>") == "char"
    chars = ["T", "H", "E", "<space>", "C", "A", "T"]
    assert tokens_to_text(chars, "char", "<space>") == "THE CAT"
    assert tokens_to_text(["A", "B"], "char", "<space>") == "AB"  # one word, no space symbol
    assert tokens_to_text(["I", "_", "A", "M"], "char", "_") == "I AM"
    assert tokens_to_text(["<unk>"], "char", "<space>") == "<unk>"
    assert tokens_to_text([], "char", "<space>") == ""


def test_tokens_to_text_words():
    words = ["<blank>", "<unk>", "A", "I", "THEIR", "HOUSE", "<sos/eos>"]
    assert token_text_mode(words, "<space>") == "word"
    assert tokens_to_text(["THEIR", "HOUSE", "IS"], "word") == "THEIR HOUSE IS"
    # single-letter words stay words: the mode comes from the token list, not from one utterance
    assert tokens_to_text(["I", "A"], "word") == "I A"
    with pytest.raises(ValueError, match="mode"):
        tokens_to_text(["A"], "phones")


def test_online_texts_round_trip_characters(teacher_dir):
    online = OnlineSoftLabels(TeacherConfig(model=teacher_dir, mode="online"), TOKENS, "<space>")
    assert online.texts(*encode_text(TEXTS)) == TEXTS


def test_soft_label_comparison_forgives_rounding_and_near_ties_only():
    """conftest.assert_soft_labels_close, the meaning of "the same soft labels" across batchings."""
    tok = np.array([[5, 1, 2, 3]], dtype=np.float32)
    prob = np.array([[0.5, 0.3, 0.2]], dtype=np.float32)
    assert_soft_labels_close({"u": (tok, prob + 5e-7)}, {"u": (tok, prob)})  # rounding
    with pytest.raises(AssertionError, match="probs"):
        assert_soft_labels_close({"u": (tok, prob + 3e-6)}, {"u": (tok, prob)})
    last = tok.copy()
    last[0, 3] = 9  # the k-th id: tied with the unseen k+1-th
    assert_soft_labels_close({"u": (last, prob)}, {"u": (tok, prob)})
    swapped = tok.copy()
    swapped[0, 1], swapped[0, 2] = 2, 1
    with pytest.raises(AssertionError, match="near-tie"):
        assert_soft_labels_close({"u": (swapped, prob)}, {"u": (tok, prob)})
    tie = np.array([[0.4, 0.4 - 5e-7, 0.2]], dtype=np.float32)
    assert_soft_labels_close({"u": (swapped, tie)}, {"u": (tok, tie)})
    other = tok.copy()
    other[0, 0] = 6  # a transcript token: never forgiven
    with pytest.raises(AssertionError, match="transcript tokens"):
        assert_soft_labels_close({"u": (other, prob)}, {"u": (tok, prob)})
