"""Teacher training: a small BERT learns a tiny corpus, saves in HF format, and serves as a teacher; fine-tuning
continues from an existing directory."""
from __future__ import annotations

import json
import random

import pytest

from espnet_bertkd.bin import train_teacher
from espnet_bertkd.kd.teacher import MaskedLMTeacher, TeacherConfig

SUBJECTS = ["THE KNIGHT", "THE GIRL", "MY FATHER", "HER SON"]
PLACES = ["OVER THERE", "AT NIGHT", "BY THE SEA", "IN THE PARK"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    lines = [f"{rng.choice(SUBJECTS)} WALKED {rng.choice(PLACES)}" for _ in range(200)]
    path = tmp_path_factory.mktemp("teacher_text") / "lm.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_from_scratch_learns_and_loads(corpus, tmp_path):
    out = tmp_path / "teacher"
    train_teacher.main(["--text", str(corpus), "--output_dir", str(out), "--epochs", "12", "--batch_size", "16",
                        "--lr", "5e-3", "--vocab_size", "60", "--hidden_size", "32", "--num_layers", "2",
                        "--num_heads", "2", "--valid_fraction", "0.05"])
    summary = json.loads((out / "training.json").read_text())
    losses = summary["epoch_losses"]
    assert len(losses) == 12 and losses[-1] < 0.6 * losses[0]
    # Always guessing the commonest token ("the" or "walked", about 1 in 6) scores ~0.17; a teacher that learnt the
    # sentence pattern does far better (0.46 and above 0.5 seen across runs; float reductions vary with threads).
    assert summary["valid_masked_accuracy"] > 0.35
    teacher = MaskedLMTeacher(TeacherConfig(model=str(out), topk=3))
    labels = teacher.soft_labels(["THE KNIGHT WALKED AT NIGHT"])[0]
    walked = teacher.tokenize("walked")
    assert len(walked) == 1
    position = list(labels.token_ids).index(walked[0])
    # The teacher's first choice for the masked verb is the verb. (How sure it is varies from run to run: its top-3
    # probability was 0.37 in one CI run and above 0.5 in others, so only the ranking is asserted.)
    assert labels.topk_ids[position, 0] == walked[0]
    assert not list(tmp_path.glob("teacher.tmp*"))  # written atomically


def test_fine_tune_from_existing(corpus, tmp_path, teacher_dir):
    out = tmp_path / "tuned"
    train_teacher.main(["--text", str(corpus), "--output_dir", str(out), "--init", teacher_dir, "--epochs", "1",
                        "--batch_size", "64"])
    assert json.loads((out / "training.json").read_text())["init"] == teacher_dir
    assert MaskedLMTeacher(TeacherConfig(model=str(out))).vocab_hash == MaskedLMTeacher(
        TeacherConfig(model=teacher_dir)).vocab_hash


def test_empty_text_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt"):
        train_teacher.main(["--text", str(empty), "--output_dir", str(tmp_path / "t")])
