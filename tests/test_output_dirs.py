"""Reliability issue 24, item 1: no tool deletes what it did not make. Every tool that writes a directory whole
(combine_data_dirs, prepare_librispeech, perturb_speed, share_soft_labels, train_teacher, upload_hf) refuses, before
its work and with one line, a non-empty directory it did not make (its owner marker) and any directory holding one
of its inputs; `--overwrite true` is the only way past the first, nothing past the second."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import snapshot
from test_speed_perturb import FACTORS, refusal, write_source
from espnet_bertkd.recipe.bin import combine_data_dirs as combine_cli
from espnet_bertkd.recipe.bin import perturb_speed as perturb_cli
from espnet_bertkd.recipe.bin import prepare_librispeech as prepare_cli
from espnet_bertkd.recipe.bin import upload_hf as upload_cli
from espnet_bertkd.bin import share_soft_labels as share_cli
from espnet_bertkd.utils.fileio import OWNER_FILE


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path) -> Path:
    """data/train (with its audio) and data/dev, and an unrelated file a user keeps in data/."""
    train = write_source(tmp_path)
    dev = train.parent / "dev"
    dev.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):  # speaker spkB moves to dev
        lines = (train / name).read_text().splitlines()
        (train / name).write_text("".join(f"{line}\n" for line in lines if not line.startswith("spkB")))
        (dev / name).write_text("".join(f"{line}\n" for line in lines if line.startswith("spkB")))
    (train.parent / "notes.txt").write_text("my notes\n")
    return train.parent


def test_combine_into_the_sources_parent_deletes_nothing(data, tmp_path):
    """The issue's case: `combine_data_dirs data data/train data/dev` replaced the whole data/ and exited 1."""
    before = snapshot(data)
    proc = run("-m", "espnet_bertkd.recipe.bin.combine_data_dirs", "data", "data/train", "data/dev", cwd=tmp_path)
    assert "OUTPUT data: holds the input data/train" in one_line(proc)
    # not even --overwrite gets past an input
    proc = run("-m", "espnet_bertkd.recipe.bin.combine_data_dirs", "data", "data/train", "data/dev",
               "--overwrite", "true", cwd=tmp_path)
    assert "holds the input" in one_line(proc)
    assert snapshot(data) == before


def test_combine_refuses_a_directory_it_did_not_make_unless_overwrite(data, tmp_path):
    mine = data / "train_all"
    mine.mkdir()
    (mine / "segments").write_text("mine\n")
    message = refusal(lambda: combine_cli.main([str(mine), str(data / "train"), str(data / "dev")]))
    assert f"OUTPUT {mine}: exists, was not made by combine_data_dirs and holds 'segments'" in message
    assert "--overwrite true" in message and (mine / "segments").read_text() == "mine\n"
    combine_cli.main([str(mine), str(data / "train"), str(data / "dev"), "--overwrite", "true"])
    assert not (mine / "segments").exists() and (mine / OWNER_FILE).read_text() == "combine_data_dirs\n"
    assert len((mine / "text").read_text().splitlines()) == 5
    combine_cli.main([str(mine), str(data / "train")])  # its own earlier output: replaced without --overwrite
    assert len((mine / "text").read_text().splitlines()) == 3


