"""The word n-gram for big text (recipe/kenlm.py, recipe/bin/train_ngram): KenLM's lmplz/build_binary when found,
else the Python estimator, which refuses a text beyond --max_python_words naming lmplz.

A fake lmplz on the PATH records what train_ngram asks of it (these run everywhere); where a real lmplz is on the
PATH (or in $KENLM_BIN), its ARPA is compared with the Python estimator's."""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from espnet_bertkd.recipe.bin import train_ngram
from espnet_bertkd.recipe.kenlm import find_kenlm
from espnet_bertkd.recipe.ngram import BOS, ArpaModel, estimate, read_sentences

REPO = Path(__file__).resolve().parents[1]
TEXT = ["u1 the cat sat on the mat", "u2 the dog sat on the log", "u3 a cat and a dog",
        "u4 the cat ate the rat", "u5 a rat sat on a mat"]

FAKE_LMPLZ = f"""#!{sys.executable}
# Records its arguments and stdin, then writes the Python estimator's ARPA to stdout (or fails on request).
import json, os, sys
sys.path.insert(0, {str(REPO)!r})
from espnet_bertkd.recipe.ngram import estimate
text = sys.stdin.read()
with open(os.environ["FAKE_KENLM_LOG"], "a") as f:
    f.write(json.dumps({{"prog": "lmplz", "argv": sys.argv[1:], "stdin": text}}) + "\\n")
if os.environ.get("FAKE_LMPLZ_FAIL"):
    sys.stderr.write("lmplz: No space left on device while writing /tmp/x\\n")
    sys.exit(1)
order = int(sys.argv[sys.argv.index("-o") + 1])
model = estimate([line.split() for line in text.splitlines() if line.split()], order)
tmp = os.environ["FAKE_KENLM_LOG"] + ".arpa"
model.write_arpa(tmp)
sys.stdout.write(open(tmp).read())
"""

FAKE_BUILD_BINARY = f"""#!{sys.executable}
import json, os, shutil, sys
with open(os.environ["FAKE_KENLM_LOG"], "a") as f:
    f.write(json.dumps({{"prog": "build_binary", "argv": sys.argv[1:]}}) + "\\n")
shutil.copyfile(sys.argv[-2], sys.argv[-1])
"""


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "lm_train.txt"
    path.write_text("".join(line + "\n" for line in TEXT))
    return path


