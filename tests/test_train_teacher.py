"""Teacher training: a small BERT learns a tiny corpus, saves in HF format, and serves as a teacher; fine-tuning
continues from an existing directory."""
from __future__ import annotations

import json
import random

import pytest

from espnet_bertkd.bin import train_teacher
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.teacher import MaskedLMTeacher

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


def test_batches_without_a_masked_token_are_skipped(corpus, tmp_path, monkeypatch):
    """A batch can draw no mask: its MLM loss is NaN (a mean over nothing), which used to make the epoch's
    reported loss NaN. Here every other batch is unmasked: the epoch loss is the mean over the masked ones."""
    import math

    from espnet_bertkd.kd import train_teacher as tt
    seen = []
    real = tt.masked_lm_loss

    def counting_loss(model, batch):
        seen.append(int((batch["labels"] != -100).sum()))
        return real(model, batch)
    monkeypatch.setattr(tt, "masked_lm_loss", counting_loss)
    calls = iter(range(10**6))

    class EveryOtherUnmasked:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, examples):
            batch = self.inner(examples)
            if next(calls) % 2:
                batch["labels"][:] = -100
            return batch
    import transformers
    real_collator = transformers.DataCollatorForLanguageModeling
    monkeypatch.setattr(transformers, "DataCollatorForLanguageModeling",
                        lambda *a, **k: EveryOtherUnmasked(real_collator(*a, **k)))
    result = tt.train_masked_lm(str(corpus), str(tmp_path / "t"), tt.TeacherTraining(
        epochs=1, batch_size=16, vocab_size=60, hidden_size=32, num_layers=1, num_heads=2))
    assert seen and all(n > 0 for n in seen)           # the loss never saw an unmasked batch
    assert math.isfinite(result["epoch_losses"][0])


def test_empty_text_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt"):
        train_teacher.main(["--text", str(empty), "--output_dir", str(tmp_path / "t")])


def test_masked_head_loss_equals_the_full_forward(teacher_dir):
    """The loss computed with the head on masked positions only is BertForMaskedLM's own loss."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    from espnet_bertkd.kd.train_teacher import masked_lm_loss

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForMaskedLM.from_pretrained(teacher_dir).eval()
    torch.manual_seed(0)
    encoded = tokenizer(["THE KNIGHT RODE AT NIGHT", "WE SEE THE SEA", "TWO DOGS RAN TO THE PARK"])["input_ids"]
    batch = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5)([{"input_ids": e} for e in encoded])
    assert (batch["labels"] != -100).sum() > 0
    torch.testing.assert_close(masked_lm_loss(model, batch), model(**batch).loss, rtol=1e-5, atol=1e-6)


def test_length_bucketed_batches_cover_every_line_once():
    from espnet_bertkd.kd.train_teacher import length_bucketed_batches

    lengths = [random.Random(i).randint(3, 30) for i in range(1000)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0), bucket_batches=10)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == -(-1000 // 16) and all(len(b) <= 16 for b in batches)
    # within a batch the lengths are close (sorted spans of 160 lines), unlike a random batch
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 8
    assert batches != length_bucketed_batches(lengths, 16, random.Random(1), bucket_batches=10)


def test_schedule_is_transformers_linear_after_the_warmup():
    """The teacher's schedule is transformers' linear warmup/decay, except that its warmup starts at 1/warmup, not at
    0 (transformers' first update has lr 0): the one reason it is not `get_linear_schedule_with_warmup`."""
    from transformers.optimization import _get_linear_schedule_with_warmup_lr_lambda as transformers_linear

    from espnet_bertkd.kd.train_teacher import warmup_linear_decay

    for total in (2, 7, 100, 1234):
        warmup = max(1, int(total * 0.05))
        ours = [warmup_linear_decay(s, warmup, total) for s in range(total + 2)]
        theirs = [transformers_linear(s, num_warmup_steps=warmup, num_training_steps=total) for s in range(total + 2)]
        assert ours[warmup:] == theirs[warmup:]  # exactly, not approximately
        assert ours[:warmup] == theirs[1: warmup + 1] and ours[0] == 1 / warmup and theirs[0] == 0.0
