"""Lexicon CTC beam search with a word n-gram LM (espnet_bertkd.asr.lexicon_ctc, bin/ctc_lm_inference) and the
ARPA estimator it reads (espnet_bertkd.recipe.ngram, recipe/bin/train_ngram).

flashlight-text (with KenLM) has manylinux wheels for CPython 3.11 and 3.12, the two tested environments, so nothing
here is skipped: a missing package is an installation error (tools/install.sh installs the [lm] extra)."""
from __future__ import annotations

import json
import math
import re
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List, Sequence

import pytest
import torch

from conftest import TEXTS, TOKENS
from espnet_bertkd.asr.greedy_ctc import collapse
from espnet_bertkd.asr.lexicon_ctc import LexiconCTCDecoder, read_lexicon, require_flashlight, spell, write_lexicon
from espnet_bertkd.recipe.ngram import ArpaModel, estimate, linear_prob

REPO = Path(__file__).resolve().parents[1]
try:
    require_flashlight()
    HAVE_FLASHLIGHT = True
except ImportError:
    HAVE_FLASHLIGHT = False
# The one exception: flashlight-text's last release (0.0.7) has no wheel for CPython >= 3.13 (setup.py's [lm] extra
# is empty there), so the tests that run its search are skipped on 3.13 when it is absent.
needs_flashlight = pytest.mark.skipif(not HAVE_FLASHLIGHT and sys.version_info >= (3, 13),
                                      reason="flashlight-text 0.0.7 has no wheel for Python >= 3.13")
FLASHLIGHT_MODULES = ("flashlight", "flashlight.lib", "flashlight.lib.text", "flashlight.lib.text.decoder",
                      "flashlight.lib.text.decoder.kenlm")


def words_of(texts: Sequence[str]) -> List[List[str]]:
    return [t.split() for t in texts]


# ------------------------------------------------------------------------------------------------ the n-gram model


