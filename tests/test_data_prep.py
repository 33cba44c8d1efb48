"""LibriSpeech -> Kaldi data directories, LM text, and data directory validation/fixing: exact outputs, and every
error names the file, the line and the utterance."""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile

from espnet_bertkd.recipe.bin import prepare_librispeech as prepare_cli
from espnet_bertkd.recipe.bin import prepare_lm_text as lm_cli
from espnet_bertkd.recipe.bin import combine_data_dirs as combine_cli
from espnet_bertkd.recipe.bin import validate_data_dir as validate_cli
from espnet_bertkd.recipe.datadir import combine_data_dirs, fix_data_dir
from espnet_bertkd.tasks.data_check import validate_data_dir
from espnet_bertkd.recipe.librispeech import kaldi_set_name, prepare_librispeech, prepare_lm_text, scan_set
from espnet_bertkd.utils.fileio import OWNER_FILE, DataError

# reader -> chapter -> {utterance number: transcript}. Chapters 1240 and 12400 of one reader check C order:
# '103-1240-0000' < '103-12400-0000' because '-' < '0'.
CORPUS: Dict[str, Dict[str, Dict[str, str]]] = {
    "1272": {"128104": {"0002": "NOR IS MISTER QUILTER'S MANNER", "0000": "MISTER QUILTER IS THE APOSTLE"}},
    "103": {"1240": {"0000": "CHAPTER ONE", "0001": "MISSUS RACHEL LYNDE"}, "12400": {"0000": "HELLO THERE"}},
    "19": {"198": {"0000": "NORTHANGER ABBEY"}},
}


def write_flac(path: Path, samples: int = 1600, fs: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.sin(np.arange(samples) * 0.05) * 0.1).astype(np.float32)
    soundfile.write(str(path), data, fs, format="FLAC")


def make_corpus(root: Path, set_name: str = "dev-clean", corpus=CORPUS) -> Path:
    for reader, chapters in corpus.items():
        for chapter, utts in chapters.items():
            d = root / set_name / reader / chapter
            d.mkdir(parents=True, exist_ok=True)
            lines = []
            for n, text in utts.items():
                write_flac(d / f"{reader}-{chapter}-{n}.flac")
                lines.append(f"{reader}-{chapter}-{n} {text}\n")
            (d / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    return root


@pytest.fixture
def root(tmp_path) -> Path:
    r = make_corpus(tmp_path / "LibriSpeech")
    (r / "SPEAKERS.TXT").write_text(
        "; Some comment\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "19   | F | dev-clean        |  8.02 | Kara Shallenberg\n"
        "103  | F | dev-clean        | 25.00 | Karen Savage\n"
        "1272 | M | dev-clean        | 12.00 | John Rose\n")
    return r


def flac(root: Path, utt: str, set_name: str = "dev-clean") -> str:
    reader, chapter, _ = utt.split("-")
    return os.path.abspath(root / set_name / reader / chapter / f"{utt}.flac")


UTTS = ["103-1240-0000", "103-1240-0001", "103-12400-0000", "1272-128104-0000", "1272-128104-0002", "19-198-0000"]


def test_prepare_librispeech_exact_contents(root, tmp_path):
    out = prepare_librispeech(root, "dev-clean", tmp_path / "data")
    assert out == tmp_path / "data" / "dev_clean"
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "spk2gender", "spk2utt", "text", "utt2spk", "wav.scp"]
    assert (out / "wav.scp").read_text() == "".join(f"{u} {flac(root, u)}\n" for u in UTTS)
    assert (out / "text").read_text() == (
        "103-1240-0000 CHAPTER ONE\n"
        "103-1240-0001 MISSUS RACHEL LYNDE\n"
        "103-12400-0000 HELLO THERE\n"
        "1272-128104-0000 MISTER QUILTER IS THE APOSTLE\n"
        "1272-128104-0002 NOR IS MISTER QUILTER'S MANNER\n"
        "19-198-0000 NORTHANGER ABBEY\n")
    assert (out / "utt2spk").read_text() == (
        "103-1240-0000 103-1240\n103-1240-0001 103-1240\n103-12400-0000 103-12400\n"
        "1272-128104-0000 1272-128104\n1272-128104-0002 1272-128104\n19-198-0000 19-198\n")
    assert (out / "spk2utt").read_text() == (
        "103-1240 103-1240-0000 103-1240-0001\n103-12400 103-12400-0000\n"
        "1272-128104 1272-128104-0000 1272-128104-0002\n19-198 19-198-0000\n")
    assert (out / "spk2gender").read_text() == "103-1240 f\n103-12400 f\n1272-128104 m\n19-198 f\n"
    report = validate_data_dir(out, check_audio=True, fs=16000, allowed_chars="librispeech")
    assert (report.utterances, report.speakers, report.warnings) == (6, 4, [])
    assert not [p for p in (tmp_path / "data").iterdir() if p.name != "dev_clean"]  # no temporary left behind


