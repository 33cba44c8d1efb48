"""Merging decoding jobs: tables merged by key, speed records summed, unfinished or overlapping jobs refused."""
import json
from pathlib import Path

import pytest

from espnet_bertkd.recipe.decode_jobs import merge_decode_dirs, merge_speed
from espnet_bertkd.asr.speed import speed_record, write_speed
from espnet_bertkd.recipe.bin import merge_decode
from espnet_bertkd.utils.fileio import DataError


def write_job(root: Path, job: int, hyps: dict, seconds: float, audio: float, speed: bool = True) -> Path:
    d = root / f"output.{job}"
    (d / "1best_recog").mkdir(parents=True)
    (d / "1best_recog/text").write_text("".join(f"{k} {v}\n" for k, v in hyps.items()))
    (d / "1best_recog/score").write_text("".join(f"{k} -{len(v)}.0\n" for k, v in hyps.items()))
    if speed:
        write_speed(d, speed_record(len(hyps), seconds, audio, decoder="ctc_greedy_inference", batches=1))
    return d


def test_merge_sorts_by_key_and_sums_speed(tmp_path):
    write_job(tmp_path, 1, {"b-2": "TWO DOGS", "a-1": "THEIR HOUSE"}, 2.0, 10.0)
    write_job(tmp_path, 2, {"c-3": "NIGHT"}, 1.0, 20.0)
    n = merge_decode_dirs([tmp_path / "output.1", tmp_path / "output.2"], tmp_path / "merged")
    assert n == 3
    assert (tmp_path / "merged/1best_recog/text").read_text() == "a-1 THEIR HOUSE\nb-2 TWO DOGS\nc-3 NIGHT\n"
    assert len((tmp_path / "merged/1best_recog/score").read_text().splitlines()) == 3
    speed = json.loads((tmp_path / "merged/speed.json").read_text())
    assert speed["compute_seconds"] == 3.0 and speed["audio_seconds"] == 30.0
    assert speed["rtf"] == pytest.approx(0.1) and speed["utterances_per_second"] == pytest.approx(1.0)
    assert speed["jobs"] == 2 and speed["batches"] == 2 and speed["decoder"] == "ctc_greedy_inference"


def test_unfinished_job_is_refused_and_nothing_merged(tmp_path):
    write_job(tmp_path, 1, {"a-1": "X"}, 1.0, 1.0)
    write_job(tmp_path, 2, {"b-1": "Y"}, 1.0, 1.0, speed=False)  # killed before it wrote speed.json
    with pytest.raises(DataError, match=r"output\.2: no speed\.json, the job did not finish"):
        merge_decode_dirs([tmp_path / "output.1", tmp_path / "output.2"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_overlapping_jobs_are_refused(tmp_path):
    write_job(tmp_path, 1, {"a-1": "X"}, 1.0, 1.0)
    write_job(tmp_path, 2, {"a-1": "Y"}, 1.0, 1.0)
    with pytest.raises(DataError, match=r"a-1.*also in"):
        merge_decode_dirs([tmp_path / "output.1", tmp_path / "output.2"], tmp_path / "merged")
    assert not (tmp_path / "merged/speed.json").exists()


def test_jobs_with_different_tables_are_refused(tmp_path):
    write_job(tmp_path, 1, {"a-1": "X"}, 1.0, 1.0)
    d = write_job(tmp_path, 2, {"b-1": "Y"}, 1.0, 1.0)
    (d / "1best_recog/score").unlink()
    with pytest.raises(DataError, match="output.2 wrote"):
        merge_decode_dirs([tmp_path / "output.1", d], tmp_path / "merged")


def test_merge_speed_without_audio_duration():
    merged = merge_speed([speed_record(2, 1.0, None), speed_record(1, 1.0, 5.0)])
    assert merged["audio_seconds"] is None and merged["rtf"] is None and merged["utterances"] == 3


def test_cli_exits_with_message(tmp_path, capsys):
    write_job(tmp_path, 1, {"a-1": "X"}, 1.0, 1.0, speed=False)
    with pytest.raises(SystemExit, match="merge_decode: .*did not finish"):
        merge_decode.main(["--nj", "1", str(tmp_path / "output.JOB"), str(tmp_path / "merged")])
    write_speed(tmp_path / "output.1", speed_record(1, 1.0, 1.0))
    merge_decode.main(["--nj", "1", str(tmp_path / "output.JOB"), str(tmp_path / "merged")])
    assert "1 utterances from 1 jobs" in capsys.readouterr().out
