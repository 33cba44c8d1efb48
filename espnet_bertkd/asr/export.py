"""Export a trained `model: bertkd` as a plain ESPnet CTC model: KD decoders and teacher dropped.

The result loads in ESPnet with no plugin imported, every key matching, and has exactly the size and speed of a
baseline trained without KD. export_ctc writes it to a directory; espnet_bertkd.bin.pack_ctc makes the same export
from the same steps (read_train_config, read_model_state, export_config, export_state_dict, check_loads) and packs
it with ESPnet's packer.
"""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import torch
import yaml
from espnet2.asr.espnet_model import ESPnetASRModel

from espnet_bertkd.asr.bertkd_model import MODEL_NAME, ESPnetBertKDModel
from espnet_bertkd.asr.checkpoint import load_model_state
from espnet_bertkd.utils.fileio import atomic_dir, check_output_dir

EXPORT_OWNER = "export_ctc"  # the owner marker of export directories (check_output_dir)
ESPNET_MODEL_KEYS = frozenset(inspect.signature(ESPnetASRModel.__init__).parameters) - {"self"}


class MismatchedWeights(RuntimeError):
    """The model file does not hold the weights of the model its config builds (ESPnet would load it partially)."""


def read_train_config(path: str) -> Dict[str, Any]:
    """The training config.yaml as a mapping; a file that is not YAML or not a mapping is a ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a {type(config).__name__}, not an ESPnet training config (a YAML mapping)")
    return config


def read_model_state(asr_model_file: str) -> Dict[str, torch.Tensor]:
    """The model file's state dict, weights only: refuses a file that would run code and a training checkpoint."""
    state = load_model_state(asr_model_file, mmap=False)
    if "model" in state and isinstance(state["model"], dict):  # a checkpoint-like dict without optimizer state too
        raise ValueError(f"{asr_model_file} is a training checkpoint; pass a model file (e.g. valid.cer_ctc.best.pth)")
    return state


def export_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The training config.yaml rewritten for ESPnet's own `model: espnet`."""
    if config.get("model") != MODEL_NAME:
        raise ValueError(f"export_ctc expects a `model: {MODEL_NAME}` config, got model: {config.get('model')!r}")
    config = dict(config)
    model_conf = {k: v for k, v in (config.get("model_conf") or {}).items() if k in ESPNET_MODEL_KEYS}
    if config.get("decoder") is None:
        model_conf["ctc_weight"] = 1.0  # CTC only: ESPnet then builds no attention decoder
    config["model"] = "espnet"
    config["model_conf"] = model_conf
    return config


def export_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(ESPnetBertKDModel.TRAINING_ONLY_PREFIXES)}


def check_loads(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> int:
    """Build the exported model with ESPnet's ASRTask and load the weights strictly; returns the parameter count."""
    from espnet2.tasks.asr import ASRTask

    model = ASRTask.build_model(argparse.Namespace(**config))
    if type(model) is not ESPnetASRModel:
        raise TypeError(f"exported config builds {type(model).__name__}, not ESPnetASRModel")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MismatchedWeights(f"exported weights do not match: missing {missing}, unexpected {unexpected}")
    return sum(p.numel() for p in model.parameters())


def export_ctc(asr_train_config: str, asr_model_file: str, output_dir: str,
               overwrite: bool = False) -> Tuple[Path, Path, int]:
    """Write OUTPUT_DIR/config.yaml and OUTPUT_DIR/model.pth (the directory swapped in whole); returns their paths
    and the parameter count. OUTPUT_DIR is checked first (check_output_dir): the training directory itself (it holds
    the inputs, and its config.yaml would be replaced) is always refused, another tool's unless `overwrite`."""
    inputs = (asr_train_config, asr_model_file)
    check_output_dir(output_dir, EXPORT_OWNER, inputs, overwrite)
    config = export_config(read_train_config(asr_train_config))  # refused before the model file is read
    state = export_state_dict(read_model_state(asr_model_file))
    params = check_loads(config, state)
    out = Path(output_dir)
    with atomic_dir(out, EXPORT_OWNER, inputs, overwrite) as tmp:
        with open(tmp / "model.pth", "wb") as f:
            torch.save(state, f)
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out / "config.yaml", out / "model.pth", params