@pytest.fixture
def fake_kenlm(tmp_path, monkeypatch):
    bindir = tmp_path / "kenlm_bin"
    bindir.mkdir()
    for name, body in (("lmplz", FAKE_LMPLZ), ("build_binary", FAKE_BUILD_BINARY)):
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    log = tmp_path / "kenlm_calls.jsonl"
    monkeypatch.setenv("FAKE_KENLM_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def token_list(tmp_path) -> Path:
    chars = sorted({c for line in TEXT for c in " ".join(line.split()[1:]) if c != " "})
    path = tmp_path / "tokens.txt"
    path.write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
    return path


def test_lmplz_on_the_path_is_used_with_espnets_options(tmp_path, text, fake_kenlm):
    out = tmp_path / "ngram"
    train_ngram.main(["--text", str(text), "--output_dir", str(out), "--order", "3",
                      "--token_list", str(token_list(tmp_path)), "--token_type", "char"])
    lmplz, build_binary = calls(fake_kenlm)
    assert lmplz["prog"] == "lmplz" and build_binary["prog"] == "build_binary"
    argv = lmplz["argv"]
    assert argv[argv.index("-o") + 1] == "3" and "--discount_fallback" in argv and argv[argv.index("-S") + 1] == "20%"
    assert lmplz["stdin"] == "".join(" ".join(line.split()[1:]) + "\n" for line in TEXT)  # ids dropped
    assert build_binary["argv"][0] == "-s" and build_binary["argv"][1] == str(out / "lm.arpa")
    info = json.loads((out / "ngram.json").read_text())
    assert info["estimator"] == "kenlm" and info["lm"] == "lm.bin" and (out / "lm.bin").is_file()
    assert (out / "lm.bin").read_bytes() == (out / "lm.arpa").read_bytes()  # the fake's "binary" is a copy
    words = {w for line in TEXT for w in line.split()[1:]}
    lexicon = {line.split("\t")[0] for line in (out / "lexicon.txt").read_text().splitlines()}
    assert lexicon == words  # the lexicon comes from lmplz's unigrams (<unk>, </s>, <s> left out)
    assert not list(out.glob("*.tmp*"))


def test_python_estimator_when_asked_even_with_lmplz_found(tmp_path, text, fake_kenlm):
    out = tmp_path / "ngram"
    train_ngram.main(["--text", str(text), "--output_dir", str(out), "--estimator", "python"])
    assert calls(fake_kenlm) == []
    info = json.loads((out / "ngram.json").read_text())
    assert info["estimator"] == "python" and info["lm"] == "lm.arpa" and not (out / "lm.bin").exists()


def test_a_failing_lmplz_is_one_line_naming_it_and_leaves_no_arpa(tmp_path, text, fake_kenlm, monkeypatch):
    monkeypatch.setenv("FAKE_LMPLZ_FAIL", "1")
    out = tmp_path / "ngram"
    with pytest.raises(SystemExit) as e:
        train_ngram.main(["--text", str(text), "--output_dir", str(out)])
    assert "lmplz" in str(e.value) and "No space left on device" in str(e.value)
    assert not (out / "lm.arpa").exists() and not (out / "ngram.json").exists() and not list(out.glob("*.tmp*"))


def test_kenlm_asked_for_but_missing_is_refused(tmp_path, text, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    with pytest.raises(SystemExit) as e:
        train_ngram.main(["--text", str(text), "--output_dir", str(tmp_path / "o"), "--estimator", "kenlm",
                          "--kenlm_bin", str(empty)])
    assert "no lmplz" in str(e.value) and str(empty) in str(e.value)


def test_python_estimator_refuses_a_text_beyond_its_limit_naming_lmplz(tmp_path, text):
    words = sum(len(line.split()) - 1 for line in TEXT)
    with pytest.raises(SystemExit) as e:
        train_ngram.main(["--text", str(text), "--output_dir", str(tmp_path / "o"), "--estimator", "python",
                          "--max_python_words", str(words - 1)])
    assert "lmplz" in str(e.value) and "--max_python_words" in str(e.value)
    assert not (tmp_path / "o" / "lm.arpa").exists()
    train_ngram.main(["--text", str(text), "--output_dir", str(tmp_path / "o"), "--estimator", "python",
                      "--max_python_words", str(words)])  # exactly at the limit: estimated
    assert (tmp_path / "o" / "lm.arpa").is_file()


REAL = find_kenlm(os.environ.get("KENLM_BIN"))


@pytest.mark.skipif(REAL is None, reason="KenLM's lmplz is not on the PATH nor in $KENLM_BIN (built by hand: "
                                         "espnet_bertkd/recipe/kenlm.py says how)")
@pytest.mark.parametrize("order", [2, 3, 4])
def test_real_lmplz_and_the_python_estimator_agree(tmp_path, order):
    """Same n-grams, log10 probabilities and backoffs within ARPA's printed precision, on a Zipf-like text with every
    discount estimable (<s>'s probability, never used, is written -99 by one and 0 by the other)."""
    g = random.Random(order)
    vocab = [f"w{i}" for i in range(60)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    sentences = [g.choices(vocab, weights, k=g.randint(1, 12)) for _ in range(2000)]
    text = tmp_path / "text"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences))
    out = tmp_path / "kenlm"
    train_ngram.main(["--text", str(text), "--no_ids", "--output_dir", str(out), "--order", str(order),
                      "--estimator", "kenlm", "--kenlm_bin", str(Path(REAL.lmplz).parent), "--kenlm_memory", "64M"])
    estimate(list(read_sentences(text)), order).write_arpa(tmp_path / "python.arpa")
    kenlm, python = ArpaModel(out / "lm.arpa"), ArpaModel(tmp_path / "python.arpa")
    assert set(kenlm.logprob) == set(python.logprob) and set(kenlm.logbow) == set(python.logbow)
    assert len(kenlm.logprob) > 1000
    for ngram, logp in kenlm.logprob.items():
        if ngram != (BOS,):
            assert abs(logp - python.logprob[ngram]) < 1e-5, ngram
    for ngram, bow in kenlm.logbow.items():
        assert abs(bow - python.logbow[ngram]) < 1e-5, ngram


def test_find_kenlm_needs_lmplz(tmp_path):
    only_binary = tmp_path / "b"
    only_binary.mkdir()
    (only_binary / "build_binary").write_text("#!/bin/sh\n")
    (only_binary / "build_binary").chmod(0o755)
    assert find_kenlm(only_binary) is None
    (only_binary / "lmplz").write_text("#!/bin/sh\n")
    (only_binary / "lmplz").chmod(0o755)
    found = find_kenlm(only_binary)
    assert found is not None and found.lmplz == str(only_binary / "lmplz")
    assert found.build_binary == str(only_binary / "build_binary")
