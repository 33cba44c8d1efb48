"""Cached-mode extraction: jobs, chunks, resume, merge, metadata, text parsing, contexts, coverage and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import kaldiio
import numpy as np
import pytest

from conftest import PROB_ATOL, TEXTS, assert_soft_labels_close
from espnet_bertkd.bin.extract_soft_labels import main as cli_main
from espnet_bertkd.kd.extract import chunk_paths, extract, job_range, neighbour_contexts
from espnet_bertkd.kd.soft_labels import KD_DATA_NAMES, KD_PROB, KD_TOKEN, META_FILE, check_coverage, pack
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.teacher import MaskedLMTeacher
from espnet_bertkd.utils.fileio import DataError, read_pairs

TOPK = 4
UTTS = [f"1089-134686-{i:04d}" for i in range(len(TEXTS))]


def write_text(path: Path, pairs) -> str:
    path.write_text("".join((f"{u} {t}" if t else u) + "\n" for u, t in pairs), encoding="utf-8")
    return str(path)


@pytest.fixture
def text_file(tmp_path) -> str:
    return write_text(tmp_path / "text", zip(UTTS, TEXTS))


@pytest.fixture
def config(teacher_dir) -> TeacherConfig:
    return TeacherConfig(model=teacher_dir, topk=TOPK)


def load(out: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    tok = kaldiio.load_scp(str(out / f"{KD_TOKEN}.scp"))
    prob = kaldiio.load_scp(str(out / f"{KD_PROB}.scp"))
    assert list(tok.keys()) == list(prob.keys())
    return {u: (np.asarray(tok[u]), np.asarray(prob[u])) for u in tok.keys()}


def snapshot(directory: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


class CountingTeacher:
    """Monkeypatches MaskedLMTeacher.soft_labels to record which transcripts were scored."""

    def __init__(self, monkeypatch):
        self.calls: List[List[str]] = []
        original = MaskedLMTeacher.soft_labels

        def counting(teacher, texts, *args, **kwargs):
            self.calls.append(list(texts))
            return original(teacher, texts, *args, **kwargs)

        monkeypatch.setattr(MaskedLMTeacher, "soft_labels", counting)

    @property
    def scored(self) -> List[str]:
        return [t for call in self.calls for t in call]


# --------------------------------------------------------------------------------------------------------------------
# jobs and merge


def test_job_range_partitions():
    for total, nj in [(6, 2), (7, 3), (2, 4), (0, 2)]:
        ranges = [job_range(total, nj, j) for j in range(1, nj + 1)]
        assert [i for r in ranges for i in r] == list(range(total))


def test_single_job_matches_teacher(tmp_path, text_file, config):
    out = tmp_path / "kd"
    assert extract(text_file, str(out), config, chunk_size=4) is True
    got = load(out)
    assert list(got) == UTTS
    teacher = MaskedLMTeacher(config)
    # the teacher scored chunk by chunk, as extract does: the same batches, so the same bits
    labels = teacher.soft_labels(TEXTS[:4]) + teacher.soft_labels(TEXTS[4:])
    for u, text, lab in zip(UTTS, TEXTS, labels):
        tokens, probs = pack(lab, teacher.vocab_size)
        np.testing.assert_array_equal(got[u][0], tokens)
        assert got[u][0].dtype == tokens.dtype
        # Kaldi float32 matrices: the teacher's fp32 probabilities, exactly
        np.testing.assert_array_equal(got[u][1], lab.topk_probs)
        assert got[u][0].shape == (len(teacher.tokenize(text)), 1 + TOPK)
    # chunks: 6 utterances in chunks of 4 -> two chunks, each with both scps
    for c in (0, 1):
        for name in KD_DATA_NAMES:
            assert chunk_paths(out, 1, 1, c, name)[1].exists()
    assert not chunk_paths(out, 1, 1, 2, KD_TOKEN)[1].exists()


def test_two_jobs_merge_when_last_finishes(tmp_path, text_file, config):
    out = tmp_path / "kd2"
    assert extract(text_file, str(out), config, nj=2, job=1, chunk_size=2) is False
    assert not (out / f"{KD_TOKEN}.scp").exists() and not (out / f"{KD_PROB}.scp").exists()
    assert chunk_paths(out, 2, 1, 0, KD_TOKEN)[1].exists() and chunk_paths(out, 2, 1, 1, KD_TOKEN)[1].exists()
    assert not chunk_paths(out, 2, 2, 0, KD_TOKEN)[1].exists()

    assert extract(text_file, str(out), config, nj=2, job=2, chunk_size=2) is True
    keys = [line.split()[0] for line in (out / f"{KD_TOKEN}.scp").read_text().splitlines()]
    assert keys == UTTS
    keys = [line.split()[0] for line in (out / f"{KD_PROB}.scp").read_text().splitlines()]
    assert keys == UTTS

    single = tmp_path / "kd1"
    assert extract(text_file, str(single), config, nj=1, chunk_size=500) is True
    a, b = load(out), load(single)
    assert list(a) == list(b) == UTTS
    assert_soft_labels_close(a, b)  # chunks of 2 against one chunk: other batches


def test_all_jobs_in_one_call(tmp_path, text_file, config):
    out = tmp_path / "kd"
    assert extract(text_file, str(out), config, nj=3, chunk_size=1) is True
    assert list(load(out)) == UTTS
    assert len(list((out / "split3").rglob(f"{KD_TOKEN}.*.scp"))) == len(UTTS)


def test_bad_job_number(tmp_path, text_file, config):
    for job in (0, 3):
        with pytest.raises(ValueError, match="--job"):
            extract(text_file, str(tmp_path / "kd"), config, nj=2, job=job)


# --------------------------------------------------------------------------------------------------------------------
# resume


def test_resume_recomputes_only_missing_chunk(tmp_path, text_file, config, monkeypatch):
    out = tmp_path / "kd"
    assert extract(text_file, str(out), config, chunk_size=2)
    before = load(out)

    # chunk 1 (utterances 2, 3) was "killed": its kd_prob scp is missing and its arks are garbage/partial
    chunk1 = {name: chunk_paths(out, 1, 1, 1, name) for name in KD_DATA_NAMES}
    chunk1[KD_PROB][1].unlink()
    chunk1[KD_PROB][0].write_bytes(b"garbage, not an ark" * 100)
    ark = chunk1[KD_TOKEN][0]
    ark.write_bytes(ark.read_bytes()[: len(ark.read_bytes()) // 2] + b"\x00junk")
    other = {c: chunk_paths(out, 1, 1, c, KD_TOKEN)[0].read_bytes() for c in (0, 2)}

    counter = CountingTeacher(monkeypatch)
    assert extract(text_file, str(out), config, chunk_size=2)
    assert counter.scored == TEXTS[2:4]
    # finished chunks were not rewritten
    assert {c: chunk_paths(out, 1, 1, c, KD_TOKEN)[0].read_bytes() for c in (0, 2)} == other
    after = load(out)
    assert list(after) == UTTS
    for u in UTTS:
        for x, y in zip(before[u], after[u]):
            np.testing.assert_array_equal(x, y)

    # everything done: a re-run scores nothing and still merges
    counter.calls.clear()
    assert extract(text_file, str(out), config, chunk_size=2)
    assert counter.calls == []


def test_garbage_ark_without_scp_is_overwritten(tmp_path, text_file, config):
    fresh = tmp_path / "fresh"
    extract(text_file, str(fresh), config, chunk_size=3)
    ref = load(fresh)
    out = tmp_path / "kd"
    out.mkdir()
    # a job died while writing its first chunk: kd_meta.json (written before any chunk) and arks exist, scps do not
    (out / META_FILE).write_bytes((fresh / META_FILE).read_bytes())
    for name in KD_DATA_NAMES:
        ark, _ = chunk_paths(out, 1, 1, 0, name)
        ark.parent.mkdir(parents=True, exist_ok=True)
        ark.write_bytes(b"\xff" * 4096)
    assert extract(text_file, str(out), config, chunk_size=3)
    got = load(out)
    for u in UTTS:
        for x, y in zip(got[u], ref[u]):
            np.testing.assert_array_equal(x, y)
    assert chunk_paths(out, 1, 1, 0, KD_TOKEN)[0].stat().st_size == chunk_paths(fresh, 1, 1, 0, KD_TOKEN)[0].stat().st_size


# --------------------------------------------------------------------------------------------------------------------
# metadata


def test_meta_records_teacher_and_refuses_other_settings(tmp_path, text_file, config, teacher_dir):
    out = tmp_path / "kd"
    assert extract(text_file, str(out), config, chunk_size=2)
    meta = json.loads((out / META_FILE).read_text())
    teacher = MaskedLMTeacher(config)
    assert meta["teacher"] == teacher_dir
    assert meta["topk"] == TOPK
    assert meta["temperature"] == 1.0
    assert meta["vocab_size"] == teacher.vocab_size
    assert meta["vocab_hash"] == teacher.vocab_hash
    assert meta["num_utterances"] == len(UTTS)
    assert meta["dtype"] == "float32" and meta["max_length"] is None

    files = snapshot(out)
    with pytest.raises(ValueError, match="topk"):
        extract(text_file, str(out), TeacherConfig(model=teacher_dir, topk=TOPK + 1), chunk_size=2)
    with pytest.raises(ValueError, match="temperature"):
        extract(text_file, str(out), TeacherConfig(model=teacher_dir, topk=TOPK, temperature=3.0), chunk_size=2)
    # settings that change the labels without changing the teacher's fingerprint
    with pytest.raises(ValueError, match="dtype"):
        extract(text_file, str(out), TeacherConfig(model=teacher_dir, topk=TOPK, dtype="bfloat16"), chunk_size=2)
    with pytest.raises(ValueError, match="max_length"):
        extract(text_file, str(out), TeacherConfig(model=teacher_dir, topk=TOPK, max_length=6), chunk_size=2)
    with pytest.raises(ValueError, match="context_utterances"):
        extract(text_file, str(out), config, chunk_size=2, context_utterances=1)
    assert snapshot(out) == files
    # the same settings are accepted again
    assert extract(text_file, str(out), config, chunk_size=2)


# --------------------------------------------------------------------------------------------------------------------
# text parsing


def test_read_text_duplicate_names_file_line_and_utt(tmp_path):
    path = tmp_path / "text"
    path.write_text("a HELLO\nb WORLD\n\na AGAIN\n", encoding="utf-8")
    with pytest.raises(DataError) as err:  # a ValueError
        read_pairs(str(path))
    # fileio.read_table's policy: a blank line is refused too (it used to be skipped here, refused by validation)
    assert f"{path}:3: empty line" in str(err.value)
    assert f"{path}:4: utterance a: duplicate key (first on line 1)" in str(err.value)


def test_read_text_pairs_and_empty_transcript(tmp_path):
    path = tmp_path / "text"
    path.write_text("a HELLO  THERE\nb\nc   X\n", encoding="utf-8")
    assert read_pairs(str(path)) == [("a", "HELLO  THERE"), ("b", ""), ("c", "X")]


def test_empty_transcript_gives_zero_rows(tmp_path, config):
    text = write_text(tmp_path / "text", [("u1", TEXTS[0]), ("u2", ""), ("u3", TEXTS[1])])
    out = tmp_path / "kd"
    assert extract(text, str(out), config)
    got = load(out)
    assert list(got) == ["u1", "u2", "u3"]
    assert got["u2"][0].shape == (0, 1 + TOPK) and got["u2"][1].shape == (0, TOPK)
    assert got["u1"][0].shape[0] == 5 and got["u3"][0].shape[0] == 5


# --------------------------------------------------------------------------------------------------------------------
# contexts


def test_neighbour_contexts_utt2spk_width_one():
    pairs = [("a-2", "A2"), ("a-1", "A1"), ("b-1", "B1"), ("a-3", "A3"), ("b-2", "B2"), ("x-9", "X9")]
    utt2spk = {"a-1": "s1", "a-2": "s1", "a-3": "s1", "b-1": "s2", "b-2": "s2", "x-9": "s2"}
    left, right = neighbour_contexts(pairs, utt2spk, 1)
    # groups in utterance-id order: s1 = a-1 a-2 a-3, s2 = b-1 b-2 x-9
    assert left == ["A1", "", "", "A2", "B1", "B2"]
    assert right == ["A3", "A2", "B2", "", "X9", ""]


def test_neighbour_contexts_width_two_and_prefix_groups():
    pairs = [("a-1", "A1"), ("a-2", "A2"), ("a-3", "A3"), ("b-1", "B1")]
    left, right = neighbour_contexts(pairs, None, 2)  # groups from the utterance-id prefix
    assert left == ["", "A1", "A1 A2", ""]
    assert right == ["A2 A3", "A3", "", ""]
    assert neighbour_contexts(pairs, None, 0) == ([""] * 4, [""] * 4)


def test_extract_with_context(tmp_path, config):
    utts = ["s1-1", "s1-2", "s2-1"]
    text = write_text(tmp_path / "text", zip(utts, TEXTS[:3]))
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("s1-1 s1\ns1-2 s1\ns2-1 s2\n")
    out = tmp_path / "kd"
    assert extract(text, str(out), config, context_utterances=1, utt2spk=str(utt2spk))
    got = load(out)
    teacher = MaskedLMTeacher(config)
    expected = teacher.soft_labels(TEXTS[:3], ["", TEXTS[0], ""], [TEXTS[1], "", ""])
    plain = teacher.soft_labels(TEXTS[:3])
    assert_soft_labels_close(got, {u: pack(lab, teacher.vocab_size) for u, lab in zip(utts, expected)})
    # the contexts were seen: the first utterance's labels differ from utterance-only ones (by more than rounding)
    assert np.abs(got["s1-1"][1] - pack(plain[0], teacher.vocab_size)[1]).max() > PROB_ATOL
    # alone in its group: the utterance-only labels (scored in another batch)
    assert_soft_labels_close({"s2-1": got["s2-1"]}, {"s2-1": pack(plain[2], teacher.vocab_size)})
    assert json.loads((out / META_FILE).read_text())["context_utterances"] == 1


# --------------------------------------------------------------------------------------------------------------------
# coverage


def test_check_coverage_names_missing_utterance(tmp_path):
    scp = tmp_path / "kd_token.scp"
    scp.write_text("u1 /x/a.ark:10\nu2 /x/a.ark:20\n")
    check_coverage(scp, ["u1", "u2"], "data/train/text")
    check_coverage(scp, ["u2"], "data/train/text")
    with pytest.raises(ValueError, match="'u3'") as err:
        check_coverage(scp, ["u1", "u3", "u2"], "data/train/text")
    assert "data/train/text" in str(err.value)
    with pytest.raises(ValueError, match="2 of the 2 utterances .*'u3', 'u4'"):
        check_coverage(scp, ["u3", "u4"], "data/train/text")


def test_check_coverage_on_extracted(tmp_path, text_file, config):
    out = tmp_path / "kd"
    extract(text_file, str(out), config)
    check_coverage(out / f"{KD_TOKEN}.scp", UTTS, text_file)
    with pytest.raises(ValueError, match="extra-utt"):
        check_coverage(out / f"{KD_PROB}.scp", UTTS + ["extra-utt"], text_file)


# --------------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_help():
    result = subprocess.run(
        [sys.executable, "-m", "espnet_bertkd.bin.extract_soft_labels", "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--teacher" in result.stdout and "--output_dir" in result.stdout


def test_cli_main_end_to_end(tmp_path, text_file, config, teacher_dir):
    out = tmp_path / "cli"
    cli_main(["--teacher", teacher_dir, "--text", text_file, "--output_dir", str(out), "--topk", str(TOPK),
              "--nj", "2", "--chunk_size", "2", "--log_level", "WARNING"])
    got = load(out)
    ref_dir = tmp_path / "ref"
    assert extract(text_file, str(ref_dir), config, chunk_size=500)
    ref = load(ref_dir)
    assert list(got) == UTTS
    assert_soft_labels_close(got, ref)  # two jobs in chunks of 2 against one chunk: other batches
    meta = json.loads((out / META_FILE).read_text())
    assert meta["topk"] == TOPK and meta["nj"] == 2


def test_cli_context_reads_utt2spk_beside_text(tmp_path, config, teacher_dir):
    utts = ["s1-1", "s1-2", "s2-1"]
    data = tmp_path / "data"
    data.mkdir()
    text = write_text(data / "text", zip(utts, TEXTS[:3]))
    # groups that the utterance-id prefix would not give: s1-2 and s2-1 belong together
    (data / "utt2spk").write_text("s1-1 A\ns1-2 B\ns2-1 B\n")
    out = tmp_path / "cli"
    cli_main(["--teacher", teacher_dir, "--text", text, "--output_dir", str(out), "--topk", str(TOPK),
              "--context_utterances", "1", "--log_level", "WARNING"])
    got = load(out)
    teacher = MaskedLMTeacher(config)
    expected = teacher.soft_labels(TEXTS[:3], ["", "", TEXTS[1]], ["", TEXTS[2], ""])
    assert_soft_labels_close(got, {u: pack(lab, teacher.vocab_size) for u, lab in zip(utts, expected)})
    plain = pack(teacher.soft_labels([TEXTS[0]])[0], teacher.vocab_size)
    assert_soft_labels_close({"s1-1": got["s1-1"]}, {"s1-1": plain})  # alone in its group A (another batch)
    # s1-2 saw its neighbour in group B: more than rounding away from its utterance-only labels
    assert np.abs(got["s1-2"][1] - pack(teacher.soft_labels([TEXTS[1]])[0], teacher.vocab_size)[1]).max() > PROB_ATOL
