"""Sentences of the synthetic corpus: paired sets (to be spoken) and the much larger text-only LM part.

Why these rules:
- Evaluation sets (dev/test) are drawn first and are unique; no evaluation sentence ever appears in a training set
  or in the LM text, so a model cannot have memorised a test transcript.
- Paired training sentences come from the grammar *pruned* of the LM-only words: those words exist in the LM text
  (and may occur in dev/test) but are never heard in training, so only LM knowledge (teacher, shallow fusion) can
  supply their spelling.
- The LM text is drawn from the full grammar until it holds `lm_ratio` times the words of all paired text (like
  LibriSpeech's LM corpus next to its transcripts). It may repeat a sentence, and it may contain training
  sentences, as real LM text does; it never contains an evaluation sentence.
Everything is a pure function of the seed (hash-derived sub-seeds per purpose, Python's `random.Random`).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Collection, Dict, FrozenSet, List, Mapping, Set, Tuple

from homophones.grammar import Grammar
from homophones.lexicon import HOMOPHONE_SETS, OPEN_CLASS_RULES, OPEN_CLASS_TABLES, RULES

MAX_TRIES_PER_SENTENCE = 2000


def sub_seed(seed: int, *keys: object) -> int:
    """A 64-bit seed derived from `seed` and a purpose (stable across runs and Python versions, unlike hash())."""
    text = "/".join([str(seed)] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


@lru_cache(maxsize=1)
def full_grammar() -> Grammar:
    """The whole grammar (parsed once per process)."""
    return Grammar(RULES)


def lexicon() -> FrozenSet[str]:
    """Every word the generator can write."""
    return full_grammar().terminals()


def homophone_words() -> FrozenSet[str]:
    return frozenset(w for group in HOMOPHONE_SETS for w in group)


def lm_only_candidates() -> Dict[str, List[Tuple[str, ...]]]:
    """Open-class lexemes (singular, plural) that may be kept out of the paired training text: not a homophone and
    not spelled out literally by any frame (removing those would delete whole frames from the training text)."""
    g = full_grammar()
    literal = g.literal_words([n for n in g.rule_names() if n not in OPEN_CLASS_RULES])
    banned = literal | homophone_words()
    return {
        table: [lex for lex in entries if not (set(lex) & banned)] for table, entries in OPEN_CLASS_TABLES.items()
    }


def choose_lm_only_words(seed: int, fraction: float) -> Tuple[str, ...]:
    """A seeded `fraction` of each open-class table's eligible lexemes (all their forms), sorted."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"lm_only_fraction must be in [0, 1), got {fraction}")
    words: Set[str] = set()
    if fraction == 0.0:
        return ()
    for table, lexemes in sorted(lm_only_candidates().items()):
        if not lexemes:
            continue
        rng = random.Random(sub_seed(seed, "lm-only", table))
        k = max(1, round(fraction * len(lexemes)))
        for lex in rng.sample(lexemes, k):
            words.update(lex)
    return tuple(sorted(words))


@dataclass
class CorpusText:
    """All text of one corpus. `sets` keeps the paired sets in generation order (evaluation sets first)."""

    sets: Dict[str, List[str]]
    lm: List[str]
    lm_only_words: Tuple[str, ...]
    train_sets: Tuple[str, ...] = field(default_factory=tuple)

    def num_words(self, set_name: str) -> int:
        return sum(len(s.split()) for s in self.sets[set_name])

    @property
    def paired_words(self) -> int:
        return sum(self.num_words(n) for n in self.sets)

    @property
    def lm_words(self) -> int:
        return sum(len(s.split()) for s in self.lm)


def _draw_unique(grammar: Grammar, rng: random.Random, n: int, taken: Set[str], what: str) -> List[str]:
    out: List[str] = []
    for _ in range(n):
        for _ in range(MAX_TRIES_PER_SENTENCE):
            s = grammar.generate(rng)
            if s not in taken:
                break
        else:
            raise RuntimeError(f"could not draw {n} unique sentences for {what}: the grammar is too small")
        taken.add(s)
        out.append(s)
    return out


def generate_text(
    seed: int,
    num_sentences: Mapping[str, int],
    train_sets: Collection[str],
    lm_ratio: float = 20.0,
    lm_only_fraction: float = 0.1,
) -> CorpusText:
    """Draw the paired sets (`num_sentences`: set name -> count; names in `train_sets` are training sets) and the LM
    text (at least `lm_ratio` x the paired words)."""
    unknown = set(train_sets) - set(num_sentences)
    if unknown:
        raise ValueError(f"train sets {sorted(unknown)} have no size")
    full = full_grammar()
    lm_only = choose_lm_only_words(seed, lm_only_fraction)
    restricted = full.pruned(lm_only) if lm_only else full

    sets: Dict[str, List[str]] = {}
    eval_taken: Set[str] = set()
    eval_names = [n for n in num_sentences if n not in train_sets]
    train_names = [n for n in num_sentences if n in train_sets]
    for name in eval_names:
        rng = random.Random(sub_seed(seed, "sentences", name))
        sets[name] = _draw_unique(full, rng, num_sentences[name], eval_taken, name)
    train_taken = set(eval_taken)  # unique within training text, and never an evaluation sentence
    for name in train_names:
        rng = random.Random(sub_seed(seed, "sentences", name))
        sets[name] = _draw_unique(restricted, rng, num_sentences[name], train_taken, name)

    text = CorpusText(sets=sets, lm=[], lm_only_words=lm_only, train_sets=tuple(train_names))
    target = lm_ratio * text.paired_words
    rng = random.Random(sub_seed(seed, "sentences", "lm"))
    lm: List[str] = []
    words = 0
    while words < target:
        s = full.generate(rng)
        if s in eval_taken:
            continue
        lm.append(s)
        words += s.count(" ") + 1
    text.lm = lm
    return text
