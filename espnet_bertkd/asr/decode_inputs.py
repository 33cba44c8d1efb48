"""What a decoder checks before it loads a model, so that a bad input fails in seconds, naming the file and the
utterances, instead of after everything was decoded, or not at all: the output directory is writable, the audio is at
the model's sample rate (ESPnet decodes other rates without a word, and wrongly), and integer PCM (a `kaldi_ark`
wav-in-ark: Kaldi's WaveHolder keeps int16, which ESPnet hands to the model unscaled) is brought to the scale the
model was trained on. Used by both decoders (espnet_bertkd.bin.ctc_greedy_inference and .asr_inference).
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile

from espnet_bertkd.utils.fileio import first_few, read_dict


def check_output_dir(output_dir: str) -> None:
    """Create `output_dir` and a temporary file in it (and in its existing 1best_recog/), so that a directory the
    results cannot be written to fails before any model is loaded, not after everything was decoded."""
    for directory in (output_dir, os.path.join(output_dir, "1best_recog")):
        if directory != output_dir and not os.path.isdir(directory):
            continue
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test."):
                pass
        except OSError as e:
            raise ValueError(f"--output_dir {output_dir}: cannot write to {directory} ({e.strerror or e}); nothing was "
                             "decoded. Pass a directory you can write to, or fix its permissions.") from None


def model_sample_rate(asr_train_config: str) -> Optional[int]:
    """The sample rate the model's front-end expects (`frontend_conf.fs`, ESPnet's default 16000; "16k" forms as
    ESPnet parses them), or None for a model without a front-end (its inputs are features, not audio)."""
    import humanfriendly
    import yaml

    with open(asr_train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if config.get("frontend") is None:
        return None
    fs = (config.get("frontend_conf") or {}).get("fs", 16000)
    return int(humanfriendly.parse_size(fs)) if isinstance(fs, str) else int(fs)


def trained_on_kaldi_ark_audio(asr_train_config: str) -> bool:
    """Whether the model's training speech came through ESPnet's `kaldi_ark` loader (integer PCM stays integer-scaled
    there, so the model was trained on that scale)."""
    import yaml

    with open(asr_train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    entries = config.get("train_data_path_and_name_and_type") or []
    return any(len(e) == 3 and e[1] == "speech" and e[2] == "kaldi_ark" for e in entries)


def audio_rates(scp: str, kind: str, keys: List[str], dataset) -> Dict[str, Tuple[Optional[int], Optional[np.dtype]]]:
    """(sample rate, sample dtype) per utterance: from file headers for `sound` entries that are plain paths (no
    decoding of audio), else from what ESPnet's underlying reader returns ((rate, array) for audio, an array with no
    rate for feature matrices: (None, None))."""
    from espnet2.train.dataset import AdapterForSoundScpReader

    paths = read_dict(scp) if kind == "sound" else {}
    raw = dataset.loader_dict["speech"]  # ESPnet's reader below its float-casting adapter (and any wrapper above it)
    while raw is not None and not isinstance(raw, AdapterForSoundScpReader):
        raw = getattr(raw, "loader", None)
    raw = raw.loader if raw is not None else None
    out: Dict[str, Tuple[Optional[int], Optional[np.dtype]]] = {}
    for key in keys:
        path = paths.get(key, "")
        if path and not path.endswith("|") and os.path.exists(path):
            out[key] = (soundfile.info(path).samplerate, None)  # soundfile decodes to float in [-1, 1]
            continue
        value = raw[key] if raw is not None else None
        if isinstance(value, tuple) and len(value) == 2:
            rate, array = value if isinstance(value[0], int) else value[::-1]
            out[key] = (int(rate), np.asarray(array).dtype)
        else:
            out[key] = (None, None)
    return out


def check_audio(scp: str, kind: str, keys: List[str], dataset, model_rate: Optional[int], asr_train_config: str,
                shown: int = 5) -> Dict[str, float]:
    """Refuse audio at another sample rate than the model's, naming the first utterances; return the factor for each
    utterance read as integer PCM (kaldi_ark wav-in-ark: int16, or int32 for 24/32-bit) that brings it to [-1, 1),
    as ESPnet's `sound` loader (soundfile) gives audio and as the model was trained, unless it was trained on
    kaldi_ark audio itself."""
    info = audio_rates(scp, kind, keys, dataset)
    if model_rate is not None:
        wrong = [(k, rate) for k, (rate, _) in info.items() if rate is not None and rate != model_rate]
        if wrong:
            listed = first_few([f"{k} ({rate} Hz)" for k, rate in wrong], shown, str)
            raise ValueError(
                f"{scp}: {len(wrong)} of {len(info)} utterances are not at the model's sample rate {model_rate} Hz "
                f"(frontend_conf.fs of {asr_train_config}): {listed}. ESPnet would decode them without a word "
                f"and wrongly. Resample them to {model_rate} Hz first, e.g. `sox IN.wav -r {model_rate} OUT.wav`, or "
                f"ESPnet's scripts/audio/format_wav_scp.sh --fs {model_rate} (asr.sh --fs {model_rate} does it)."
            )
    integer = {k: dtype for k, (_, dtype) in info.items() if dtype is not None and np.issubdtype(dtype, np.integer)}
    if not integer:
        return {}
    if trained_on_kaldi_ark_audio(asr_train_config):
        logging.warning("%s: %d utterance(s) are integer PCM; kept at that scale, as the model was trained on "
                        "kaldi_ark audio (%s)", scp, len(integer), asr_train_config)
        return {}
    logging.info("%s: %d utterance(s) are integer PCM (%s); scaled to [-1, 1) as ESPnet's sound loader gives audio",
                 scp, len(integer), ", ".join(sorted({str(d) for d in integer.values()})))
    return {k: 1.0 / float(2 ** (8 * np.dtype(d).itemsize - 1)) for k, d in integer.items()}


class ScaledSpeech:
    """A dataset whose `speech` arrays of the keys in `scales` are multiplied by their factor."""

    def __init__(self, dataset, scales: Dict[str, float]) -> None:
        self.dataset, self.scales = dataset, scales

    def __getitem__(self, key: str):
        uid, data = self.dataset[key]
        if key in self.scales:
            data = {**data, "speech": np.asarray(data["speech"], dtype=np.float32) * np.float32(self.scales[key])}
        return uid, data