def random_text(seed: int = 0, sentences: int = 300, vocab: int = 40) -> List[List[str]]:
    """Zipf-like random sentences: enough repeated n-grams for every modified-KN discount to be estimated."""
    g = random.Random(seed)
    words = [f"W{i}" for i in range(vocab)]
    weights = [1.0 / (i + 1) for i in range(vocab)]
    return [g.choices(words, weights, k=g.randint(1, 9)) for _ in range(sentences)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("corpus", ["tiny", "random"])
def test_every_context_of_the_arpa_sums_to_one(tmp_path, order, corpus):
    text = words_of(TEXTS) if corpus == "tiny" else random_text()
    model = estimate(text, order)
    model.write_arpa(tmp_path / "lm.arpa")
    arpa = ArpaModel(tmp_path / "lm.arpa")
    assert arpa.order == order and set(arpa.vocab) == set(model.vocab)
    assert {"</s>", "<unk>"} <= set(arpa.vocab) and "<s>" not in arpa.vocab
    contexts = arpa.contexts()
    assert len(contexts) > (1 if order > 1 else 0)
    # every context the file holds, and contexts it does not (backing off to a shorter one)
    unseen = [("W0", "W0", "W0"), ("<s>", "W39"), ("THEIR", "THEIR")]
    for context in contexts + unseen:
        assert arpa.context_mass(context) == pytest.approx(1.0, abs=1e-5), context
    # the file's backoff query gives the estimator's own interpolated probabilities
    for ngram in list(model.prob[order - 1])[:50]:
        if ngram[-1] != "<s>":
            assert 10 ** arpa.log10(ngram[-1], ngram[:-1]) == pytest.approx(linear_prob(model, ngram), rel=1e-5)


def test_modified_kneser_ney_by_hand(tmp_path):
    """Bigram model of 'A B' twice and 'A' once: fallback discounts (D1 .5, D2 1, D3+ 1.5) since counts of counts are
    missing; the values below are worked out from the formulas in espnet_bertkd/recipe/ngram.py."""
    model = estimate([["A", "B"], ["A", "B"], ["A"]], order=2)
    assert model.discounts[0] == model.discounts[1] == (0.5, 1.0, 1.5)
    # unigram continuation counts (distinct left neighbours, <s> included): A 1 (<s>), B 1 (A), </s> 2 (A, B);
    # S = 4, discounted mass .5 + .5 + 1.0 = 2, gamma = 0.5, spread uniformly over A, B, </s>, <unk>
    v = 4
    assert model.prob[0][("A",)] == pytest.approx((1 - 0.5) / 4 + 0.5 / v)
    assert model.prob[0][("B",)] == pytest.approx((1 - 0.5) / 4 + 0.5 / v)
    assert model.prob[0][("</s>",)] == pytest.approx((2 - 1.0) / 4 + 0.5 / v)
    assert model.prob[0][("<unk>",)] == pytest.approx(0.5 / v)
    # bigrams (raw counts): <s> A 3 (D3+ 1.5, gamma(<s>) 1.5 / 3);
    # A B 2 (D2 1), A </s> 1 (D1 .5): gamma(A) = 1.5 / 3
    assert model.prob[1][("<s>", "A")] == pytest.approx((3 - 1.5) / 3 + 0.5 * model.prob[0][("A",)])
    assert model.prob[1][("A", "B")] == pytest.approx((2 - 1.0) / 3 + 0.5 * model.prob[0][("B",)])
    # B </s> 2 (D2 1): gamma(B) = 1 / 2, the backoff weight the ARPA file gives B
    assert model.prob[1][("B", "</s>")] == pytest.approx((2 - 1.0) / 2 + 0.5 * model.prob[0][("</s>",)])
    assert model.gamma[1][("A",)] == pytest.approx(0.5) and model.backoff(("B",)) == pytest.approx(0.5)


@needs_flashlight
def test_kenlm_reads_the_arpa_and_agrees(tmp_path):
    require_flashlight()
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    text = random_text(seed=1)
    estimate(text, 3).write_arpa(tmp_path / "lm.arpa")
    arpa = ArpaModel(tmp_path / "lm.arpa")
    words = Dictionary()
    for w in arpa.vocab:
        words.add_entry(w)
    lm = KenLM(str(tmp_path / "lm.arpa"), words)
    for sentence in text[:20] + [["W5", "W0", "NOT_IN_VOCAB", "W3"]]:
        state, total = lm.start(False), 0.0
        for w in sentence:
            state, score = lm.score(state, words.get_index(w if w in arpa.vocab else "<unk>"))
            total += score
        state, score = lm.finish(state)
        total += score
        assert total == pytest.approx(arpa.sentence_log10(sentence), abs=1e-4), sentence


# ------------------------------------------------------------------------------------- the search on given emissions


class GivenEmissions:
    """Stands in for GreedyCTCDecoder: `encode` returns preset (B, T, V) scores; the model's CTC log-softmaxes."""

    def __init__(self, logits: torch.Tensor, lengths: torch.Tensor) -> None:
        ctc = SimpleNamespace(log_softmax=lambda x: torch.log_softmax(x, dim=-1))
        self.model = SimpleNamespace(token_list=list(TOKENS), blank_id=0, ctc=ctc)
        self.logits, self.lengths = logits, lengths
        self.inference_params = 0

    def encode(self, speech, lengths):
        return self.logits, self.lengths, {}


def frames_for(words: Sequence[str], g: random.Random) -> List[int]:
    """A CTC frame path spelling `words` (characters, <space> between words): random repeats, blanks where needed
    (between equal tokens) and elsewhere at random, leading and trailing blanks/spaces."""
    tokens: List[str] = []
    for i, w in enumerate(words):
        tokens += list(w) + (["<space>"] if i + 1 < len(words) else [])
    path = [0] * g.randint(0, 2) + ([TOKENS.index("<space>")] if g.random() < 0.3 else [])
    for t in tokens:
        idx = TOKENS.index(t)
        if path and (path[-1] == idx or g.random() < 0.4):
            path.append(0)
        path += [idx] * g.randint(1, 3)
    return path + [0] * g.randint(0, 2)


def peaked(paths: List[List[int]], seed: int, margin: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    length = max(map(len, paths))
    logits = torch.randn(len(paths), length, len(TOKENS), generator=g)
    for b, path in enumerate(paths):
        for t, idx in enumerate(path):
            logits[b, t, idx] += margin
    return logits, torch.tensor([len(p) for p in paths])


def lexicon_file(tmp_path: Path, words) -> Path:
    """A character lexicon of `words` (what ESPnet's char tokenizer gives a word: its characters)."""
    lexicon, bad = spell(sorted(set(words)), TOKENS, SimpleNamespace(text2tokens=list))
    assert bad == []
    path = tmp_path / "lexicon.txt"
    with open(path, "w", encoding="utf-8") as f:
        write_lexicon(lexicon, f)
    return path


def text_of(decoder: LexiconCTCDecoder, token_int: List[int]) -> str:
    return "".join(" " if TOKENS[i] == "<space>" else TOKENS[i] for i in token_int)


@needs_flashlight
def test_without_lm_the_search_finds_the_greedy_path(tmp_path):
    """With no LM, no word or silence score and a wide beam, the score is the best frame path's log-probability
    (Viterbi), so when the greedy path spells lexicon words the search must return exactly those words, whatever
    the repeats, blanks and spaces; words that are prefixes of others (THE/THERE/THEIR, TO/TOO) are in the lexicon."""
    vocab = sorted({w for t in TEXTS for w in t.split()} | {"THEM", "TOOK", "WEST"})
    lexicon = lexicon_file(tmp_path, vocab)
    g = random.Random(0)
    sentences = [[g.choice(vocab) for _ in range(g.randint(1, 6))] for _ in range(24)] + [["TOO", "TOO", "SEE"]]
    paths = [frames_for(s, g) for s in sentences]
    logits, lengths = peaked(paths, seed=0, margin=5.0)
    greedy_ids, _ = collapse(torch.log_softmax(logits, -1), lengths, [0])
    decoder = LexiconCTCDecoder(GivenEmissions(logits, lengths), lexicon, lm=None, beam_size=100,
                                beam_threshold=1000.0)
    results = decoder(torch.zeros(len(paths), 1), lengths)
    for sentence, greedy, result in zip(sentences, greedy_ids, results):
        greedy_text = " ".join(text_of(decoder, greedy).split())
        if greedy_text.split() != sentence:  # noise beat the margin somewhere: the greedy path spells other words
            continue
        assert text_of(decoder, result.token_int) == " ".join(sentence)
        # the score is the path's log-probability: the greedy path's (plus the appended frame's 0)
        assert result.score == pytest.approx(float(torch.log_softmax(logits[sentences.index(sentence)], -1)
                                                   [: len(paths[sentences.index(sentence)])].max(-1).values.sum()),
                                             abs=1e-3)
    checked = sum(" ".join(text_of(decoder, g_).split()).split() == s for s, g_ in zip(sentences, greedy_ids))
    assert checked >= len(sentences) // 2


@needs_flashlight
def test_the_lm_moves_the_hypothesis_toward_its_text(tmp_path):
    """Acoustically 'I WANT TOO GO' (a weak second O); the LM's text says 'I WANT TO GO'. Without the LM the search
    keeps the acoustics' TOO, with it the LM's TO."""
    vocab = ["I", "WANT", "TO", "TOO", "GO", "ME"]
    lexicon = lexicon_file(tmp_path, vocab)
    estimate([["I", "WANT", "TO", "GO"]] * 20 + [["ME", "TOO"]] * 20, 3).write_arpa(tmp_path / "lm.arpa")
    ids = {t: TOKENS.index(t) for t in ("I", "W", "A", "N", "T", "O", "G", "<space>")}
    path = [ids[c] for c in ["I", "<space>", "W", "A", "N", "T", "<space>", "T", "O"]] + [0, ids["O"]] + \
           [ids[c] for c in ["<space>", "G", "O"]]
    logits = torch.full((1, len(path), len(TOKENS)), -10.0)
    for t, idx in enumerate(path):
        logits[0, t, idx] = 10.0
    weak = path.index(0) + 1  # the second O: only slightly more likely than blank
    logits[0, weak, 0] = 9.0
    lengths = torch.tensor([len(path)])
    emissions = GivenEmissions(logits, lengths)
    plain = LexiconCTCDecoder(emissions, lexicon, lm=None)(torch.zeros(1, 1), lengths)[0]
    fused = LexiconCTCDecoder(emissions, lexicon, lm=str(tmp_path / "lm.arpa"), lm_weight=1.0)(
        torch.zeros(1, 1), lengths)[0]
    assert text_of(None, plain.token_int) == "I WANT TOO GO"
    assert text_of(None, fused.token_int) == "I WANT TO GO"


def test_lexicon_round_trip_and_unspellable_words(tmp_path):
    from espnet2.text.build_tokenizer import build_tokenizer

    lexicon, bad = spell(["THEIR", "CAFÉ", "<unk>", "TWO"], TOKENS, build_tokenizer(token_type="char"))
    assert bad == ["CAFÉ"] and lexicon == {"THEIR": list("THEIR") + ["<space>"], "TWO": list("TWO") + ["<space>"]}
    with open(tmp_path / "lex.txt", "w", encoding="utf-8") as f:
        write_lexicon(lexicon, f)
    assert read_lexicon(tmp_path / "lex.txt") == lexicon


# ------------------------------------------------------------------------------------------ the entry points


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from probes.decoding import waves, write_model, write_sound

    root = tmp_path_factory.mktemp("lmdec")
    cfg, pth = write_model(root)
    scp = write_sound(root / "data", waves())
    return root, cfg, pth, scp


@needs_flashlight
def test_entry_points_write_espnet_outputs(model, tmp_path):
    """train_ngram on the greedy hypotheses' text, then ctc_lm_inference: ESPnet's 1best_recog layout for the same
    utterances, text = the spelled tokens, speed.json with the search's settings; without an LM and with the greedy
    words as lexicon the hypotheses are greedy's."""
    from espnet_bertkd.bin import ctc_greedy_inference, ctc_lm_inference
    from espnet_bertkd.recipe.bin import train_ngram

    root, cfg, pth, scp = model
    common = ["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
              "--data_path_and_name_and_type", f"{scp},speech,sound", "--batch_size", "2"]
    ctc_greedy_inference.main(common + ["--output_dir", str(tmp_path / "greedy")])
    greedy = dict(line.split(" ", 1) if " " in line else (line, "")
                  for line in (tmp_path / "greedy/1best_recog/text").read_text().splitlines())
    assert any(t.strip() for t in greedy.values())
    (tmp_path / "text").write_text("".join(f"{k} {' '.join(v.split())}\n" for k, v in greedy.items() if v.split()))
    token_list = tmp_path / "tokens.txt"
    token_list.write_text("\n".join(TOKENS) + "\n")
    train_ngram.main(["--text", str(tmp_path / "text"), "--output_dir", str(tmp_path / "ngram"),
                      "--token_list", str(token_list), "--token_type", "char", "--order", "2"])
    info = json.loads((tmp_path / "ngram/ngram.json").read_text())
    assert info["order"] == 2 and (tmp_path / "ngram/lm.arpa").exists()

    (tmp_path / "decode.yaml").write_text("lm_weight: 0.0\nbeam_size: 200\nbeam_threshold: 1000\n")
    for name, extra in (("lm", ["--lm", str(tmp_path / "ngram/lm.arpa"), "--lm_weight", "0.5"]),
                        ("nolm", ["--lm", "none", "--lexicon", str(tmp_path / "ngram/lexicon.txt"),
                                  "--decode_config", str(tmp_path / "decode.yaml")])):
        out = tmp_path / name
        ctc_lm_inference.main(common + ["--output_dir", str(out)] + extra)
        files = {f: dict(line.split(" ", 1) if " " in line else (line, "")
                         for line in (out / "1best_recog" / f).read_text().splitlines())
                 for f in ("text", "token", "token_int", "score")}
        assert all(set(v) == set(greedy) for v in files.values())
        for key in greedy:
            ids = [int(i) for i in files["token_int"][key].split()]
            assert files["token"][key].split() == [TOKENS[i] for i in ids]
            assert files["text"][key] == "".join(" " if TOKENS[i] == "<space>" else TOKENS[i] for i in ids)
            assert math.isfinite(float(files["score"][key]))
        speed = json.loads((out / "speed.json").read_text())
        assert speed["decoder"] == "ctc_lm_inference" and speed["utterances"] == len(greedy) and speed["rtf"] > 0
        assert speed["search"]["beam_size"] == (200 if name == "nolm" else 50)
        if name == "nolm":  # greedy's words are the lexicon, no LM: greedy's hypotheses
            assert {k: " ".join(v.split()) for k, v in files["text"].items()} == \
                   {k: " ".join(v.split()) for k, v in greedy.items()}


def test_missing_flashlight_is_named(model, tmp_path, monkeypatch):
    from espnet_bertkd.bin import ctc_lm_inference

    for name in FLASHLIGHT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install flashlight-text"):
        require_flashlight()
    root, cfg, pth, scp = model
    lexicon = lexicon_file(tmp_path, ["TWO"])
    with pytest.raises(SystemExit) as err:
        ctc_lm_inference.main(["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
                               "--data_path_and_name_and_type", f"{scp},speech,sound",
                               "--output_dir", str(tmp_path / "out"), "--lm", "none", "--lexicon", str(lexicon)])
    assert "ctc_lm_inference" in str(err.value.code) and "flashlight-text" in str(err.value.code)


def test_plugin_imports_without_flashlight():
    """flashlight-text (and torchaudio's decoder module, which needs it) are imported only inside functions."""
    import ast

    for path in (REPO / "espnet_bertkd/asr/lexicon_ctc.py", REPO / "espnet_bertkd/bin/ctc_lm_inference.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        assert not [m for m in names if m.startswith(("flashlight", "torchaudio"))], (path, names)


@needs_flashlight
def test_token_lm_scores_words_as_espnet_scores_their_tokens(tmp_path):
    """The Transformer-LM-through-CTCDecoderLM option: a word sequence's score (start, each word, finish) is ESPnet's
    own sentence log-probability of its characters, plus the per-token bonus; and the search runs with it."""
    import argparse

    from espnet2.tasks.lm import LMTask

    from espnet_bertkd.asr.lexicon_ctc import token_lm_for_words, write_word_dict
    from probes.decoding import write_lm

    with open(write_lm(tmp_path), encoding="utf-8") as f:
        import yaml

        lm_args = argparse.Namespace(**yaml.safe_load(f))
    torch.manual_seed(0)
    lm = LMTask.build_model(lm_args).eval()
    vocab = ["THEIR", "THERE", "HOUSE", "IS", "OVER"]
    lexicon_path = lexicon_file(tmp_path, vocab)
    words = write_word_dict(lexicon_path, tmp_path / "words.txt")
    bonus = 0.25
    scorer = token_lm_for_words(lm, TOKENS, read_lexicon(lexicon_path), words, token_bonus=bonus)
    for sentence in ("THEIR HOUSE IS OVER THERE", "IS", "THERE THERE"):
        state, total = scorer.start(False), 0.0
        for w in sentence.split():
            state, score = scorer.score(state, words.index(w))
            total += score
        total += scorer.finish(state)[1]
        ids = [TOKENS.index("<space>" if c == " " else c) for c in sentence]
        with torch.no_grad():
            nll, _ = lm.nll(torch.tensor([ids]), torch.tensor([len(ids)]))
        assert total == pytest.approx(-float(nll.sum()) + bonus * len(ids), abs=1e-4), sentence
    path = frames_for(["THEIR", "HOUSE"], random.Random(0))
    logits, lengths = peaked([path], seed=0, margin=8.0)
    decoder = LexiconCTCDecoder(GivenEmissions(logits, lengths), lexicon_path, lm=scorer, lm_weight=0.5,
                                lm_dict=tmp_path / "words.txt")
    assert text_of(None, decoder(torch.zeros(1, 1), lengths)[0].token_int) == "THEIR HOUSE"


@needs_flashlight
@pytest.mark.parametrize("case,expected", [
    ("unterminated", "must end every spelling with <space>"),
    ("binary_lm", "binary KenLM files need --lexicon"),
    ("missing_lexicon", "--lexicon .*: no such file"),
    ("bad_config", "beam_size must be an integer"),
])
def test_bad_decoder_inputs_are_named(model, tmp_path, case, expected):
    """Inputs that would silently wreck the output or end in a traceback stop with one line naming the input."""
    from espnet_bertkd.bin import ctc_lm_inference

    root, cfg, pth, scp = model
    args = ["--asr_train_config", str(cfg), "--asr_model_file", str(pth), "--output_dir", str(tmp_path / "out"),
            "--data_path_and_name_and_type", f"{scp},speech,sound"]
    lexicon = lexicon_file(tmp_path, ["TWO"])
    if case == "unterminated":  # another tool's lexicon for a character model: no <space> after each word
        lexicon.write_text("TWO\tT W O\n")
        args += ["--lm", "none", "--lexicon", str(lexicon)]
    elif case == "binary_lm":
        (tmp_path / "lm.bin").write_bytes(b"mmap lm http://kheafield.com/code\x00\xff\xfe")
        args += ["--lm", str(tmp_path / "lm.bin")]
    elif case == "missing_lexicon":
        args += ["--lm", "none", "--lexicon", str(tmp_path / "nope.txt")]
    else:
        (tmp_path / "decode.yaml").write_text("beam_size: '50'\n")
        args += ["--lm", "none", "--lexicon", str(lexicon), "--decode_config", str(tmp_path / "decode.yaml")]
    with pytest.raises(SystemExit) as err:
        ctc_lm_inference.main(args)
    assert re.search(expected, str(err.value.code)), err.value.code
    assert not (tmp_path / "out" / "1best_recog").exists()
