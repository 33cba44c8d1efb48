"""Subword models and token lists, built the way ESPnet's `asr.sh` stage 5 builds them, without `spm_train`.

asr.sh (token_type=bpe): `cut -f 2- -d" " <bpe_train_text> > train.txt`, `spm_train --input=train.txt
--vocab_size=N --model_type=unigram|bpe --model_prefix=<dir>/bpe --character_coverage=1.0
--input_sentence_size=100000000`, then tokens.txt = `<blank>`, `<unk>`, the pieces of `bpe.vocab` after its first
three lines (`<unk>`, `<s>`, `</s>`) in the vocabulary's own order (by score), `<sos/eos>`.
asr.sh (token_type=char|word): `espnet2.bin.tokenize_text --field 2- --write_vocabulary true --add_symbol
'<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'`: tokens by descending count (ties in order of
first appearance), `<space>` for the blank between words.
The token list decides the meaning of every output unit of a trained model, so it is written once and atomically.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence

from espnet_bertkd.utils.fileio import DataError, PathLike, atomic_open, iter_table, open_text, tmp_name

BLANK, UNK, SOS_EOS, SPACE = "<blank>", "<unk>", "<sos/eos>", "<space>"


@dataclass(frozen=True)
class BpeModel:
    model: Path  # bpe.model, what ESPnet's --bpemodel takes
    vocab: Path  # bpe.vocab
    token_list: Path  # tokens.txt, what ESPnet's --token_list takes
    train_text: Path  # train.txt, the transcripts without ids


def iter_transcripts(paths: Sequence[PathLike], has_ids: bool = True) -> Iterator[str]:
    """The words of each line (`cut -f 2-` of Kaldi text when `has_ids`), whitespace collapsed; lines without
    words are skipped (asr.sh's lm_train.txt has none)."""
    for path in paths:
        if has_ids:  # a Kaldi table: the one reader (streamed; no key set kept, lm_train.txt has 40M lines)
            lines = (e.value for e in iter_table(path, unique=False))
            yield from (" ".join(e.split()) for e in lines if e)
            continue
        with open_text(path) as f:
            for line in f:
                words = line.split()
                if words:
                    yield " ".join(words)


def write_token_list(path: PathLike, tokens: Sequence[str]) -> Path:
    """Write one token per line; a duplicate or a token with whitespace would shift every id after it."""
    seen = set()
    for i, t in enumerate(tokens):
        if not t or any(c.isspace() for c in t):
            raise ValueError(f"token {i} ({t!r}) is empty or holds whitespace")
        if t in seen:
            raise ValueError(f"token {t!r} appears twice in the token list")
        seen.add(t)
    with atomic_open(path) as f:
        f.write("".join(t + "\n" for t in tokens))
    return Path(path)


def spm_token_list(model: PathLike) -> List[str]:
    """ESPnet's token list of a sentencepiece model: `<blank>`, `<unk>`, the pieces in id order without the
    unknown and control pieces (`<unk>`, `<s>`, `</s>`: asr.sh drops the vocab's first three lines), `<sos/eos>`."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_unknown(i) or sp.is_control(i))]
    return [BLANK, UNK] + pieces + [SOS_EOS]


def train_bpe(texts: Sequence[PathLike], output_dir: PathLike, vocab_size: int, model_type: str = "unigram",
              character_coverage: float = 1.0, input_sentence_size: int = 100_000_000,
              user_defined_symbols: Sequence[str] = (), has_ids: bool = True, num_threads: int = 1,
              quiet: bool = True) -> BpeModel:
    """Train sentencepiece on the transcripts of `texts` (Kaldi text, or plain lines with has_ids=False) and write
    OUTPUT_DIR/{train.txt, bpe.model, bpe.vocab, tokens.txt} — ESPnet's `data/token_list/bpe_<type><N>/` layout."""
    import sentencepiece as spm

    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be unigram or bpe, not {model_type!r}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_txt = out / "train.txt"
    with atomic_open(train_txt) as f:
        n = 0
        for line in iter_transcripts(texts, has_ids):
            f.write(line + "\n")
            n += 1
    if n == 0:
        raise DataError(f"{', '.join(map(str, texts))}: no transcripts with words to train sentencepiece on")
    prefix = tmp_name(out / "bpe")  # bpe.tmp<pid>.model/.vocab, renamed when complete
    kwargs = dict(input=str(train_txt), model_prefix=str(prefix), vocab_size=vocab_size, model_type=model_type,
                  character_coverage=character_coverage, input_sentence_size=input_sentence_size,
                  num_threads=num_threads)
    if user_defined_symbols:
        kwargs["user_defined_symbols"] = list(user_defined_symbols)
    if quiet:
        kwargs["minloglevel"] = 2
    try:
        try:
            spm.SentencePieceTrainer.train(**kwargs)
        except RuntimeError as e:
            raise DataError(f"{train_txt}: sentencepiece training failed ({n} lines, vocab_size={vocab_size}, "
                            f"model_type={model_type}): {e}") from None
        os.replace(f"{prefix}.vocab", out / "bpe.vocab")
        os.replace(f"{prefix}.model", out / "bpe.model")
    finally:
        for ext in (".model", ".vocab"):
            Path(f"{prefix}{ext}").unlink(missing_ok=True)
    token_list = write_token_list(out / "tokens.txt", spm_token_list(out / "bpe.model"))
    return BpeModel(out / "bpe.model", out / "bpe.vocab", token_list, train_txt)


def count_tokens(lines: Iterable[str], token_type: str = "char",
                 non_linguistic_symbols: Optional[Sequence[str]] = None, space_symbol: str = SPACE) -> Counter:
    """Token counts with ESPnet's own char/word tokenizers (what tokenize_text uses)."""
    if token_type == "char":
        from espnet2.text.char_tokenizer import CharTokenizer

        tokenizer = CharTokenizer(non_linguistic_symbols=list(non_linguistic_symbols or []), space_symbol=space_symbol)
    elif token_type == "word":
        from espnet2.text.word_tokenizer import WordTokenizer

        tokenizer = WordTokenizer()
    else:
        raise ValueError(f"token_type must be char or word, not {token_type!r}")
    counter: Counter = Counter()
    for line in lines:
        counter.update(tokenizer.text2tokens(line))
    return counter


def make_token_list(texts: Sequence[PathLike], output: PathLike, token_type: str = "char", has_ids: bool = True,
                    non_linguistic_symbols: Optional[Sequence[str]] = None, cutoff: int = 0,
                    vocab_size: int = 0) -> List[str]:
    """Write a char (or word) token list as tokenize_text --write_vocabulary does: `<blank>`, `<unk>`, tokens by
    descending count (count > cutoff; at most vocab_size - 3 of them when vocab_size > 0), `<sos/eos>`."""
    counter = count_tokens(iter_transcripts(texts, has_ids), token_type, non_linguistic_symbols)
    if not counter:
        raise DataError(f"{', '.join(map(str, texts))}: no transcripts with words to build a token list from")
    ranked = [t for t, c in sorted(counter.items(), key=lambda x: -x[1]) if c > cutoff]
    if vocab_size > 0:
        if vocab_size < 3:
            raise ValueError(f"vocab_size is too small: {vocab_size}")
        ranked = ranked[: vocab_size - 3]
    tokens = [BLANK, UNK] + ranked + [SOS_EOS]
    write_token_list(output, tokens)
    return tokens