def test_set_names_and_rerun_replaces_stale_files(root, tmp_path):
    assert kaldi_set_name("train-clean-100") == "train_clean_100"
    write_flac(root / "dev-clean/19/198/._19-198-0000.flac")  # a macOS resource fork copy: not an utterance
    out = prepare_librispeech(root, "dev-clean", tmp_path / "data")
    (out / "segments").write_text("stale\n")
    (root / "SPEAKERS.TXT").unlink()
    prepare_librispeech(root, "dev-clean", tmp_path / "data")
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "spk2utt", "text", "utt2spk", "wav.scp"]
    assert len((out / "wav.scp").read_text().splitlines()) == 6


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def test_transcript_without_audio(root):
    (root / "dev-clean/1272/128104/1272-128104-0002.flac").unlink()
    msg = _error(scan_set, root / "dev-clean")
    assert f"{root}/dev-clean/1272/128104/1272-128104.trans.txt:1: utterance 1272-128104-0002" in msg
    assert "1272-128104-0002.flac does not exist" in msg


def test_audio_without_transcript(root):
    write_flac(root / "dev-clean/19/198/19-198-0007.flac")
    msg = _error(scan_set, root / "dev-clean")
    assert f"{root}/dev-clean/19/198/19-198-0007.flac: utterance 19-198-0007: no line in" in msg


def test_bad_id_empty_transcript_missing_trans_file(root):
    trans = root / "dev-clean/103/1240/103-1240.trans.txt"
    trans.write_text("103-1240-0000 CHAPTER ONE\n103-1240-0001\n103-999-0003 WRONG CHAPTER\n")
    (root / "dev-clean/19/198/19-198.trans.txt").unlink()
    msg = _error(scan_set, root / "dev-clean")
    assert f"{trans}:2: utterance 103-1240-0001: empty transcript" in msg
    assert f"{trans}:3: utterance 103-999-0003: id does not match 103-1240-<number>" in msg
    assert f"{root}/dev-clean/19/198/19-198.trans.txt: missing transcript file" in msg
    assert msg.startswith("3 problems:")


def test_missing_set_dir_and_archive_layout(root, tmp_path):
    assert f"{root}/test-other: no such directory" in _error(prepare_librispeech, root, "test-other", root / "d")
    # the archives unpack to LibriSpeech/<set>: the parent directory works as --root too
    out = prepare_librispeech(root.parent, "dev-clean", tmp_path / "d2")
    assert (out / "spk2gender").is_file() and len((out / "text").read_text().splitlines()) == 6


