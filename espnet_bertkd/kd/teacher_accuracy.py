"""How well the teacher predicts the transcripts it labels: top-1 accuracy of its stored soft labels.

Why: a teacher that cannot predict a masked word has no knowledge to distil, and a KD result is only as good as the
teacher behind it. The soft labels already hold everything needed: `kd_token` column 0 is the transcript's teacher
token w_i, column 1 the teacher's most probable token for position i with w_i masked (the top-k ids are stored in
descending order of probability). So the accuracy is measured on exactly what the student learns from, context
utterances and dropped special tokens included, without running the teacher again.

Word subsets (e.g. the embedded corpus' homophones) are counted by word, not by token id: each transcript word is
tokenised on its own, so a subset word counts where it stands as a word of its own, and a word the teacher splits
into several pieces counts as correct only if every piece is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from espnet_bertkd.utils.fileio import DataError, PathLike, location, read_dict


@dataclass
class Accuracy:
    """Correct and total predictions (tokens, or words of a subset)."""

    correct: int = 0
    total: int = 0

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def to_dict(self) -> Dict[str, float]:
        return {"correct": self.correct, "total": self.total, "accuracy": self.value}


@dataclass
class TeacherAccuracy:
    """Token accuracy over every teacher token, and word accuracy per named subset of words."""

    tokens: Accuracy = field(default_factory=Accuracy)
    subsets: Dict[str, Accuracy] = field(default_factory=dict)
    utterances: int = 0

    def to_dict(self) -> Dict[str, object]:
        return {"utterances": self.utterances, "tokens": self.tokens.to_dict(),
                "subsets": {name: acc.to_dict() for name, acc in self.subsets.items()}}


def read_word_list(path: PathLike) -> List[str]:
    """Words of a subset file: whitespace-separated, any number per line (a homophone group per line is fine)."""
    try:
        with open(path, encoding="utf-8") as f:
            words = f.read().split()
    except OSError as e:
        raise DataError(f"{path}: cannot read the word list ({e.strerror})") from None
    if not words:
        raise DataError(f"{path}: no words")
    return words


def teacher_accuracy(
    kd_tokens: Iterable[Tuple[str, np.ndarray]],
    transcripts: Mapping[str, str],
    tokenize_word: Callable[[str], Sequence[int]],
    subsets: Optional[Mapping[str, Iterable[str]]] = None,
    source: str = "kd_token.scp",
) -> TeacherAccuracy:
    """Accuracy of the teacher's top-1 over `kd_tokens` ((utt_id, kd_token array (N, 1 + k)) pairs).

    `transcripts` maps every utterance to its text and `tokenize_word` gives a word's teacher token ids; they locate
    the subset words. A soft-label row sequence that is not the word-by-word tokenisation of the transcript (soft
    labels of another text or teacher) is an error naming the utterance.
    """
    subsets = {name: {w.upper() for w in words} for name, words in (subsets or {}).items()}
    result = TeacherAccuracy(subsets={name: Accuracy() for name in subsets})
    pieces: Dict[str, Sequence[int]] = {}
    for utt, array in kd_tokens:
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] < 2:
            raise DataError(f"{location(source, key=utt)}: kd_token has shape {array.shape}, expected (N, 1 + k)")
        if utt not in transcripts:
            raise DataError(f"{location(source, key=utt)}: not in the transcripts")
        truth = array[:, 0].astype(np.int64)
        hits = array[:, 1].astype(np.int64) == truth
        result.utterances += 1
        result.tokens.correct += int(hits.sum())
        result.tokens.total += len(truth)
        if not subsets:
            continue
        words = transcripts[utt].split()
        spans, start = [], 0
        for word in words:
            ids = pieces.setdefault(word, tuple(tokenize_word(word)))
            spans.append((word, start, start + len(ids)))
            start += len(ids)
        expected = [i for word in words for i in pieces[word]]
        if expected != truth.tolist():
            raise DataError(
                f"{location(source, key=utt)}: the soft labels' {len(truth)} teacher tokens are not the teacher's "
                f"tokenisation of the transcript ({len(expected)} tokens): soft labels of another text or teacher"
            )
        for word, begin, end in spans:
            for name, members in subsets.items():
                if word.upper() in members:
                    result.subsets[name].total += 1
                    result.subsets[name].correct += bool(hits[begin:end].all())
    return result


def read_transcripts(path: PathLike) -> Dict[str, str]:
    return read_dict(path)


def format_summary(acc: TeacherAccuracy, label: str = "") -> str:
    """One line for logs and RESULTS.md: token accuracy, then each subset's word accuracy."""
    parts = [f"{acc.tokens.value:.3f} of {acc.tokens.total} teacher tokens"]
    parts += [f"{a.value:.3f} of {a.total} {name} words" for name, a in acc.subsets.items()]
    return (f"{label}: " if label else "") + "top-1 " + ", ".join(parts)
