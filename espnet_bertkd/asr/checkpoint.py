"""Strict model loading for decoding and export.

ESPnet's `build_model_from_file` (202511 and 202611) loads weights with `strict=False` and says nothing, so a model
file paired with the wrong config decodes with randomly initialised layers. Here every parameter and buffer must
match, except the training-only KD decoders (`ESPnetBertKDModel.TRAINING_ONLY_PREFIXES`), which decoding never runs:
an exported model file may lack them and a training config may not build them.

Model files are loaded as data only (`load_model_state`: torch.load with weights_only=True), and before ESPnet reads
them: a pickle that would build any object but tensors in plain containers (and run code doing so) is refused with
the file named, whatever ESPnet's own loader would do with it (202611's `safe_torch_load` falls back to an unsafe
load under ESPNET_ALLOW_UNSAFE_TORCH_LOAD=1 or on a typed confirmation at a terminal).
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import zipfile
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from espnet_bertkd.asr.bertkd_model import ESPnetBertKDModel

SHOWN = 10


class ModelFileError(ValueError):
    """A model file that is refused: not plain weights, a training checkpoint, or not the config's model."""


def key_mismatch(model_keys: Iterable[str], file_keys: Iterable[str],
                 optional_prefixes: Sequence[str] = ESPnetBertKDModel.TRAINING_ONLY_PREFIXES
                 ) -> Tuple[List[str], List[str]]:
    """(missing from the file, unexpected in the file), ignoring keys under `optional_prefixes`."""
    model_keys, file_keys = set(model_keys), set(file_keys)
    prefixes = tuple(optional_prefixes)
    missing = sorted(k for k in model_keys - file_keys if not k.startswith(prefixes))
    unexpected = sorted(k for k in file_keys - model_keys if not k.startswith(prefixes))
    return missing, unexpected


def _listing(keys: List[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines or [type(error).__name__])[0][:200]


def built_from_file(build: Any, config_file: Optional[str], model_file: Optional[str], device: str) -> Tuple[Any, Any]:
    """ESPnet's build_model_from_file (`build`), its shape mismatch (a model file of another config with the same
    layer names) said in one line naming both files instead of torch's listing of every tensor."""
    try:
        return build(config_file, model_file, device)
    except RuntimeError as e:
        mismatch = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        if not mismatch:
            raise
        raise ModelFileError(f"{model_file} does not match the model built from {config_file}: {len(mismatch)} "
                             f"tensors have other shapes, e.g. {mismatch[0]} Pass the config the model was trained "
                             "with (its exp dir's config.yaml).") from None


def _weights_only_reason(error: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file holds (e.g. `GLOBAL posix.system`)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(error).__name__])[0]