def test_prepare_lm_text(tmp_path):
    train = tmp_path / "text"
    train.write_text("u1 HELLO   WORLD\nu2\nu3 Good Day\n")
    lm = tmp_path / "lm.txt.gz"
    with gzip.open(lm, "wt") as f:
        f.write("FIRST SENTENCE\n\n  SECOND   one \n")
    lm2 = tmp_path / "lm2.txt"
    lm2.write_text("THIRD\n")
    out = tmp_path / "data" / "lm_train.txt"
    assert prepare_lm_text(out, [lm, lm2], [train]) == 5
    assert out.read_text() == ("u1 HELLO WORLD\nu3 Good Day\nlibrispeech_lng_00000001 FIRST SENTENCE\n"
                               "librispeech_lng_00000003 SECOND one\nlibrispeech_lng_00000004 THIRD\n")
    prepare_lm_text(out, [lm], [], id_prefix="lm_", case="upper")
    assert out.read_text() == "lm_00000001 FIRST SENTENCE\nlm_00000003 SECOND ONE\n"
    train.write_text("u1 A\nu1 B\n")
    # read by fileio.read_table, as every stage reads a Kaldi text
    assert f"{train}:2: utterance u1: duplicate key (first on line 1)" in _error(prepare_lm_text, out, [], [train])
    assert out.read_text() == "lm_00000001 FIRST SENTENCE\nlm_00000003 SECOND ONE\n"  # untouched on error


def test_prepare_cli(root, tmp_path, capsys):
    prepare_cli.main(["--root", str(root), "--data_dir", str(tmp_path / "data"), "dev-clean"])
    assert "dev_clean: 6 utterances, 4 speakers" in capsys.readouterr().out
    lm_cli.main(["--output", str(tmp_path / "lm.txt"), "--text", str(tmp_path / "data/dev_clean/text")])
    assert (tmp_path / "lm.txt").read_text() == (tmp_path / "data/dev_clean/text").read_text()
    (root / "dev-clean/19/198/19-198-0000.flac").unlink()
    with pytest.raises(SystemExit) as e:
        prepare_cli.main(["--root", str(root), "--data_dir", str(tmp_path / "data"), "dev-clean"])
    assert "19-198.trans.txt:1: utterance 19-198-0000" in str(e.value.code)


# --------------------------------------------------------------------------------------------------------------
# validation


@pytest.fixture
def data_dir(root, tmp_path) -> Path:
    return prepare_librispeech(root, "dev-clean", tmp_path / "data")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_unsorted_and_duplicate(data_dir):
    lines = (data_dir / "text").read_text().splitlines(keepends=True)
    (data_dir / "text").write_text("".join([lines[1], lines[0]] + lines[2:]))
    msg = _error(validate_data_dir, data_dir)
    assert f"{data_dir}/text:2: utterance 103-1240-0000: not sorted" in msg
    (data_dir / "text").write_text("".join(lines[:2] + [lines[1]] + lines[2:]))
    msg = _error(validate_data_dir, data_dir)
    assert f"{data_dir}/text:3: utterance 103-1240-0001: duplicate key (first on line 2)" in msg


def test_key_mismatch_and_spk2utt(data_dir):
    edit(data_dir / "text", "19-198-0000 NORTHANGER ABBEY\n", "")
    edit(data_dir / "spk2utt", "103-1240 103-1240-0000 103-1240-0001", "103-1240 103-1240-0000")
    msg = _error(validate_data_dir, data_dir)
    assert f"{data_dir}/utt2spk:6: utterance 19-198-0000: missing from {data_dir}/text" in msg
    assert f"{data_dir}/spk2utt:1: speaker 103-1240 disagrees with utt2spk (missing: 103-1240-0001)" in msg


def test_speaker_not_prefix(data_dir):
    edit(data_dir / "utt2spk", "103-1240-0000 103-1240", "103-1240-0000 zz")
    msg = _error(validate_data_dir, data_dir)
    assert "utt2spk:1: utterance 103-1240-0000: utt2spk is not in sorted order when sorted first on speaker" in msg


def test_audio_checks(data_dir, root):
    os.remove(flac(root, "103-12400-0000"))
    msg = _error(validate_data_dir, data_dir)
    assert f"{data_dir}/wav.scp:3: utterance 103-12400-0000: audio file {flac(root, '103-12400-0000')}" in msg
    write_flac(Path(flac(root, "103-12400-0000")), fs=8000)
    assert validate_data_dir(data_dir).utterances == 6  # without --fs the rate is not checked
    msg = _error(validate_data_dir, data_dir, fs=16000)
    assert "wav.scp:3: utterance 103-12400-0000:" in msg and "sample rate 8000, expected 16000" in msg
    Path(flac(root, "103-12400-0000")).write_bytes(b"not audio at all")
    msg = _error(validate_data_dir, data_dir, check_audio=True)
    assert "wav.scp:3: utterance 103-12400-0000: cannot read" in msg
    write_flac(Path(flac(root, "103-12400-0000")), samples=0)
    assert "wav.scp:3: utterance 103-12400-0000:" in _error(validate_data_dir, data_dir, check_audio=True)


