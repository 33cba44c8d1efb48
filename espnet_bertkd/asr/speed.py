"""Decoding speed records (`speed.json`), written by every decoder so RESULTS.md compares them on equal terms:
compute seconds spent inside the decoder (model loading and file I/O excluded), seconds of audio, RTF, utt/s."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

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


SPEED_FILE = "speed.json"  # written last by every decoder: a decode directory without it did not finish


def write_speed(directory: str | Path, record: Dict) -> None:
    atomic_write_text(Path(directory) / SPEED_FILE, json.dumps(record, indent=2) + "\n")


def start_decoding(directory: str | Path) -> None:
    """Mark `directory` unfinished before a decoder rewrites it: the previous run's speed.json goes, so a run killed
    midway leaves a directory that merging and scoring refuse instead of the old results looking complete."""
    (Path(directory) / SPEED_FILE).unlink(missing_ok=True)


def decoding_finished(directory: str | Path) -> bool:
    return (Path(directory) / SPEED_FILE).is_file()


# Names of the ESPnetASRModel attributes (modules, or None) that turn audio into encoder output at inference time.
INFERENCE_ENCODER_MODULES = ("frontend", "normalize", "preencoder", "encoder", "postencoder")


def count_parameters(modules: Sequence[Optional[Any]]) -> int:
    """Parameters of the given modules, each counted once (a module may appear twice, e.g. CTC as a scorer)."""
    sizes = {id(p): p.numel() for m in modules if m is not None for p in m.parameters()}
    return sum(sizes.values())


def speech2text_params(speech2text: Any) -> int:
    """Parameters ESPnet's beam search runs with: the encoder path plus every neural scorer (CTC, attention decoder
    when its weight is non-zero, LM), i.e. ASR + LM for shallow fusion, without unused training-only modules."""
    import torch

    model = speech2text.asr_model
    modules = [getattr(model, name, None) for name in INFERENCE_ENCODER_MODULES]
    search = speech2text.beam_search
    if search is not None:
        for scorer in {**search.full_scorers, **search.part_scorers}.values():
            # a scorer is a module (decoder, LM) or wraps one (CTCPrefixScorer holds the CTC module)
            wrapped = [v for v in vars(scorer).values() if isinstance(v, torch.nn.Module)]
            modules += [scorer] if isinstance(scorer, torch.nn.Module) else wrapped
    return count_parameters(modules)


def _audio_samples(speech: Any, speech_lengths: Any = None) -> Tuple[int, int]:
    """(utterances, samples) of what Speech2Text was given: one waveform, a list of them, or a padded batch."""
    if isinstance(speech, (list, tuple)):
        return len(speech), sum(int(len(w)) for w in speech)
    if speech_lengths is not None:
        return len(speech_lengths), int(sum(int(n) for n in speech_lengths))
    return 1, int(speech.shape[0])


@contextlib.contextmanager
def timed_speech2text(output_dir: str, fs: int = 16000) -> Iterator[None]:
    """Time ESPnet's Speech2Text while ESPnet's asr_inference runs, and write OUTPUT_DIR/speed.json afterwards.

    Both entry points are timed: `__call__` (one utterance, or a list) and, where the installed ESPnet has it,
    `batch_decode` (a padded batch, `--batch_size > 1`). Only the outermost call counts, since each may call the
    other. Model loading, data loading and file writing are outside the calls."""
    from espnet2.bin.asr_inference import Speech2Text

    totals = {"utterances": 0, "compute": 0.0, "samples": 0, "params": None, "depth": 0, "largest_batch": 0}
    originals = {name: getattr(Speech2Text, name) for name in ("__call__", "batch_decode")
                 if hasattr(Speech2Text, name)}

    def timing(original):
        def timed(self, speech, *args, **kwargs):
            if totals["depth"]:
                return original(self, speech, *args, **kwargs)
            totals["depth"] += 1
            start = time.perf_counter()
            try:
                result = original(self, speech, *args, **kwargs)
            finally:
                totals["depth"] -= 1
            totals["compute"] += time.perf_counter() - start
            utterances, samples = _audio_samples(speech, kwargs.get("speech_lengths", args[0] if args else None))
            totals["utterances"] += utterances
            totals["samples"] += samples
            totals["largest_batch"] = max(totals["largest_batch"], utterances)
            if totals["params"] is None:
                totals["params"] = speech2text_params(self)
            return result

        return timed

    for name, original in originals.items():
        setattr(Speech2Text, name, timing(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(Speech2Text, name, original)
    write_speed(output_dir, speed_record(totals["utterances"], totals["compute"], totals["samples"] / fs,
                                         decoder="espnet2.bin.asr_inference", inference_params=totals["params"],
                                         largest_batch=totals["largest_batch"]))
