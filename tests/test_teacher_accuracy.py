"""Teacher top-1 accuracy from cached soft labels: hand-made arrays with known answers, word subsets (multi-piece
words, words inside other words), a mismatched transcript, and the CLI against a real extraction."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TEXTS
from espnet_bertkd.bin.teacher_accuracy import main as cli_main
from espnet_bertkd.kd.extract import extract
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.teacher import MaskedLMTeacher
from espnet_bertkd.kd.teacher_accuracy import teacher_accuracy
from espnet_bertkd.utils.fileio import DataError

# A toy teacher vocabulary: "together" is two pieces, "to" one.
PIECES = {"to": [1], "go": [2], "together": [1, 3], "we": [4], "too": [5]}


def row(truth: int, top1: int) -> list:
    return [truth, top1, 99]  # (token, top-1, top-2)


def test_token_and_word_accuracy_by_hand():
    transcripts = {"a": "WE GO TOGETHER", "b": "TO GO TOO"}
    kd = [
        # WE(4) right, GO(2) wrong, TOGETHER = to(1) right + ##gether(3) wrong
        ("a", np.array([row(4, 4), row(2, 7), row(1, 1), row(3, 8)], dtype=np.float32)),
        # TO right, GO right, TOO wrong
        ("b", np.array([row(1, 1), row(2, 2), row(5, 1)], dtype=np.float32)),
    ]
    acc = teacher_accuracy(kd, transcripts, lambda w: PIECES[w.lower()], {"homophones": ["to", "too", "two"],
                                                                            "multi": ["together"]})
    assert acc.utterances == 2
    assert (acc.tokens.correct, acc.tokens.total) == (4, 7)
    # TO and TOO are the homophones; the "to" piece of TOGETHER is not the word TO
    assert (acc.subsets["homophones"].correct, acc.subsets["homophones"].total) == (1, 2)
    # a word is right only if all its pieces are
    assert (acc.subsets["multi"].correct, acc.subsets["multi"].total) == (0, 1)
    assert acc.to_dict()["tokens"]["accuracy"] == pytest.approx(4 / 7)


def test_labels_of_another_text_are_refused():
    kd = [("a", np.array([row(4, 4), row(2, 2)], dtype=np.float32))]
    with pytest.raises(DataError, match="utterance a.*another text or teacher"):
        teacher_accuracy(kd, {"a": "WE TO GO"}, lambda w: PIECES[w.lower()], {"h": ["to"]})
    with pytest.raises(DataError, match="utterance b: not in the transcripts"):
        teacher_accuracy([("b", np.zeros((1, 3)))], {"a": "WE"}, lambda w: PIECES[w.lower()])


def test_cli_matches_the_teacher_run_directly(tmp_path, teacher_dir, capsys):
    """On a real extraction: the CLI's token accuracy equals the top-1 of the teacher computed here."""
    utts = [f"u{i}" for i in range(len(TEXTS))]
    text = tmp_path / "text"
    text.write_text("".join(f"{u} {t}\n" for u, t in zip(utts, TEXTS)), encoding="utf-8")
    config = TeacherConfig(model=teacher_dir, topk=3)
    extract(str(text), str(tmp_path / "kd"), config)
    labels = MaskedLMTeacher(config).soft_labels(TEXTS)
    correct = sum(int((l.topk_ids[:, 0] == l.token_ids).sum()) for l in labels)
    total = sum(len(l.token_ids) for l in labels)
    words = tmp_path / "homophones.txt"
    words.write_text("THEIR THERE\nTO TWO TOO\n", encoding="utf-8")
    out = tmp_path / "acc.json"
    cli_main(["--soft_labels", str(tmp_path / "kd"), "--text", str(text), "--subset", f"homophones={words}",
              "--output", str(out)])
    result = json.loads(out.read_text())
    assert (result["tokens"]["correct"], result["tokens"]["total"]) == (correct, total)
    assert result["subsets"]["homophones"]["total"] == sum(t.split().count(w) for t in TEXTS
                                                           for w in ("THEIR", "THERE", "TO", "TWO", "TOO"))
    assert result["teacher"] == teacher_dir  # read from kd_meta.json
    assert "homophones words" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="missing.txt: cannot read the word list"):
        cli_main(["--soft_labels", str(tmp_path / "kd"), "--text", str(text), "--subset",
                  f"homophones={tmp_path / 'missing.txt'}"])
