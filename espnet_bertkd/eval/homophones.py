"""Errors on homophones: the words whose spelling only context can decide.

Why: WER mixes acoustic errors with the errors a language model can fix. On the embedded corpus every homophone
(THEIR/THERE/THEY'RE, KNIGHT/NIGHT, ...) sounds the same, so a reference homophone decoded as another member of
its own group ("confused") is an error no acoustic model can avoid and exactly what shallow fusion or the
teacher's knowledge should remove. Counting those apart from the other errors says which of the two a system gained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Sequence

from espnet_bertkd.eval.score import UttScore


@dataclass
class HomophoneCounts:
    """Reference-word counts from word alignments: homophones (correct / confused within their group / other
    error: substituted by a word outside the group or deleted) and, for contrast, every other word."""

    homophones: int = 0
    homophones_correct: int = 0
    homophones_confused: int = 0
    others: int = 0
    others_correct: int = 0


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


def count_homophone_errors(utts: Iterable[UttScore], groups: Iterable[Sequence[str]]) -> HomophoneCounts:
    """Count over the aligned reference words of `utts` (insertions have no reference word and are not counted)."""
    table = group_of(groups)
    c = HomophoneCounts()
    for u in utts:
        for ref, hyp, op in u.alignment:
            if op == "I":
                continue
            members = table.get(ref)
            if members is None:
                c.others += 1
                c.others_correct += op == "C"
            else:
                c.homophones += 1
                c.homophones_correct += op == "C"
                c.homophones_confused += op == "S" and hyp in members
    return c
