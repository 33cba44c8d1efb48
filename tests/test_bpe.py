"""Sentencepiece training and ESPnet token lists: the layout asr.sh writes, and a lossless round trip through
ESPnet's own tokenizer and token-id converter."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from espnet_bertkd.recipe.bin import train_bpe as cli
from espnet_bertkd.recipe.tokens import make_token_list, spm_token_list, train_bpe
from espnet_bertkd.utils.fileio import DataError

SENTENCES = [
    "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES",
    "AND WE ARE GLAD TO WELCOME HIS GOSPEL",
    "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER",
    "HE TELLS US THAT AT THIS FESTIVE SEASON OF THE YEAR",
    "WITH CHRISTMAS AND ROAST BEEF LOOMING BEFORE US",
    "SIMILES DRAWN FROM EATING AND ITS RESULTS OCCUR MOST READILY TO THE MIND",
    "HE HAS GRAVE DOUBTS WHETHER SIR FREDERICK LEIGHTON'S WORK IS REALLY GREEK AFTER ALL",
    "LINNELL'S PICTURES ARE A SORT OF UP GUARDS AND AT EM PAINTINGS",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "ZEBRAS VEX JOCKEYS WHO QUIZ THE BOXING WIZARDS",
]


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "lm_train.txt"
    path.write_text("".join(f"utt{i:03d} {s}\n" for i, s in enumerate(SENTENCES * 3)) + "utt999\n")
    return path


def vocab_pieces(vocab: Path) -> List[str]:
    return [line.split("\t")[0] for line in vocab.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_train_bpe_layout(text, tmp_path, model_type):
    out = tmp_path / f"bpe_{model_type}60"
    m = train_bpe([text], out, vocab_size=60, model_type=model_type)
    assert sorted(p.name for p in out.iterdir()) == ["bpe.model", "bpe.vocab", "tokens.txt", "train.txt"]
    assert m.train_text.read_text() == "".join(s + "\n" for s in SENTENCES * 3)  # ids cut, empty line dropped
    tokens = m.token_list.read_text(encoding="utf-8").splitlines()
    pieces = vocab_pieces(m.vocab)
    assert pieces[:3] == ["<unk>", "<s>", "</s>"] and len(pieces) == 60
    # asr.sh: <blank>, <unk>, bpe.vocab without its first three lines, <sos/eos>
    assert tokens == ["<blank>", "<unk>"] + pieces[3:] + ["<sos/eos>"]
    assert tokens == spm_token_list(m.model) and len(set(tokens)) == len(tokens)  # ESPnet: unique, <blank> first


def test_bpe_round_trip_through_espnet(text, tmp_path):
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    m = train_bpe([text], tmp_path / "bpe", vocab_size=80)
    tokenizer = build_tokenizer("bpe", str(m.model))
    converter = TokenIDConverter(str(m.token_list), unk_symbol="<unk>")
    for sentence in SENTENCES:
        tokens = tokenizer.text2tokens(sentence)
        ids = converter.tokens2ids(tokens)
        assert 1 not in ids and 0 not in ids  # no <unk>, no <blank>
        assert len(tokens) < len(sentence)  # real subwords, not characters only
        assert tokenizer.tokens2text(converter.ids2tokens(ids)) == sentence
    # a character never seen in training maps to <unk> (id 1), which must be the token list's <unk>
    assert 1 in converter.tokens2ids(tokenizer.text2tokens("QUX 7"))


def test_char_token_list_equals_tokenize_text(text, tmp_path):
    from espnet2.bin.tokenize_text import tokenize
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    ours = make_token_list([text], tmp_path / "char" / "tokens.txt", "char")
    espnet_list = tmp_path / "espnet_tokens.txt"
    # exactly asr.sh's stage 5 for token_type=char
    tokenize(input=str(text), output=str(espnet_list), field="2-", delimiter=None, token_type="char",
             space_symbol="<space>", non_linguistic_symbols=None, bpemodel=None, log_level="ERROR",
             write_vocabulary=True, vocabulary_size=0, remove_non_linguistic_symbols=False, cutoff=0,
             add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None, add_nonsplit_symbol=[])
    assert ours == espnet_list.read_text().splitlines()
    assert ours[:3] == ["<blank>", "<unk>", "<space>"] and ours[-1] == "<sos/eos>"  # space is the commonest
    tokenizer = build_tokenizer("char")
    converter = TokenIDConverter(ours, unk_symbol="<unk>")
    ids = converter.tokens2ids(tokenizer.text2tokens(SENTENCES[2]))
    assert tokenizer.tokens2text(converter.ids2tokens(ids)) == SENTENCES[2]
    capped = make_token_list([text], tmp_path / "capped.txt", "char", vocab_size=10, cutoff=0)
    assert capped == ours[:9] + ["<sos/eos>"]
    # counts in the 3 copies: THE 21, AND 12, IS 9, OF 9 (tie: first seen first), then 6
    words = make_token_list([text], tmp_path / "word.txt", "word", cutoff=8)
    assert words == ["<blank>", "<unk>", "THE", "AND", "IS", "OF", "<sos/eos>"]


@pytest.mark.parametrize("token_type,vocab_size,cutoff", [("char", 0, 0), ("char", 10, 0), ("char", 0, 40),
                                                         ("word", 0, 8), ("word", 7, 0), ("word", 0, 0)])
def test_token_list_equals_tokenize_text_write_vocabulary(text, tmp_path, token_type, vocab_size, cutoff):
    """Byte for byte what `espnet2.bin.tokenize_text --write_vocabulary` writes (asr.sh's char/word lists), with
    --vocabulary_size and --cutoff too. tokenize_text itself is not called: it reads one file, configures the root
    logger, and writes in place."""
    from espnet2.bin.tokenize_text import tokenize

    ours = tmp_path / "ours.txt"
    make_token_list([text], ours, token_type, vocab_size=vocab_size, cutoff=cutoff)
    theirs = tmp_path / "espnet_tokens.txt"
    tokenize(input=str(text), output=str(theirs), field="2-", delimiter=None, token_type=token_type,
             space_symbol="<space>", non_linguistic_symbols=None, bpemodel=None, log_level="ERROR",
             write_vocabulary=True, vocabulary_size=vocab_size, remove_non_linguistic_symbols=False, cutoff=cutoff,
             add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None, add_nonsplit_symbol=[])
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_bpe_token_list_equals_espnet3_sentencepiece(text, tmp_path, monkeypatch, model_type):
    """ESPnet's own sentencepiece helper (espnet3) trains the same pieces and the same token list (it writes no final
    newline, into the working directory, and cannot read a line with an id alone; so we keep train_bpe)."""
    e3 = pytest.importorskip("espnet3.systems.esp2_asr.src.tokenizers.sentencepiece")
    ours = train_bpe([text], tmp_path / "ours", vocab_size=60, model_type=model_type)
    monkeypatch.chdir(tmp_path)
    train_txt = tmp_path / "e3" / "train.txt"
    train_txt.parent.mkdir()
    train_txt.write_text(ours.train_text.read_text())
    e3.train_sentencepiece(str(train_txt), str(tmp_path / "e3"), vocab_size=60, model_type=model_type)
    assert ours.token_list.read_text() == (tmp_path / "e3" / "tokens.txt").read_text() + "\n"
    assert vocab_pieces(ours.vocab) == vocab_pieces(tmp_path / "e3" / f"{model_type}.vocab")


def test_errors(text, tmp_path):
    with pytest.raises(DataError) as e:
        train_bpe([text], tmp_path / "big", vocab_size=5000)
    assert f"{tmp_path}/big/train.txt: sentencepiece training failed" in str(e.value)
    assert "Vocabulary size too high" in str(e.value)
    assert not (tmp_path / "big" / "bpe.model").exists() and not list((tmp_path / "big").glob("*tmp*"))
    empty = tmp_path / "empty.txt"
    empty.write_text("utt1\nutt2\n")
    with pytest.raises(DataError, match="no transcripts with words"):
        train_bpe([empty], tmp_path / "e", vocab_size=10)


def test_cli(text, tmp_path, capsys):
    cli.main(["--text", str(text), "--output_dir", str(tmp_path / "bpe_unigram50"), "--vocab_size", "50"])
    assert "tokens.txt" in capsys.readouterr().out
    assert len((tmp_path / "bpe_unigram50" / "tokens.txt").read_text().splitlines()) == 50 - 3 + 3
    # --vocab_size does not cap a char list (asr.sh's drivers pass it for every token type)
    cli.main(["--token_type", "char", "--text", str(text), "--output_dir", str(tmp_path / "char"),
              "--vocab_size", "5"])
    chars = (tmp_path / "char" / "tokens.txt").read_text().splitlines()
    assert chars[:3] == ["<blank>", "<unk>", "<space>"] and len(chars) == 3 + 27 + 1  # A-Z and "'"
    cli.main(["--token_type", "char", "--text", str(text), "--output_dir", str(tmp_path / "c5"),
              "--max_tokens", "5"])
    assert (tmp_path / "c5" / "tokens.txt").read_text().splitlines() == chars[:4] + ["<sos/eos>"]
    with pytest.raises(SystemExit) as e:
        cli.main(["--text", str(text), "--output_dir", str(tmp_path / "x")])
    assert "needs --vocab_size" in str(e.value.code)
