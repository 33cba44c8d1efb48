"""Reliability cases 3 and 10: soft labels that no longer match the transcripts (edited text), and soft-label scps
that point into deleted or truncated arks. The preflight refuses both, naming the utterances / the scp, ark and
utterance and the fix; re-running extraction repairs them, recomputing only what is affected."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import kaldiio
import numpy as np
import pytest

from conftest import TEXTS, assert_soft_labels_close, snapshot
from espnet_bertkd.kd.extract import chunk_paths, extract
from espnet_bertkd.kd.soft_labels import (
    ACCEPT_UNVERIFIED_ENV, KD_DATA_NAMES, KD_PROB, KD_TOKEN, META_FILE, TEXT_HASH_FILE, text_hash,
)
from espnet_bertkd.kd.teacher import MaskedLMTeacher
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.tasks.preflight import check_soft_labels

TOPK = 4
# 12 utterances of two speakers, from the shared transcripts
PAIRS = [(f"spk{i % 2}-{i:04d}", TEXTS[i % len(TEXTS)]) for i in range(12)]
EDITS = {"spk1-0003": "THE KNIGHT RODE AT NIGHT AGAIN", "spk0-0008": "I WANT TO GO THERE TOO"}


def write_text(path: Path, pairs: Sequence[Tuple[str, str]]) -> str:
    path.write_text("".join(f"{u} {t}\n" for u, t in pairs), encoding="utf-8")
    return str(path)


def edited(pairs=PAIRS, edits=EDITS) -> List[Tuple[str, str]]:
    return [(u, edits.get(u, t)) for u, t in pairs]


def load(out: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    tok = kaldiio.load_scp(str(out / f"{KD_TOKEN}.scp"))
    prob = kaldiio.load_scp(str(out / f"{KD_PROB}.scp"))
    assert list(tok.keys()) == list(prob.keys())
    return {u: (np.asarray(tok[u]), np.asarray(prob[u])) for u in tok.keys()}


def assert_same_labels(a: Dict, b: Dict) -> None:
    """Bit for bit: for labels recomputed in the same batches (the same chunks) as `b`'s; labels from other
    batches are compared with conftest.assert_soft_labels_close."""
    assert list(a) == list(b)
    for u in a:
        for x, y in zip(a[u], b[u]):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


class Counting:
    """Records the transcripts the teacher scores."""

    def __init__(self, monkeypatch):
        self.texts: List[str] = []
        original = MaskedLMTeacher.soft_labels

        def counting(teacher, texts, *args, **kwargs):
            self.texts += list(texts)
            return original(teacher, texts, *args, **kwargs)

        monkeypatch.setattr(MaskedLMTeacher, "soft_labels", counting)


@pytest.fixture
def config(teacher_dir) -> TeacherConfig:
    return TeacherConfig(model=teacher_dir, topk=TOPK)


def preflight_args(text: str, kd: Path, teacher_dir: str):
    from espnet2.tasks.asr import ASRTask

    argv = ["--model", "bertkd"]
    for split in ("train", "valid"):
        flag = f"--{split}_data_path_and_name_and_type"
        argv += [flag, f"{text},text,text", flag, f"{kd}/kd_token.scp,kd_token,kaldi_ark",
                 flag, f"{kd}/kd_prob.scp,kd_prob,kaldi_ark"]
    args = ASRTask.get_parser().parse_args(argv)
    args.model_conf = {"kd_layers": [1, 2], "teacher": {"model": teacher_dir, "topk": TOPK}}
    return args


# ------------------------------------------------------------------------------------------------ case 3: edited text
def test_edited_transcripts_are_refused_then_recomputed_alone(tmp_path, config, teacher_dir, monkeypatch):
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, nj=2, chunk_size=2)
    check_soft_labels(preflight_args(text, out, teacher_dir))
    before = snapshot(out)

    write_text(tmp_path / "text", edited())  # the transcripts are normalised after extraction
    with pytest.raises(ValueError) as err:
        check_soft_labels(preflight_args(text, out, teacher_dir))
    message = str(err.value)
    assert "for 2 of its 12 utterances: 'spk1-0003', 'spk0-0008'" in message
    assert "extract_soft_labels" in message and f"--output_dir {out}" in message

    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, nj=2, chunk_size=2)  # what asr.sh's stage 4 now always runs
    assert sorted(counter.texts) == sorted(EDITS.values())  # only the edited utterances were scored
    fresh = tmp_path / "fresh"
    assert extract(text, str(fresh), config, nj=2, chunk_size=2)
    # the same labels as a first extraction of the new text (whose chunks batch other transcripts together)
    assert_soft_labels_close(load(out), load(fresh))
    check_soft_labels(preflight_args(text, out, teacher_dir))
    # nothing already written was rewritten: every chunk of the first run is still there, byte for byte
    after = snapshot(out)
    assert {k: after[k] for k in before if k.startswith("split")} == {k: v for k, v in before.items()
                                                                     if k.startswith("split")}
    assert (out / TEXT_HASH_FILE).read_text().splitlines()[3] == f"spk1-0003 {text_hash(EDITS['spk1-0003'])}"

    counter.texts.clear()  # everything matches: a re-run scores nothing and writes nothing
    files = {k: v for k, v in snapshot(out).items() if k != META_FILE}
    assert extract(text, str(out), config, nj=2, chunk_size=2)
    assert counter.texts == []
    assert {k: v for k, v in snapshot(out).items() if k != META_FILE} == files


def test_parallel_jobs_recompute_their_share_and_the_last_merges(tmp_path, config, teacher_dir, monkeypatch):
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, nj=2, chunk_size=3)
    edits = {u: t + " AGAIN" for u, t in PAIRS[::3]}  # 4 utterances
    write_text(tmp_path / "text", edited(edits=edits))
    scps = {name: (out / f"{name}.scp").read_bytes() for name in KD_DATA_NAMES}
    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, nj=2, job=1, chunk_size=3) is False
    assert {name: (out / f"{name}.scp").read_bytes() for name in KD_DATA_NAMES} == scps  # not merged yet
    assert extract(text, str(out), config, nj=2, job=2, chunk_size=3) is True
    assert sorted(counter.texts) == sorted(edits.values())
    fresh = tmp_path / "fresh"
    assert extract(text, str(fresh), config)
    assert_soft_labels_close(load(out), load(fresh))  # other chunks, other batches


def test_added_and_removed_utterances(tmp_path, config, teacher_dir, monkeypatch):
    text = write_text(tmp_path / "text", PAIRS[:10])
    out = tmp_path / "kd"
    assert extract(text, str(out), config, chunk_size=4)
    new = [p for p in PAIRS if p[0] != "spk1-0005"]  # one removed, two added
    write_text(tmp_path / "text", new)
    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, chunk_size=4)
    assert counter.texts == [t for _, t in PAIRS[10:]]
    fresh = tmp_path / "fresh"
    assert extract(text, str(fresh), config)
    assert_soft_labels_close(load(out), load(fresh))  # other chunks, other batches
    assert [l.split()[0] for l in (out / TEXT_HASH_FILE).read_text().splitlines()] == [u for u, _ in new]
    check_soft_labels(preflight_args(text, out, teacher_dir))


def test_a_neighbours_edit_recomputes_the_utterances_that_saw_it(tmp_path, config, monkeypatch):
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, context_utterances=1)
    write_text(tmp_path / "text", edited(edits={"spk0-0004": "WE SEE THE SEA"}))
    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, context_utterances=1)
    # spk0-0004 and its neighbours in speaker spk0 (0002 and 0006) saw the edited transcript
    assert sorted(counter.texts) == sorted(["WE SEE THE SEA", PAIRS[2][1], PAIRS[6][1]])
    fresh = tmp_path / "fresh"
    assert extract(text, str(fresh), config, context_utterances=1)
    assert_soft_labels_close(load(out), load(fresh))  # other chunks, other batches


def test_missing_meta_is_an_error_unless_accepted(tmp_path, config, teacher_dir, monkeypatch, caplog):
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config)
    (out / META_FILE).unlink()
    monkeypatch.delenv(ACCEPT_UNVERIFIED_ENV, raising=False)
    with pytest.raises(ValueError) as err:
        check_soft_labels(preflight_args(text, out, teacher_dir))
    assert f"{out / META_FILE} is missing" in str(err.value) and f"{ACCEPT_UNVERIFIED_ENV}=1" in str(err.value)
    monkeypatch.setenv(ACCEPT_UNVERIFIED_ENV, "1")
    with caplog.at_level(logging.WARNING):
        check_soft_labels(preflight_args(text, out, teacher_dir))
    assert "unverified" in caplog.text


def test_labels_of_the_previous_version_are_refused_and_upgraded_by_a_rerun(tmp_path, config, teacher_dir,
                                                                            monkeypatch):
    """The previous version wrote no kd_text.hash, no chunk fingerprints and no text_fingerprints in kd_meta.json."""
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, chunk_size=5)
    (out / TEXT_HASH_FILE).unlink()
    for marker in out.rglob("kd_text.*.hash"):
        marker.unlink()
    meta = json.loads((out / META_FILE).read_text())
    del meta["text_fingerprints"]
    (out / META_FILE).write_text(json.dumps(meta))
    monkeypatch.delenv(ACCEPT_UNVERIFIED_ENV, raising=False)
    with pytest.raises(ValueError) as err:
        check_soft_labels(preflight_args(text, out, teacher_dir))
    assert f"{out / TEXT_HASH_FILE} is missing" in str(err.value)
    assert "earlier espnet-bertkd" in str(err.value) and "extract_soft_labels" in str(err.value)
    reference = load(out)
    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, chunk_size=5)  # stage 4 re-run: recomputes all, same labels
    assert len(counter.texts) == len(PAIRS)
    assert_same_labels(load(out), reference)
    check_soft_labels(preflight_args(text, out, teacher_dir))


# ---------------------------------------------------------------------------------------------- case 10: broken arks
def test_deleted_or_truncated_ark_is_refused_naming_scp_ark_and_utterance(tmp_path, config, teacher_dir):
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, chunk_size=4)
    ark = chunk_paths(out, 1, 1, 1, KD_PROB)[0]  # utterances 4..7
    data = ark.read_bytes()
    ark.unlink()
    with pytest.raises(ValueError) as err:
        check_soft_labels(preflight_args(text, out, teacher_dir))
    message = str(err.value)
    assert f"{out}/kd_prob.scp" in message and str(ark) in message and "does not exist" in message
    assert "utterance 'spk0-0004'" in message and "4 soft-label entries" in message
    ark.write_bytes(data[:-7])  # cut inside the last matrix
    with pytest.raises(ValueError) as err:
        check_soft_labels(preflight_args(text, out, teacher_dir))
    assert str(ark) in str(err.value) and "utterance 'spk1-0007'" in str(err.value)


def test_rerun_redoes_what_a_broken_ark_held(tmp_path, config, teacher_dir, monkeypatch):
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, chunk_size=4)
    reference = load(out)
    chunk_paths(out, 1, 1, 1, KD_TOKEN)[0].unlink()
    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, chunk_size=4)
    assert counter.texts == [t for _, t in PAIRS[4:8]]
    assert_same_labels(load(out), reference)
    check_soft_labels(preflight_args(text, out, teacher_dir))


def test_unfinished_run_redoes_a_chunk_whose_ark_went_missing(tmp_path, config, monkeypatch):
    """Before the merge: a chunk whose scp exists but whose ark is gone is redone, never merged."""
    text = write_text(tmp_path / "text", PAIRS)
    out = tmp_path / "kd"
    assert extract(text, str(out), config, nj=2, job=1, chunk_size=3) is False
    chunk_paths(out, 2, 1, 1, KD_PROB)[0].unlink()  # utterances 3..5
    assert extract(text, str(out), config, nj=2, job=2, chunk_size=3) is False  # not merged over a missing ark
    assert not (out / f"{KD_TOKEN}.scp").exists()
    counter = Counting(monkeypatch)
    assert extract(text, str(out), config, nj=2, job=1, chunk_size=3) is True
    assert counter.texts == [t for _, t in PAIRS[3:6]]
    fresh = tmp_path / "fresh"
    assert extract(text, str(fresh), config)
    assert_soft_labels_close(load(out), load(fresh))  # other chunks, other batches
