"""The teacher's WordPiece vocabulary is a pure function of its text (upstream `tokenizers` training is not:
huggingface/tokenizers#1794), so a re-run recipe rebuilds the same teacher, soft labels and KD models."""
from __future__ import annotations

from homophones.text import generate_text
from espnet_bertkd.kd.build_teacher import CONTINUATION_PREFIX, SPECIAL_TOKENS, build_wordpiece_tokenizer


def _vocab_in_id_order(tokenizer) -> list[str]:
    return [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]


def test_same_text_gives_same_vocabulary_in_same_order(tmp_path):
    text = generate_text(seed=3, num_sentences={"train": 200}, train_sets=["train"], lm_ratio=5.0).lm
    vocabularies = [_vocab_in_id_order(build_wordpiece_tokenizer(text, 300, str(tmp_path / f"run{i}")))
                    for i in range(4)]
    # Before the fix, four trainings gave four different orders (and usually different token sets).
    assert all(vocabulary == vocabularies[0] for vocabulary in vocabularies[1:])
    assert vocabularies[0][:len(SPECIAL_TOKENS)] == SPECIAL_TOKENS


def test_pinned_continuations_stay_ordinary_pieces(tmp_path):
    tokenizer = build_wordpiece_tokenizer(["the knight wrote", "their night"] * 10, 60, str(tmp_path))
    continuations = [t for t in _vocab_in_id_order(tokenizer) if t.startswith(CONTINUATION_PREFIX)]
    assert CONTINUATION_PREFIX + "h" in continuations
    assert not set(continuations) & set(tokenizer.all_special_tokens)
    # An unseen word still splits into first letter + continuation pieces, and decodes back.
    pieces = tokenizer.tokenize("thong")
    assert pieces[0] in ("t", "th", "the") and all(p.startswith(CONTINUATION_PREFIX) for p in pieces[1:])
    assert tokenizer.decode(tokenizer.encode("their knight", add_special_tokens=False)) == "their knight"
