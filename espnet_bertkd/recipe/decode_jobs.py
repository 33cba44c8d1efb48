"""Merge the outputs of a decoding split into jobs (asr.sh's `cat output.*/1best_recog/text | sort`), so scoring and
RESULTS.md see one ordinary ESPnet decode directory whatever the number of jobs.

Every key-value table a job wrote (1best_recog/text, token, token_int, score, encoder_interctc_layer<N>.txt, nbest
dirs ...) is merged by key; the jobs' speed.json records are summed (compute seconds, audio seconds, utterances), so
the merged RTF is compute time per second of audio, comparable across job counts that ran on equal hardware.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from espnet_bertkd.asr.speed import SPEED_FILE as SPEED
from espnet_bertkd.asr.speed import speed_record, start_decoding, write_speed
from espnet_bertkd.recipe.scp import merge_scp
from espnet_bertkd.utils.fileio import DataError, PathLike


def merge_speed(records: Sequence[Dict]) -> Dict:
    """One speed record for several jobs: sums of work and time, the decoder name of the first job."""
    audio = [r.get("audio_seconds") for r in records]
    merged = speed_record(
        sum(r["utterances"] for r in records),
        sum(r["compute_seconds"] for r in records),
        None if None in audio else sum(audio),
    )
    extra = {k: v for k, v in records[0].items() if k not in merged}
    if "batches" in extra:
        extra["batches"] = sum(r.get("batches", 0) for r in records)
    if "largest_batch" in extra:
        extra["largest_batch"] = max(r.get("largest_batch", 0) for r in records)
    return {**merged, **extra, "jobs": len(records)}


def _tables(job_dir: Path) -> List[Path]:
    return sorted(p.relative_to(job_dir) for p in job_dir.rglob("*") if p.is_file() and p.name != SPEED)


def merge_decode_dirs(job_dirs: Sequence[PathLike], output_dir: PathLike) -> int:
    """Merge the jobs' decode directories into `output_dir`; returns the number of utterances decoded.

    A job without speed.json did not finish (speed.json is written last): that is an error naming the job, so a
    killed job is rerun instead of merged half-written.
    """
    dirs = [Path(d) for d in job_dirs]
    if not dirs:
        raise ValueError("merge_decode_dirs needs at least one job directory")
    unfinished = [str(d) for d in dirs if not (d / SPEED).is_file()]
    if unfinished:
        raise DataError([f"{d}: no {SPEED}, the job did not finish (rerun the stage)" for d in unfinished])
    tables = _tables(dirs[0])
    for d in dirs[1:]:
        if _tables(d) != tables:
            raise DataError(f"{d} wrote {[str(t) for t in _tables(d)]}, but {dirs[0]} wrote "
                            f"{[str(t) for t in tables]}")
    out = Path(output_dir)
    start_decoding(out)  # the merged directory is unfinished until its speed.json is written again
    for table in tables:
        merge_scp([d / table for d in dirs], out / table)
    records = [json.loads((d / SPEED).read_text(encoding="utf-8")) for d in dirs]
    merged = merge_speed(records)
    write_speed(out, merged)  # last: marks the merged directory complete
    return merged["utterances"]