def test_text_checks(data_dir):
    edit(data_dir / "text", "103-1240-0001 MISSUS RACHEL LYNDE", "103-1240-0001")
    edit(data_dir / "text", "HELLO THERE", "Hello THERE!")
    msg = _error(validate_data_dir, data_dir, allowed_chars="librispeech")
    assert f"{data_dir}/text:2: utterance 103-1240-0001: empty transcript" in msg
    assert f"{data_dir}/text:3: utterance 103-12400-0000: character(s) outside the allowed set: '!' 'e' 'l' 'o'" in msg
    report = validate_data_dir(data_dir, allow_empty_text=True)  # no character set: any character
    assert report.warnings == [f"{data_dir}/text:2: utterance 103-1240-0001: empty transcript"]


def test_line_endings(data_dir):
    (data_dir / "utt2spk").write_bytes((data_dir / "utt2spk").read_bytes().rstrip(b"\n"))
    (data_dir / "text").write_bytes((data_dir / "text").read_bytes().replace(b"ABBEY\n", b"ABBEY\r\n"))
    msg = _error(validate_data_dir, data_dir)
    assert f"{data_dir}/utt2spk:6: last line has no newline" in msg
    assert f"{data_dir}/text:6: carriage return" in msg


def test_missing_file(data_dir):
    (data_dir / "spk2utt").unlink()
    assert _error(validate_data_dir, data_dir) == f"{data_dir}/spk2utt: no such file"


def test_fix_data_dir(data_dir):
    expected = {name: (data_dir / name).read_text() for name in ("wav.scp", "text", "utt2spk", "spk2utt")}
    text = (data_dir / "text").read_text().splitlines(keepends=True)
    (data_dir / "text").write_text("".join(reversed(text)) + "99-1-0000 ONLY IN TEXT\n")
    (data_dir / "spk2utt").write_text("garbage line\n")
    assert fix_data_dir(data_dir) == (6, 1)
    for name, content in expected.items():
        assert (data_dir / name).read_text() == content, name
    assert (data_dir / ".backup" / "spk2utt").read_text() == "garbage line\n"
    edit(data_dir / "text", "19-198-0000 NORTHANGER ABBEY", "19-198-0000")
    assert fix_data_dir(data_dir, drop_empty_text=True) == (5, 1)
    assert "19-198" not in (data_dir / "spk2utt").read_text()
    assert "19-198" not in (data_dir / "spk2gender").read_text()
    assert validate_data_dir(data_dir).utterances == 5


def test_validate_cli(data_dir, capsys):
    validate_cli.main([str(data_dir), "--check_audio", "--fs", "16000", "--allowed_chars", "librispeech"])
    assert "OK (6 utterances, 4 speakers, 0 warnings)" in capsys.readouterr().out
    lines = (data_dir / "utt2spk").read_text().splitlines(keepends=True)
    (data_dir / "utt2spk").write_text("".join([lines[2], lines[0], lines[1]] + lines[3:]))
    with pytest.raises(SystemExit) as e:
        validate_cli.main([str(data_dir)])
    assert f"{data_dir}/utt2spk:2: utterance 103-1240-0000: not sorted" in str(e.value.code)
    validate_cli.main([str(data_dir), "--fix"])
    assert "OK (6 utterances" in capsys.readouterr().out
    shutil.rmtree(data_dir)
    with pytest.raises(SystemExit) as e:
        validate_cli.main([str(data_dir)])
    assert f"{data_dir}: no such directory" in str(e.value.code)


