"""Word n-gram language models in ARPA format, estimated in Python (no KenLM `lmplz` needed): interpolated modified
Kneser-Ney (Chen & Goodman 1999, as KenLM's `lmplz` estimates it, without pruning), for the lexicon CTC decoder
(espnet_bertkd.asr.lexicon_ctc), whose KenLM reads the ARPA file.

Sentences are padded with one `<s>` and one `</s>`. The highest order uses raw counts; lower orders use continuation
counts (how many distinct words precede the n-gram), except n-grams that start with `<s>`, which keep raw counts
(nothing precedes `<s>`). Each order k has discounts D1, D2, D3+ from its count-of-counts:
Y = n1 / (n1 + 2 n2), D1 = 1 - 2 Y n2 / n1, D2 = 2 - 3 Y n3 / n2, D3+ = 3 - 4 Y n4 / n3
(fallback 0.5 / 1.0 / 1.5 where a count-of-counts is zero or a discount leaves its range, as on tiny texts).

    p(w | h) = (a(h w) - D(a(h w))) / S(h) + gamma(h) p(w | h')      S(h) = sum_w a(h w)
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / S(h)

with unigrams interpolated with the uniform distribution over the vocabulary (every word, `</s>` and `<unk>`; not
`<s>`). Since the model is interpolated, the ARPA probability of a seen n-gram is p(w | h) above and the backoff
weight of a context is gamma(h): an unseen w gets gamma(h) p(w | h'), and every context's distribution sums to one
(`ArpaModel.context_mass` checks it; tests/test_lm_decoding.py for every context of a text).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from espnet_bertkd.utils.fileio import atomic_open

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NEVER = -99.0  # ARPA's log10 probability of <s>, which is never predicted
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)

Ngram = Tuple[str, ...]


def discounts(counts: Iterable[int]) -> Tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from one order's (adjusted) counts."""
    coc = Counter(c for c in counts if 1 <= c <= 4)
    n1, n2, n3, n4 = (coc[i] for i in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < di < i + 1 for i, di in enumerate(d)):
        return FALLBACK_DISCOUNTS
    return d


@dataclass
class NgramModel:
    """An estimated model in linear probabilities: per order k (index k - 1), p(w | h) of every n-gram with a
    non-zero adjusted count, and gamma(h) of every context of the order (the backoff weight of h in ARPA)."""

    order: int
    vocab: List[str]  # every predictable word (</s> and <unk> included, <s> not), sorted
    prob: List[Dict[Ngram, float]]
    gamma: List[Dict[Ngram, float]]  # [k - 1]: context h (length k - 1) -> gamma(h)
    discounts: List[Tuple[float, float, float]]

    def backoff(self, ngram: Ngram) -> Optional[float]:
        """The ARPA backoff weight of an n-gram (as the context of the order above), None at the highest order."""
        if len(ngram) >= self.order:
            return None
        return self.gamma[len(ngram)].get(ngram, 1.0)

    def write_arpa(self, path: Union[str, Path]) -> None:
        """ARPA text (log10 probabilities and backoffs), written atomically."""
        with atomic_open(path) as f:
            f.write("\\data\\\n")
            for k in range(self.order):
                f.write(f"ngram {k + 1}={len(self.prob[k])}\n")
            for k in range(self.order):
                f.write(f"\n\\{k + 1}-grams:\n")
                for ngram in sorted(self.prob[k]):
                    p = self.prob[k][ngram]
                    logp = NEVER if ngram == (BOS,) else math.log10(p)
                    line = f"{logp:.7g}\t{' '.join(ngram)}"
                    bow = self.backoff(ngram)
                    if bow is not None:
                        line += f"\t{math.log10(bow):.7g}"
                    f.write(line + "\n")
            f.write("\n\\end\\\n")


