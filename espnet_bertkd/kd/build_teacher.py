"""Make a small BERT teacher from a text corpus: a WordPiece vocabulary trained with `tokenizers` and a
`BertForMaskedLM`, saved in Hugging Face format so it loads like any hub model. Used by the tests (random weights)
and by recipes that train their own teacher on a corpus' text-only data."""
from __future__ import annotations

import os
import tempfile
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


CONTINUATION_PREFIX = "##"


def continuation_tokens(texts: list[str], trainer) -> list[str]:
    """Every `##c` piece the WordPiece trainer will need, in sorted order.

    `tokenizers` creates these lazily while iterating a hash map, so their ids (and, through merge tie-breaking,
    even the learned vocabulary) change from run to run (huggingface/tokenizers#1794). Registering them up front,
    sorted, gives them fixed ids and makes training deterministic. The trainer's own normaliser and
    pre-tokeniser are used so the set is exactly the one it would create."""
    normalizer, pre_tokenizer = trainer._tokenizer.normalizer, trainer._tokenizer.pre_tokenizer
    chars: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            chars.update(word[1:])
    return [CONTINUATION_PREFIX + c for c in sorted(chars)]


def build_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str, lowercase: bool = True):
    """Train an (uncased by default) WordPiece vocabulary and save a BertTokenizerFast to out_dir.

    The same texts always give the same vocabulary, in the same order (see `continuation_tokens`)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    texts = list(texts)
    trainer = BertWordPieceTokenizer(lowercase=lowercase)
    # Passed as "special" only so the trainer registers them first; the saved vocab.txt is a plain list, and
    # BertTokenizerFast below treats them as ordinary pieces.
    pinned = SPECIAL_TOKENS + continuation_tokens(texts, trainer)
    trainer.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=pinned, min_frequency=1)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer.save_model(tmp)
        # Positional: the vocabulary path is `vocab_file` in transformers 4 and `vocab` in 5.
        tokenizer = BertTokenizerFast(os.path.join(tmp, "vocab.txt"), do_lower_case=lowercase)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_bert(
    texts: Iterable[str],
    out_dir: str,
    vocab_size: int = 200,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position_embeddings: int = 128,
    seed: int = 0,
    model_vocab_size: int | None = None,
) -> str:
    """A randomly initialised BertForMaskedLM with a WordPiece vocabulary trained on `texts`; returns out_dir.

    `model_vocab_size` pads the model's vocabulary beyond the tokenizer's (e.g. 30522 to time a BERT-base-sized
    output layer with a small tokenizer)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = build_wordpiece_tokenizer(texts, vocab_size, out_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=max(len(tokenizer), model_vocab_size or 0),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
    )
    BertForMaskedLM(config).save_pretrained(out_dir)
    return out_dir
