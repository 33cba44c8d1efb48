"""Decoding speed records (`speed.json`), written by every decoder so RESULTS.md compares them on equal terms:
compute seconds spent inside the decoder (model loading and file I/O excluded), seconds of audio, RTF, utt/s."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

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
    return {**merged, **extra, "jobs": len(records)}


def write_speed(directory: str | Path, record: Dict) -> None:
    atomic_write_text(Path(directory) / "speed.json", json.dumps(record, indent=2) + "\n")


ENCODER_PATH = ("frontend", "normalize", "preencoder", "encoder", "postencoder")


def count_parameters(modules: Sequence[Optional[Any]]) -> int:
    """Parameters of the given modules, each counted once (a module may appear twice, e.g. CTC as a scorer)."""
    sizes = {id(p): p.numel() for m in modules if m is not None for p in m.parameters()}
    return sum(sizes.values())


def speech2text_params(speech2text: Any) -> int:
    """Parameters ESPnet's beam search runs with: the encoder path plus every neural scorer (CTC, attention decoder
    when its weight is non-zero, LM), i.e. ASR + LM for shallow fusion, without unused training-only modules."""
    import torch

    model = speech2text.asr_model
    modules = [getattr(model, name, None) for name in ENCODER_PATH]
    search = speech2text.beam_search
    if search is not None:
        for scorer in {**search.full_scorers, **search.part_scorers}.values():
            # a scorer is a module (decoder, LM) or wraps one (CTCPrefixScorer holds the CTC module)
            wrapped = [v for v in vars(scorer).values() if isinstance(v, torch.nn.Module)]
            modules += [scorer] if isinstance(scorer, torch.nn.Module) else wrapped
    return count_parameters(modules)


@contextlib.contextmanager
def timed_speech2text(output_dir: str, fs: int = 16000) -> Iterator[None]:
    """Time every call of ESPnet's Speech2Text (one utterance each) while ESPnet's asr_inference runs, and write
    OUTPUT_DIR/speed.json afterwards. Model loading, data loading and file writing are outside the calls."""
    from espnet2.bin.asr_inference import Speech2Text

    original = Speech2Text.__call__
    totals = {"utterances": 0, "compute": 0.0, "samples": 0, "params": None}

    def timed(self, speech, *args, **kwargs):
        start = time.perf_counter()
        result = original(self, speech, *args, **kwargs)
        totals["compute"] += time.perf_counter() - start
        totals["utterances"] += 1
        totals["samples"] += int(speech.shape[0])
        if totals["params"] is None:
            totals["params"] = speech2text_params(self)
        return result

    Speech2Text.__call__ = timed
    try:
        yield
    finally:
        Speech2Text.__call__ = original
    write_speed(output_dir, speed_record(totals["utterances"], totals["compute"], totals["samples"] / fs,
                                         decoder="espnet2.bin.asr_inference", inference_params=totals["params"]))
