"""Audio read by ESPnet's data loader names the utterance and the file when it fails.

ESPnet reads every `PATH,NAME,TYPE` input through the loader its DATA_TYPES table holds for TYPE: ESPnetDataset
(training, the greedy decoder) through `espnet2.train.dataset.DATA_TYPES` (a loader per table), IterableESPnetDataset
(collect-stats, asr_inference) through `espnet2.train.iterable_dataset.DATA_TYPES` (a function per entry). A truncated
or corrupt FLAC passes a header check (the preflight reads headers only: decoding a 281k-utterance set costs too much)
and then fails in a data-loader worker with soundfile's message and nothing saying which file. register() (called
from espnet_bertkd.tasks.asr) wraps the `sound` and `kaldi_ark` entries of those two tables, the places every ESPnet
dataset takes its audio readers from: a read error becomes AudioReadError naming the table, the utterance and the
entry (the iterable dataset's functions see the entry only: the file, not the utterance). Reading itself is
unchanged (the wrapped loaders are ESPnet's own).

check_speech_input is the decoder's up-front check of its audio list (espnet_bertkd.bin.ctc_greedy_inference).
"""
from __future__ import annotations

import collections.abc
import functools
from argparse import Namespace
from typing import Any, Callable, List, Optional

from espnet_bertkd.tasks.data_check import check_audio_list
from espnet_bertkd.utils.fileio import read_keys

WRAPPED_TYPES = ("sound", "kaldi_ark")


class AudioReadError(RuntimeError):
    """ESPnet's loader could not read an utterance's audio (the message names the table, utterance and entry)."""


class NamedAudioLoader(collections.abc.Mapping):
    """ESPnet's loader of one table, re-raising its read errors as AudioReadError naming the utterance. A missing key
    stays a KeyError (the Mapping protocol: `key in loader`)."""

    def __init__(self, loader: Any, path: str, loader_type: str):
        self.loader = loader
        self.path = path
        self.loader_type = loader_type

    def __getitem__(self, key: str) -> Any:
        try:
            value = self.loader[key]
        except KeyError:
            raise
        except Exception as e:  # noqa: BLE001  (soundfile, omniio and numpy raise many types; all are re-raised)
            raise AudioReadError(f"{self.path}: utterance {key}: cannot read {self.entry(key)!r} "
                                 f"({self.loader_type}): {type(e).__name__}: {e}") from e
        if not finite(value):
            raise AudioReadError(f"{self.path}: utterance {key}: {self.entry(key)!r} holds NaN or infinite samples: "
                                 "its features (and in training feats_stats.npz and every update) would be NaN; fix "
                                 "or drop it")
        return value

    def entry(self, key: str) -> str:
        """The table's value for `key` (the file or ark offset), as far as ESPnet's loader keeps it."""
        inner = getattr(self.loader, "loader", self.loader)  # AdapterForSoundScpReader wraps the reader
        for table in ("data", "_dict"):  # SoundScpReader, omniio's LazyLoader
            value = getattr(inner, table, {}).get(key) if isinstance(getattr(inner, table, None), dict) else None
            if value is not None:
                return str(value)
        return "?"

    def __contains__(self, key: object) -> bool:
        return key in self.loader.keys()  # without reading the audio (Mapping's own `in` would)

    def keys(self):
        return self.loader.keys()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def finite(value: Any) -> bool:
    """Whether a loaded utterance (an array, or ESPnet's (rate, array)) has only finite samples; integer PCM always
    has."""
    import numpy as np

    array = value[1] if isinstance(value, tuple) and len(value) == 2 else value
    array = np.asarray(array) if not hasattr(array, "dtype") else array
    return not np.issubdtype(array.dtype, np.floating) or bool(np.isfinite(array).all())


def named(func: Callable[..., Any], loader_type: str) -> Callable[..., Any]:
    """A DATA_TYPES loader factory whose loaders are NamedAudioLoader."""

    @functools.wraps(func)
    def build(path: str, *args: Any, **kwargs: Any) -> NamedAudioLoader:
        return NamedAudioLoader(func(path, *args, **kwargs), path, loader_type)

    build._bertkd_named = True  # type: ignore[attr-defined]
    return build


def named_entry(func: Callable[[Any], Any], loader_type: str) -> Callable[[Any], Any]:
    """An iterable_dataset.DATA_TYPES reader (one entry in, its array out) whose errors name the entry."""

    @functools.wraps(func)
    def read(value: Any) -> Any:
        try:
            array = func(value)
        except Exception as e:  # noqa: BLE001  (re-raised, with the entry named)
            raise AudioReadError(f"cannot read {value!r} ({loader_type}; the entry of one utterance of the "
                                 f"{loader_type} input): {type(e).__name__}: {e}") from e
        if not finite(array):
            raise AudioReadError(f"{value!r} ({loader_type}) holds NaN or infinite samples: fix or drop it")
        return array

    read._bertkd_named = True  # type: ignore[attr-defined]
    return read


def register() -> None:
    """Idempotently wrap the `sound` and `kaldi_ark` readers of ESPnet's two DATA_TYPES tables."""
    from espnet2.train import dataset, iterable_dataset

    for loader_type in WRAPPED_TYPES:
        spec = dataset.DATA_TYPES[loader_type]
        if not getattr(spec["func"], "_bertkd_named", False):
            spec["func"] = named(spec["func"], loader_type)
        func = iterable_dataset.DATA_TYPES[loader_type]
        if not getattr(func, "_bertkd_named", False):
            iterable_dataset.DATA_TYPES[loader_type] = named_entry(func, loader_type)


def check_speech_input(data_path_and_name_and_type: List[str], key_file: Optional[str], asr_train_config: str) -> None:
    """A decoder's PATH,speech,TYPE input, before the model is built or any utterance decoded (check_audio_list): the
    table reads cleanly (a byte-order mark would end up in a key), every entry of `key_file` is readable the way
    TYPE's loader reads it (no command, no missing file or ark offset, a readable header) and mono where the model
    expects it (the training preflight's rule, expected_channels, on the training config). Raises DataError.
    Also wraps ESPnet's audio loaders (register) for the ESPnetDataset the decoder builds next, which may come before
    anything imports ESPnet's ASR task (where the plugin registers them otherwise)."""
    import yaml

    from espnet_bertkd.tasks.preflight import expected_channels

    speech = [e for e in (x.split(",") for x in data_path_and_name_and_type) if len(e) == 3 and e[1] == "speech"]
    if len(speech) != 1:
        return  # the decoder's own check names this
    path, _, kind = speech[0]
    with open(asr_train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    model = Namespace(**{k: config.get(k) for k in ("input_size", "frontend", "frontend_conf")})
    keys = set(read_keys(key_file)) if key_file else None
    check_audio_list(path, kind, keys=keys, channels=expected_channels(model) if kind == "sound" else None)
    register()
