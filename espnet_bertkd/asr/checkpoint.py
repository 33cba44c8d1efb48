"""Strict model loading for decoding and export.

ESPnet's `build_model_from_file` (202511 and 202611) loads weights with `strict=False` and says nothing, so a model
file paired with the wrong config decodes with randomly initialised layers. Here every parameter and buffer must
match, except the training-only KD decoders (`ESPnetBertKDModel.TRAINING_ONLY_PREFIXES`), which decoding never runs:
an exported model file may lack them and a training config may not build them.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from espnet_bertkd.asr.bertkd_model import ESPnetBertKDModel

SHOWN = 10


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


def check_model_file(model: torch.nn.Module, model_file: str, config_file: Optional[str] = None) -> None:
    """Raise ValueError listing missing/unexpected keys when `model_file` does not hold `model`'s weights."""
    state = torch.load(model_file, map_location="cpu", weights_only=False, mmap=True)
    if isinstance(state, dict) and isinstance(state.get("module"), dict):  # deepspeed, as ESPnet unwraps it
        state = state["module"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "optimizers" in state:
        raise ValueError(f"{model_file} is a training checkpoint (checkpoint.pth); pass a model file such as "
                         "valid.cer_ctc.ave.pth or NNepoch.pth")
    missing, unexpected = key_mismatch(model.state_dict().keys(), state.keys())
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} key(s) of the model are missing from the file: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} key(s) in the file are not in the model: {_listing(unexpected)}")
        built = f"the model built from {config_file}" if config_file else "the model"
        raise ValueError(f"{model_file} does not match {built} ({'; '.join(problems)}). ESPnet would load it "
                         "silently with those layers left at random; pass the config the model was trained with "
                         "(its exp dir's config.yaml).")
    dropped = [k for k in set(state.keys()) ^ set(model.state_dict().keys())]
    if dropped:
        logging.info("%s: %d training-only KD decoder key(s) not used for decoding", model_file, len(dropped))


def build_model_checked(asr_train_config: str, asr_model_file: Optional[str], device: str = "cpu"):
    """ESPnet's ASRTask.build_model_from_file, then the strict key check."""
    from espnet2.tasks.asr import ASRTask

    model, args = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    if asr_model_file is not None:
        check_model_file(model, asr_model_file, asr_train_config)
    return model, args


@contextlib.contextmanager
def strict_model_loading() -> Iterator[None]:
    """Make ASRTask.build_model_from_file check its keys while ESPnet code that calls it runs (asr_inference)."""
    from espnet2.tasks.asr import ASRTask

    name = "build_model_from_file"
    own = ASRTask.__dict__.get(name)  # ESPnet defines it on AbsTask; ASRTask normally has no own attribute
    original = ASRTask.build_model_from_file

    def checked(cls, config_file=None, model_file=None, device="cpu"):
        model, args = original(config_file, model_file, device)
        if model_file is not None:
            check_model_file(model, model_file, config_file)
        return model, args

    setattr(ASRTask, name, classmethod(checked))
    try:
        yield
    finally:
        if own is not None:
            setattr(ASRTask, name, own)
        else:
            delattr(ASRTask, name)