def load_model_state(model_file: str, mmap: bool = True) -> Dict[str, Any]:
    """The state dict in `model_file`, read as data only (torch.load with weights_only=True: tensors, numbers and
    plain containers; nothing in the file is executed). Refuses, naming the file: a pickle holding any other object
    (it would run code on a full load), a training checkpoint (checkpoint.pth) and anything but a dict. A deepspeed
    file's "module" is unwrapped, as ESPnet does."""
    if not os.path.isfile(model_file):
        raise ModelFileError(f"{model_file}: no such model file")
    if os.path.getsize(model_file) == 0:
        raise ModelFileError(f"{model_file} is empty (a training killed while saving it?): pass another model file")
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True,
                           mmap=mmap and zipfile.is_zipfile(model_file))
    except (EOFError, RuntimeError, zipfile.BadZipFile) as e:  # torch's reader on a cut or foreign file
        raise ModelFileError(f"{model_file} is truncated or not a PyTorch model file ({_first_line(e)}): copy it "
                             "again, or pass another model file") from None
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            f"{model_file} is not a plain weights file and was not loaded ({_weights_only_reason(e)}): model files "
            "are read with torch.load(weights_only=True), which accepts tensors in plain containers only and never "
            "runs code from the file; a file holding other objects would execute them on an unrestricted load. "
            "ESPnet's trainer writes plain state dicts (NNepoch.pth, valid.*.best.pth, valid.*.ave.pth): pass one "
            "of those, or, for a file you trust, re-save its weights with torch.save(model.state_dict(), PATH)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("module"), dict):  # deepspeed, as ESPnet unwraps it
        state = state["module"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "optimizers" in state:
        raise ModelFileError(f"{model_file} is a training checkpoint (checkpoint.pth); pass a model file such as "
                             "valid.cer_ctc.ave.pth or NNepoch.pth")
    if not isinstance(state, dict):
        raise ModelFileError(f"{model_file} holds a {type(state).__name__}, not a model's state dict (parameter "
                             "name -> tensor); pass a model file such as valid.cer_ctc.ave.pth or NNepoch.pth")
    return state


def check_model_file(model: torch.nn.Module, model_file: str, config_file: Optional[str] = None,
                     state: Optional[Dict[str, Any]] = None) -> None:
    """Raise ModelFileError (a ValueError) listing missing/unexpected keys when `model_file` (its `state`, when already loaded by
    `load_model_state`) does not hold `model`'s weights."""
    if state is None:
        state = load_model_state(model_file)
    missing, unexpected = key_mismatch(model.state_dict().keys(), state.keys())
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} key(s) of the model are missing from the file: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} key(s) in the file are not in the model: {_listing(unexpected)}")
        built = f"the model built from {config_file}" if config_file else "the model"
        raise ModelFileError(f"{model_file} does not match {built} ({'; '.join(problems)}). ESPnet would load it "
                             "silently with those layers left at random; pass the config the model was trained with "
                             "(its exp dir's config.yaml).")
    dropped = [k for k in set(state.keys()) ^ set(model.state_dict().keys())]
    if dropped:
        logging.info("%s: %d training-only KD decoder key(s) not used for decoding", model_file, len(dropped))


def build_model_checked(asr_train_config: str, asr_model_file: Optional[str], device: str = "cpu"):
    """ESPnet's ASRTask.build_model_from_file, then the strict key check."""
    from espnet2.tasks.asr import ASRTask

    state = load_model_state(asr_model_file) if asr_model_file is not None else None  # refused before ESPnet reads it
    model, args = built_from_file(ASRTask.build_model_from_file, asr_train_config, asr_model_file, device)
    if asr_model_file is not None:
        check_model_file(model, asr_model_file, asr_train_config, state)
    return model, args


@contextlib.contextmanager
def _patched_build_model_from_file(task: type, check_keys: bool) -> Iterator[None]:
    """`task.build_model_from_file` loading its model file with `load_model_state` first (refusing anything but
    plain weights before ESPnet reads it) and, with `check_keys`, then checking its keys; restored on exit."""
    name = "build_model_from_file"
    own = task.__dict__.get(name)  # ESPnet defines it on AbsTask; a task normally has no own attribute
    original = task.build_model_from_file

    def checked(cls, config_file=None, model_file=None, device="cpu"):
        state = load_model_state(model_file) if model_file is not None else None
        model, args = built_from_file(original, config_file, model_file, device)
        if check_keys and model_file is not None:
            check_model_file(model, model_file, config_file, state)
        return model, args

    setattr(task, name, classmethod(checked))
    try:
        yield
    finally:
        if own is not None:
            setattr(task, name, own)
        else:
            delattr(task, name)


@contextlib.contextmanager
def strict_model_loading() -> Iterator[None]:
    """While ESPnet code that builds models from files runs (asr_inference): ASRTask.build_model_from_file loads the
    ASR model file as weights only and checks its keys; LMTask.build_model_from_file (--lm_file) loads the LM file
    as weights only (its keys stay ESPnet's business)."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    with _patched_build_model_from_file(ASRTask, check_keys=True), \
            _patched_build_model_from_file(LMTask, check_keys=False):
        yield
