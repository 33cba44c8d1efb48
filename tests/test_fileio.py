"""One I/O layer: every Kaldi table is read by fileio.read_table (one verdict on a file in every stage), every output
is written atomically through fileio, spk2utt has one definition and parallel jobs one split convention."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
import soundfile as sf

from espnet_bertkd.kd import extract as kd_extract
from espnet_bertkd.kd.soft_labels import check_coverage
from espnet_bertkd.kd.teacher_accuracy import read_transcripts
from espnet_bertkd.recipe.datadir import combine_data_dirs, fix_data_dir
from espnet_bertkd.recipe.librispeech import Utterance, prepare_lm_text, write_data_dir
from espnet_bertkd.recipe.score import score_texts
from espnet_bertkd.recipe.scp import split_scp
from espnet_bertkd.tasks.data_check import spk2utt_rows, validate_loader_inputs
from espnet_bertkd.utils.fileio import (OWNER_FILE, DataError, OutputDirError, atomic_dir, atomic_open,
                                        check_output_dir, iter_table, location, read_pairs, read_table, replace_dir)
from espnet_bertkd.utils.jobs import job_range, split_sizes

GOOD = "u1 HELLO THERE\nu2 TWO WORDS\nu3 THREE\n"

# (name, file bytes, the problems every reader reports)
DEFECTS = [
    ("blank line", b"u1 HELLO THERE\n\nu2 TWO WORDS\n", ["{p}:2: empty line"]),
    ("crlf", b"u1 HELLO THERE\r\nu2 TWO WORDS\r\n", ["{p}:1: carriage return (DOS line endings; convert with dos2unix)"]),
    ("bom", b"\xef\xbb\xbfu1 HELLO THERE\nu2 TWO WORDS\n",
     ["{p}:1: byte-order mark (save the file as UTF-8 without BOM)"]),
    ("duplicate key", b"u1 HELLO THERE\nu2 TWO WORDS\nu1 AGAIN\n",
     ["{p}:3: utterance u1: duplicate key (first on line 1)"]),
    ("no final newline", b"u1 HELLO THERE\nu2 TWO WORDS", ["{p}:2: last line has no newline"]),
    ("bad utf-8", b"u1 HELLO THERE\nu2 TW\xff WORDS\n", ["{p}:2: not valid UTF-8 (invalid start byte at byte 5)"]),
    ("all at once", b"\xef\xbb\xbfu1 HELLO THERE\r\n\r\nu1 AGAIN\r\nu2 X",
     ["{p}:1: byte-order mark (save the file as UTF-8 without BOM)",
      "{p}:1: carriage return (DOS line endings; convert with dos2unix)", "{p}:2: empty line",
      "{p}:3: utterance u1: duplicate key (first on line 1)", "{p}:4: last line has no newline"]),
]


def _readers(tmp_path: Path) -> Dict[str, Callable[[Path], object]]:
    """Every stage that reads a `text` (or another Kaldi table) given by the user."""
    good = tmp_path / "good_text"
    good.write_text(GOOD)
    return {
        "preflight validation": lambda p: validate_loader_inputs(None, p),
        "extract_soft_labels text / utt2spk": read_pairs,
        "teacher_accuracy": read_transcripts,
        "scorer (reference)": lambda p: score_texts(p, good),
        "scorer (hypothesis)": lambda p: score_texts(good, p),
        "soft-label coverage": lambda p: check_coverage(p, [], "data/text"),
        "key-file split": lambda p: split_scp(p, [tmp_path / "split.1", tmp_path / "split.2"]),
        "LM text": lambda p: prepare_lm_text(tmp_path / "lm_train.txt", kaldi_texts=[p]),
    }


@pytest.mark.parametrize("name,data,expected", DEFECTS, ids=[d[0] for d in DEFECTS])
def test_every_stage_gives_a_malformed_text_the_same_error(tmp_path, name, data, expected):
    path = tmp_path / "text"
    path.write_bytes(data)
    want = [e.format(p=path) for e in expected]
    for stage, read in _readers(tmp_path).items():
        with pytest.raises(DataError) as err:
            read(path)
        assert err.value.problems == want, stage


def test_every_stage_accepts_a_well_formed_text(tmp_path):
    path = tmp_path / "text"
    path.write_text(GOOD)
    for stage, read in _readers(tmp_path).items():
        read(path)  # no error
    assert read_pairs(path) == [("u1", "HELLO THERE"), ("u2", "TWO WORDS"), ("u3", "THREE")]


def test_reader_details(tmp_path):
    path = tmp_path / "t"
    path.write_text("a  x  y \nb\n")
    assert [(e.line, e.key, e.value) for e in read_table(path)] == [(1, "a", "x  y"), (2, "b", "")]
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing")
    assert location(path) == str(path)
    assert location(path, 3, "u1") == f"{path}:3: utterance u1"
    # unique=False (fix_data_dir) keeps duplicates; the other checks stay
    path.write_text("a 1\na 2\n")
    assert [e.value for e in read_table(path, unique=False)] == ["1", "2"]
    # streaming: entries come before the error, which comes after the last line
    path.write_text("a 1\n\nb 2\n")
    seen = []
    with pytest.raises(DataError, match="empty line"):
        for e in iter_table(path):
            seen.append(e.key)
    assert seen == ["a", "b"]


# --------------------------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_open_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_dir_keeps_the_old_directory_when_the_write_fails(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out, "tool") as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, "tool") as tmp:
            (tmp / "weights").write_text("new, half")
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == ["model"] and (out / "weights").read_text() == "old"
    with atomic_dir(out, "tool") as tmp:
        (tmp / "weights").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["model"] and sorted(os.listdir(out)) == [OWNER_FILE, "weights"]
    assert (out / "weights").read_text() == "new"


def test_replace_dir_puts_the_old_directory_back_when_the_swap_fails(tmp_path, monkeypatch):
    out, new = tmp_path / "teacher", tmp_path / "teacher.new"
    out.mkdir()
    (out / "config.json").write_text("old")
    new.mkdir()
    (new / "config.json").write_text("new")
    real_replace = os.replace

    def failing(src, dst):
        if Path(src) == new:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        replace_dir(new, out, "tool", overwrite=True)
    assert (out / "config.json").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["teacher", "teacher.new"]
    monkeypatch.setattr(os, "replace", real_replace)
    replace_dir(new, out, "tool", overwrite=True)
    assert (out / "config.json").read_text() == "new" and os.listdir(tmp_path) == ["teacher"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_directory_left_aside_by_a_killed_swap_is_restored(tmp_path):
    out = tmp_path / "data"
    aside = tmp_path / f"data.old{_dead_pid()}"  # killed between "rename old aside" and "rename new in"
    aside.mkdir()
    (aside / "text").write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, "tool", overwrite=True):
            raise RuntimeError("fails again")
    assert (out / "text").read_text() == "old\n" and os.listdir(tmp_path) == ["data"]


def test_flac_is_written_atomically(tmp_path):
    from homophones import librispeech_layout as layout

    path = tmp_path / "a" / "1-2-0000.flac"
    audio = (np.sin(np.arange(1600) / 5) * 0.3).astype(np.float32)
    layout.atomic_write_flac(path, audio, 16000)
    data, rate = sf.read(path)
    assert rate == 16000 and len(data) == 1600 and sf.info(path).format == "FLAC"
    assert os.listdir(path.parent) == [path.name]


# --------------------------------------------------------------------------------------------------------------------
# one spk2utt, one job split


def test_spk2utt_is_the_same_in_prepare_fix_and_combine(tmp_path):
    # speakers whose C order differs from a case-folding or locale order
    utts = [Utterance(u, s, str(tmp_path / f"{u}.flac"), "X") for u, s in
            [("b-1-0002", "b-1"), ("B-1-0001", "B-1"), ("b-1-0001", "b-1"), ("a_1-0001", "a_1"), ("a-1-0001", "a-1")]]
    for u in utts:
        sf.write(u.wav, np.zeros(160, dtype=np.float32), 16000, format="FLAC")
    prepared = write_data_dir(utts, tmp_path / "prepared")
    expected = "".join(f"{s} {u}\n" for s, u in spk2utt_rows((u.utt_id, u.speaker) for u in utts))
    assert expected == "B-1 B-1-0001\na-1 a-1-0001\na_1 a_1-0001\nb-1 b-1-0001 b-1-0002\n"
    assert (prepared / "spk2utt").read_text() == expected
    (prepared / "spk2utt").write_text("junk\n")
    fix_data_dir(prepared)
    assert (prepared / "spk2utt").read_text() == expected
    combine_data_dirs([prepared], tmp_path / "combined")
    assert (tmp_path / "combined" / "spk2utt").read_text() == expected


@pytest.mark.parametrize("total,nj", [(7, 3), (10, 4), (3, 3), (100, 7)])
def test_key_file_split_and_soft_label_jobs_share_boundaries(tmp_path, total, nj):
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"u{i:03d} /a/u{i:03d}.flac\n" for i in range(total)))
    outputs = [tmp_path / f"keys.{j}.scp" for j in range(1, nj + 1)]
    assert split_scp(scp, outputs) == split_sizes(total, nj)
    for j, out in enumerate(outputs, 1):
        keys = [line.split()[0] for line in out.read_text().splitlines()]
        assert keys == [f"u{i:03d}" for i in kd_extract.job_range(total, nj, j)]  # extract's chunks, unchanged


def test_job_range_is_extracts_historical_convention():
    # kd/extract.py names resumable chunks split{nj}/{job}: these boundaries must never change
    assert [list(job_range(7, 3, j)) for j in (1, 2, 3)] == [[0, 1], [2, 3], [4, 5, 6]]
    assert split_sizes(10, 4) == [2, 3, 2, 3]
    with pytest.raises(ValueError):
        job_range(5, 2, 3)


# --------------------------------------------------------------------------------------------------------------------
# output directories: a tool replaces only what it made


def test_check_output_dir_refuses_what_the_tool_did_not_make(tmp_path):
    check_output_dir(tmp_path / "absent", "tool")  # absent: fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "tool")  # empty: fine
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "valid.loss.ave.pth").write_bytes(b"model")
    with pytest.raises(OutputDirError, match=r"exp: exists, was not made by tool and holds 'valid.loss.ave.pth'.*"
                                             r"--overwrite true"):
        check_output_dir(exp, "tool")
    check_output_dir(exp, "tool", overwrite=True)
    (exp / OWNER_FILE).write_text("other_tool\n")
    with pytest.raises(OutputDirError, match="was made by other_tool"):
        check_output_dir(exp, "tool")
    (exp / OWNER_FILE).write_text("tool\n")
    check_output_dir(exp, "tool")  # its own earlier output
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="--output_dir .*file: is a file, not a directory"):
        check_output_dir(tmp_path / "file", "tool", overwrite=True)


def test_check_output_dir_never_replaces_an_input_even_with_overwrite(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for output in (data, data / "train", tmp_path):
        with pytest.raises(OutputDirError, match="holds the input .*train.*choose a directory outside the inputs"):
            check_output_dir(output, "tool", inputs=[data / "train"], overwrite=True)
    check_output_dir(data / "train_sp", "tool", inputs=[data / "train"])  # a sibling: fine
    (data / "train" / "sub").mkdir()
    check_output_dir(data / "train" / "sub", "tool", inputs=[data / "train"])  # inside an input: nothing deleted


def test_atomic_dir_checks_before_the_work_and_marks_its_output(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "wav.scp").write_text("a a.wav\n")
    ran = []
    with pytest.raises(OutputDirError):
        with atomic_dir(out, "tool"):
            ran.append(1)
    assert ran == [] and sorted(os.listdir(out)) == ["wav.scp"]
    with atomic_dir(out, "tool", overwrite=True) as tmp:
        (tmp / "text").write_text("a A\n")
    assert sorted(os.listdir(out)) == [OWNER_FILE, "text"] and (out / OWNER_FILE).read_text() == "tool\n"
    with atomic_dir(out, "tool") as tmp:  # now its own: replaced without --overwrite
        (tmp / "text").write_text("a B\n")
    assert (out / "text").read_text() == "a B\n"