def test_train_teacher_leaves_an_experiment_alone(tmp_path):
    """The issue's case: `train_teacher --output_dir exp` deleted exp's models and exited 0."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "valid.loss.ave.pth").write_bytes(b"a trained model")
    (tmp_path / "lm.txt").write_text("the knight rode at night\nthey went there too\n")
    before = snapshot(exp)
    proc = run("-m", "espnet_bertkd.bin.train_teacher", "--text", "lm.txt", "--output_dir", "exp", "--epochs", "1",
               cwd=tmp_path)
    line = one_line(proc)
    assert line.startswith("train_teacher: --output_dir exp: exists, was not made by train_teacher and holds "
                           "'valid.loss.ave.pth'") and "--overwrite true" in line
    assert snapshot(exp) == before and sorted(os.listdir(tmp_path)) == ["exp", "lm.txt"]
    # the text inside the output directory: refused whatever --overwrite says
    proc = run("-m", "espnet_bertkd.bin.train_teacher", "--text", "exp/text", "--output_dir", "exp",
               "--overwrite", "true", cwd=tmp_path)
    assert "holds the input exp/text" in one_line(proc)


def test_prepare_librispeech_refuses_a_data_dir_it_did_not_make(tmp_path):
    from test_data_prep import make_corpus

    root = make_corpus(tmp_path / "LibriSpeech")
    own = tmp_path / "data" / "dev_clean"
    own.mkdir(parents=True)
    (own / "feats.scp").write_text("mine\n")
    message = refusal(lambda: prepare_cli.main(["--root", str(root), "--data_dir", str(tmp_path / "data"),
                                                "dev-clean"]))
    assert "--data_dir" in message and "was not made by prepare_librispeech" in message
    assert (own / "feats.scp").read_text() == "mine\n"
    prepare_cli.main(["--root", str(root), "--data_dir", str(tmp_path / "data"), "dev-clean", "--overwrite", "true"])
    prepare_cli.main(["--root", str(root), "--data_dir", str(tmp_path / "data"), "dev-clean"])  # now its own
    assert (own / "wav.scp").is_file() and not (own / "feats.scp").exists()


def test_perturb_speed_refuses_before_writing_any_audio(data, tmp_path):
    dst = data / "mine"
    dst.mkdir()
    (dst / "wav.scp").write_text("mine\n")
    audio = tmp_path / "audio"
    message = refusal(lambda: perturb_cli.main(["--src", str(data / "train"), "--dst", str(dst), "--audio_dir",
                                                str(audio), "--factors", FACTORS]))
    assert f"--dst {dst}: exists, was not made by perturb_speed" in message
    assert not audio.exists() and (dst / "wav.scp").read_text() == "mine\n"


def test_share_soft_labels_refuses_a_directory_it_did_not_make(tmp_path):
    out = tmp_path / "dump" / "kd" / "train_sp"
    out.mkdir(parents=True)
    (out / "kd_token.scp").write_text("mine\n")
    message = refusal(lambda: share_cli.main(["--src_dir", str(tmp_path / "dump" / "kd" / "train"), "--text",
                                              str(tmp_path / "text"), "--output_dir", str(out)]))
    assert "was not made by share_soft_labels" in message and (out / "kd_token.scp").read_text() == "mine\n"
    src = tmp_path / "dump" / "kd" / "train"
    message = refusal(lambda: share_cli.main(["--src_dir", str(src), "--text", str(tmp_path / "text"),
                                              "--output_dir", str(src.parent), "--overwrite", "true"]))
    assert "holds the input" in message


def test_upload_hf_refuses_a_repo_dir_it_did_not_make(tmp_path):
    packed = tmp_path / "asr_model.zip"
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("meta.yaml", "yaml_files: {}\nfiles: {}\n")
    repo = tmp_path / "hf"
    repo.mkdir()
    (repo / "my_model.bin").write_bytes(b"x")
    message = refusal(lambda: upload_cli.main(["--packed_zip", str(packed), "--hf_repo", "me/model", "--repo_dir",
                                               str(repo), "--dry_run", "true"]))
    assert f"--repo_dir {repo}: exists, was not made by upload_hf" in message
    assert (repo / "my_model.bin").read_bytes() == b"x"


def test_extract_soft_labels_writes_only_into_its_own_or_an_empty_directory(data, tmp_path, teacher_dir):
    from espnet_bertkd.bin import extract_soft_labels as extract_cli

    before = snapshot(data)
    args = ["--teacher", teacher_dir, "--text", str(data / "train" / "text"), "--topk", "4"]
    message = refusal(lambda: extract_cli.main([*args, "--output_dir", str(data / "train")]))
    assert f"--output_dir {data / 'train'}: exists, was not made by extract_soft_labels" in message
    assert "choose another directory, or an empty one" in message and snapshot(data) == before
    message = refusal(lambda: extract_cli.main([*args, "--output_dir", str(data / "notes.txt")]))
    assert message.endswith("notes.txt: is a file, not a directory; choose another directory")
    out = tmp_path / "kd"
    extract_cli.main([*args, "--output_dir", str(out)])
    extract_cli.main([*args, "--output_dir", str(out)])  # its own: resumed, nothing to do
    assert (out / "kd_token.scp").is_file() and snapshot(data) == before


@pytest.mark.parametrize("raw,extra,expected", [
    (b"u1 THE KNIGHT\nu1 RODE AT NIGHT\n", [], "text:2: utterance u1: duplicate key (first on line 1)"),
    (b"u1 THE KNIGHT \xff\xfe\n", [], "text:1: not valid UTF-8"),
    (b"u1 THE KNIGHT\n", ["--chunk_size", "0"], "--chunk_size must be at least 1, got 0"),
    (b"u1 THE KNIGHT\n", ["--nj", "0"], "--nj must be at least 1, got 0"),
], ids=["duplicate-ids", "not-utf8", "chunk-size-0", "nj-0"])
def test_extract_soft_labels_bad_input_is_one_line(tmp_path, teacher_dir, raw, extra, expected):
    """Issue 24: extract_soft_labels turned every input error into a traceback."""
    from espnet_bertkd.bin import extract_soft_labels as extract_cli

    (tmp_path / "text").write_bytes(raw)
    message = refusal(lambda: extract_cli.main(["--teacher", teacher_dir, "--text", str(tmp_path / "text"),
                                                "--output_dir", str(tmp_path / "kd"), "--topk", "4", *extra]))
    assert message.startswith("extract_soft_labels: ") and expected in message and "\n" not in message


def test_extract_soft_labels_other_settings_corrupt_teacher_and_unwritable_dir_are_one_line(tmp_path, teacher_dir):
    import shutil

    from espnet_bertkd.bin import extract_soft_labels as extract_cli

    (tmp_path / "text").write_text("u1 THE KNIGHT RODE\nu2 AT NIGHT\n")
    args = ["--text", str(tmp_path / "text"), "--output_dir", str(tmp_path / "kd")]
    extract_cli.main(["--teacher", teacher_dir, "--topk", "4", *args])
    message = refusal(lambda: extract_cli.main(["--teacher", teacher_dir, "--topk", "3", *args]))
    assert "holds soft labels made with other settings (topk differ)" in message and "\n" not in message
    corrupt = tmp_path / "corrupt"
    shutil.copytree(teacher_dir, corrupt)
    (corrupt / "config.json").write_text("{not json")
    message = refusal(lambda: extract_cli.main(["--teacher", str(corrupt), "--topk", "4", "--text",
                                                str(tmp_path / "text"), "--output_dir", str(tmp_path / "kd2")]))
    assert message.startswith("extract_soft_labels: teacher.model=") and "config.json" in message
    # an --output_dir that cannot be made (below a file: what an unwritable one gives root too)
    (tmp_path / "a_file").write_text("x\n")
    message = refusal(lambda: extract_cli.main(["--teacher", teacher_dir, "--topk", "4", "--text",
                                                str(tmp_path / "text"), "--output_dir", str(tmp_path / "a_file/kd")]))
    assert message.startswith("extract_soft_labels: ") and "a_file" in message and "\n" not in message


def test_extract_soft_labels_starts_in_a_directory_holding_only_its_jobs_logs(tmp_path, teacher_dir):
    """asr.sh's job launcher writes OUTPUT/log/extract.JOB.log before the jobs start (found by fault_injection)."""
    from espnet_bertkd.bin import extract_soft_labels as extract_cli

    (tmp_path / "text").write_text("u1 THE KNIGHT RODE\n")
    (tmp_path / "kd" / "log").mkdir(parents=True)
    (tmp_path / "kd" / "log" / "extract.1.log").write_text("started\n")
    extract_cli.main(["--teacher", teacher_dir, "--topk", "4", "--text", str(tmp_path / "text"), "--output_dir",
                      str(tmp_path / "kd")])
    assert (tmp_path / "kd" / "kd_token.scp").is_file()
    assert (tmp_path / "kd" / "log" / "extract.1.log").read_text() == "started\n"