def read_sentences(path: Union[str, Path], skip_key: bool = False) -> Iterable[List[str]]:
    """Whitespace-tokenised non-empty lines of a text file (`skip_key`: drop the first field, a Kaldi key)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split()[1:] if skip_key else line.split()
            if words:
                yield words


def estimate(text: Iterable[Sequence[str]], order: int = 3) -> NgramModel:
    """Interpolated modified Kneser-Ney estimate of an `order`-gram model on tokenised sentences."""
    if order < 1:
        raise ValueError(f"order must be >= 1, not {order}")
    raw: List[Counter] = [Counter() for _ in range(order)]  # [k - 1]: order-k n-grams as they occur
    words: set = set()
    for sent in text:
        bad = [w for w in sent if w in (BOS, EOS, UNK)]
        if bad:
            raise ValueError(f"a sentence contains {bad[0]}: {' '.join(sent)}")
        words.update(sent)
        padded = (BOS, *sent, EOS)
        for i in range(1, len(padded)):
            for k in range(1, min(order, i + 1) + 1):
                raw[k - 1][padded[i + 1 - k : i + 1]] += 1
    if not words:
        raise ValueError("no text to estimate an n-gram model on")
    # adjusted counts: raw at the highest order and for n-grams that start with <s>; else continuation counts
    adjusted: List[Counter] = [Counter() for _ in range(order)]
    for k in range(1, order + 1):
        for ngram, c in raw[k - 1].items():
            if k == order or ngram[0] == BOS:
                adjusted[k - 1][ngram] = c
    for k in range(order, 1, -1):
        for ngram in raw[k - 1]:
            if ngram[1] != BOS:
                adjusted[k - 2][ngram[1:]] += 1
    vocab = sorted(words | {EOS, UNK})

    ds = [discounts(adjusted[k].values()) for k in range(order)]
    prob: List[Dict[Ngram, float]] = [dict() for _ in range(order)]
    gamma: List[Dict[Ngram, float]] = [dict() for _ in range(order)]
    model = NgramModel(order, vocab, prob, gamma, ds)
    for k in range(order):
        d = ds[k]
        totals: Dict[Ngram, float] = defaultdict(float)
        mass: Dict[Ngram, float] = defaultdict(float)
        for ngram, c in adjusted[k].items():
            totals[ngram[:-1]] += c
            mass[ngram[:-1]] += d[min(c, 3) - 1]
        gamma[k] = {h: mass[h] / totals[h] for h in totals}
        for ngram, c in adjusted[k].items():
            h = ngram[:-1]
            lower = 1.0 / len(vocab) if k == 0 else linear_prob(model, ngram[1:])
            prob[k][ngram] = (c - d[min(c, 3) - 1]) / totals[h] + gamma[k][h] * lower
    for w in vocab:  # <unk> (and nothing else: every word of the text is predicted somewhere) gets the uniform share
        prob[0].setdefault((w,), gamma[0][()] / len(vocab))
    prob[0][(BOS,)] = 0.0  # written as -99; listed since it is a context
    return model


def linear_prob(model: NgramModel, ngram: Ngram) -> float:
    """p(w | h) for ngram = h + (w,), backing off through the model's lower orders where h w is unseen."""
    ngram = ngram[-model.order :]
    while True:
        p = model.prob[len(ngram) - 1].get(ngram)
        if p is not None:
            return p
        if len(ngram) == 1:
            p = model.prob[0].get((UNK,), 0.0)
            return p
        weight = model.gamma[len(ngram) - 1].get(ngram[:-1], 1.0)
        return weight * linear_prob(model, ngram[1:])


class ArpaModel:
    """An ARPA file read back, with the standard backoff query: what KenLM computes from the same file."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.logprob: Dict[Ngram, float] = {}
        self.logbow: Dict[Ngram, float] = {}
        self.order = 0
        section = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("ngram ") or line == "\\data\\":
                    continue
                if line == "\\end\\":
                    break
                if line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1:].split("-")[0])
                    self.order = max(self.order, section)
                    continue
                fields = line.split("\t") if "\t" in line else line.split()
                ngram = tuple(fields[1].split()) if "\t" in line else tuple(fields[1 : 1 + section])
                self.logprob[ngram] = float(fields[0])
                rest = fields[2:] if "\t" in line else fields[1 + section :]
                if rest:
                    self.logbow[ngram] = float(rest[0])
        self.vocab = sorted(w for (w, *_) in (g for g in self.logprob if len(g) == 1) if w != BOS)

    def log10(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context) by ARPA backoff (unknown words score as <unk>)."""
        if (word,) not in self.logprob:
            word = UNK
        context = tuple(context)[-(self.order - 1) :] if self.order > 1 else ()
        total = 0.0
        while True:
            ngram = (*context, word)
            if ngram in self.logprob:
                return total + self.logprob[ngram]
            total += self.logbow.get(context, 0.0)
            context = context[1:]

    def context_mass(self, context: Sequence[str]) -> float:
        """sum over the vocabulary of p(w | context): 1 for a normalised model."""
        return sum(10 ** self.log10(w, context) for w in self.vocab)

    def contexts(self) -> List[Ngram]:
        """Every context the file holds (n-grams with a backoff weight), and the empty one."""
        return [()] + sorted(self.logbow)

    def sentence_log10(self, words: Sequence[str]) -> float:
        padded = [BOS, *words, EOS]
        return sum(self.log10(padded[i], padded[:i]) for i in range(1, len(padded)))
