"""Decoding speed records (`speed.json`), written by every decoder so RESULTS.md compares them on equal terms:
compute seconds spent inside the decoder (model loading and file I/O excluded), seconds of audio, RTF, utt/s."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from espnet_bertkd.utils.fileio import atomic_write_text


def speed_record(utterances: int, compute_seconds: float, audio_seconds: Optional[float], **extra: Any) -> Dict:
    return {
        "utterances": utterances,
        "compute_seconds": compute_seconds,
        "audio_seconds": audio_seconds,
        "rtf": compute_seconds / audio_seconds if audio_seconds else None,
        "utterances_per_second": utterances / compute_seconds if compute_seconds > 0 else None,
        **extra,
    }


def write_speed(directory: str | Path, record: Dict) -> None:
    atomic_write_text(Path(directory) / "speed.json", json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def timed_speech2text(output_dir: str, fs: int = 16000) -> Iterator[None]:
    """Time every call of ESPnet's Speech2Text (one utterance each) while ESPnet's asr_inference runs, and write
    OUTPUT_DIR/speed.json afterwards. Model loading, data loading and file writing are outside the calls."""
    from espnet2.bin.asr_inference import Speech2Text

    original = Speech2Text.__call__
    totals = {"utterances": 0, "compute": 0.0, "samples": 0}

    def timed(self, speech, *args, **kwargs):
        start = time.perf_counter()
        result = original(self, speech, *args, **kwargs)
        totals["compute"] += time.perf_counter() - start
        totals["utterances"] += 1
        totals["samples"] += int(speech.shape[0])
        return result

    Speech2Text.__call__ = timed
    try:
        yield
    finally:
        Speech2Text.__call__ = original
    write_speed(output_dir, speed_record(totals["utterances"], totals["compute"], totals["samples"] / fs,
                                         decoder="espnet2.bin.asr_inference"))
