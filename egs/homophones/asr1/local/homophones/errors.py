"""Errors on homophones: the words whose spelling only context can decide.

Why: WER mixes acoustic errors with the errors a language model can fix. On the embedded corpus every homophone
(THEIR/THERE/THEY'RE, KNIGHT/NIGHT, ...) sounds the same, so a reference homophone decoded as another member of
its own group ("confused") is an error no acoustic model can avoid and exactly what shallow fusion or the
teacher's knowledge should remove. Counting those apart from the other errors says which of the two a system gained.
A third kind: words that occur only in the text-only part (the corpus' `lm_only_words`), which the acoustic model
never heard with their spelling; only text knowledge (an LM, the teacher) can teach it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Sequence

from espnet_bertkd.recipe.score import UttScore


@dataclass
class HomophoneCounts:
    """Reference-word counts from word alignments: homophones (correct / confused within their group / other
    error: substituted by a word outside the group or deleted), LM-only words, and every other word."""

    homophones: int = 0
    homophones_correct: int = 0
    homophones_confused: int = 0
    lm_only: int = 0
    lm_only_correct: int = 0
    others: int = 0
    others_correct: int = 0

    def add(self, other: "HomophoneCounts") -> "HomophoneCounts":
        return HomophoneCounts(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def percentages(self) -> Dict[str, float]:
        """The rates a table shows: homophones correct and confused, LM-only and other words correct (%)."""
        return {
            "homophones_correct": percent(self.homophones_correct, self.homophones),
            "homophones_confused": percent(self.homophones_confused, self.homophones),
            "lm_only_correct": percent(self.lm_only_correct, self.lm_only),
            "others_correct": percent(self.others_correct, self.others),
        }


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else float("nan")


def group_of(groups: Iterable[Sequence[str]]) -> Dict[str, frozenset]:
    """word -> the set of words it sounds like (itself included)."""
    table: Dict[str, frozenset] = {}
    for group in groups:
        members = frozenset(group)
        for word in group:
            table[word] = members
    return table


def count_homophone_errors(utts: Iterable[UttScore], groups: Iterable[Sequence[str]],
                           lm_only: Iterable[str] = ()) -> HomophoneCounts:
    """Count over the aligned reference words of `utts` (insertions have no reference word and are not counted)."""
    table = group_of(groups)
    lm_only = frozenset(lm_only)
    c = HomophoneCounts()
    for u in utts:
        for ref, hyp, op in u.alignment:
            if op == "I":
                continue
            members = table.get(ref)
            if ref in lm_only:
                c.lm_only += 1
                c.lm_only_correct += op == "C"
            elif members is None:
                c.others += 1
                c.others_correct += op == "C"
            else:
                c.homophones += 1
                c.homophones_correct += op == "C"
                c.homophones_confused += op == "S" and hyp in members
    return c