def test_combine_data_dirs(root, tmp_path, capsys):
    other = {"2": {"10": {"0000": "OTHER ONE"}}, "1": {"20": {"0001": "OTHER TWO"}}}
    make_corpus(root, "dev-other", other)
    a = prepare_librispeech(root, "dev-clean", tmp_path / "data")
    b = prepare_librispeech(root, "dev-other", tmp_path / "data")
    assert not (b / "spk2gender").exists()  # readers 1 and 2 are not in SPEAKERS.TXT
    assert combine_data_dirs([a, b], tmp_path / "data" / "dev") == (8, 6)
    dev = tmp_path / "data" / "dev"
    # spk2gender is not in every source, so it is left out of the result
    assert sorted(p.name for p in dev.iterdir()) == [OWNER_FILE, "spk2utt", "text", "utt2spk", "wav.scp"]
    assert [line.split()[0] for line in (dev / "text").read_text().splitlines()] == [
        "1-20-0001", "103-1240-0000", "103-1240-0001", "103-12400-0000", "1272-128104-0000", "1272-128104-0002",
        "19-198-0000", "2-10-0000"]
    assert (dev / "spk2utt").read_text().splitlines()[0] == "1-20 1-20-0001"
    msg = _error(combine_data_dirs, [a, b, a], tmp_path / "data" / "bad")
    assert f"{a}/text:1: utterance 103-1240-0000: also in {a}/text:1" in msg
    combine_cli.main([str(tmp_path / "data" / "dev2"), str(a), str(b)])
    assert "8 utterances, 6 speakers from 2 directories" in capsys.readouterr().out
    assert (tmp_path / "data" / "dev2" / "text").read_text() == (dev / "text").read_text()


def test_subset_keeps_the_first_utterances(root, tmp_path, capsys):
    a = prepare_librispeech(root, "dev-clean", tmp_path / "data")
    utts = [line.split()[0] for line in (a / "text").read_text().splitlines()]
    combine_cli.main([str(tmp_path / "data" / "small"), str(a), "--first", "3"])
    assert "3 utterances" in capsys.readouterr().out
    small = tmp_path / "data" / "small"
    for name in ("text", "utt2spk", "wav.scp"):
        assert [line.split()[0] for line in (small / name).read_text().splitlines()] == utts[:3]
    speakers = {line.split()[1] for line in (small / "utt2spk").read_text().splitlines()}
    assert {line.split()[0] for line in (small / "spk2utt").read_text().splitlines()} == speakers
    if (small / "spk2gender").exists():
        assert {line.split()[0] for line in (small / "spk2gender").read_text().splitlines()} <= speakers
    assert validate_data_dir(small).utterances == 3
    with pytest.raises(SystemExit, match="cannot keep the first 99"):
        combine_cli.main([str(tmp_path / "data" / "bad"), str(a), "--first", "99"])


def test_subset_keeps_utterances_evenly_spaced_over_the_speakers(root, tmp_path, capsys):
    a = prepare_librispeech(root, "dev-clean", tmp_path / "data")
    utts = [line.split()[0] for line in (a / "text").read_text().splitlines()]
    spk = dict(line.split() for line in (a / "utt2spk").read_text().splitlines())
    combine_cli.main([str(tmp_path / "data" / "spread"), str(a), "--subset", "3"])
    assert "3 utterances, 3 speakers" in capsys.readouterr().out
    spread = tmp_path / "data" / "spread"
    kept = [line.split()[0] for line in (spread / "text").read_text().splitlines()]
    assert kept == [utts[0], utts[2], utts[4]]
    assert len({spk[u] for u in utts[:3]}) == 2   # --first 3 would have kept two speakers
    assert validate_data_dir(spread).utterances == 3
    with pytest.raises(SystemExit, match="cannot keep 99 of"):
        combine_cli.main([str(tmp_path / "data" / "bad"), str(a), "--subset", "99"])
    with pytest.raises(SystemExit):
        combine_cli.main([str(tmp_path / "data" / "bad"), str(a), "--subset", "3", "--first", "3"])
