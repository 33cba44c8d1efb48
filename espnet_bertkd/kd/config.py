"""Validation of `model_conf` for `model: bertkd`, in one place for the model constructor and the training preflight.

The constructor runs it on the encoder it was given; the preflight (`espnet_bertkd.tasks.preflight`) runs it on the
parsed command line, with the encoder's size read from `encoder_conf`, so a typo or an out-of-range value fails
before ESPnet builds anything or reads any data. Every message names the key.
"""
from __future__ import annotations

import difflib
import inspect
import numbers
from dataclasses import dataclass
from typing import Any, Collection, List, Mapping, Optional, Sequence

from espnet_bertkd.kd.teacher_config import TeacherConfig

# ESPnet decoders that do not attend over the encoder output the way the KD loss needs.
NON_ATTENTION_DECODERS = ("transducer", "linear_decoder")


@dataclass(frozen=True)
class EncoderShape:
    """What `kd_layers` depends on: the encoder's block count (None: unknown, not checked) and whether it can
    return intermediate layers (ESPnet's `interctc_layer_idx` mechanism)."""

    name: str
    num_blocks: Optional[int]
    intermediate: bool

    @classmethod
    def of_module(cls, encoder: Any) -> "EncoderShape":
        """From a built encoder (the model constructor)."""
        blocks = getattr(encoder, "encoders", None)
        return cls(type(encoder).__name__, None if blocks is None else len(blocks),
                   hasattr(encoder, "interctc_layer_idx"))

    @classmethod
    def of_class(cls, encoder_class: type, encoder_conf: Mapping[str, Any]) -> "EncoderShape":
        """From an encoder class and its `encoder_conf` (the preflight, before anything is built)."""
        params = inspect.signature(encoder_class.__init__).parameters
        num_blocks = None
        if "num_blocks" in params:
            num_blocks = encoder_conf.get("num_blocks", params["num_blocks"].default)
        if not isinstance(num_blocks, int):
            num_blocks = None
        return cls(encoder_class.__name__, num_blocks, "interctc_layer_idx" in params)


@dataclass(frozen=True)
class KDConfig:
    """The validated KD part of model_conf: layers sorted, teacher parsed."""

    kd_layers: List[int]
    teacher: Optional[TeacherConfig]


def is_number(value: Any) -> bool:
    """A YAML number (bool is an int in Python but `kd_alpha: true` is a mistake)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_range(key: str, value: Any, low: float, high: float, high_open: bool = False) -> None:
    """`low <= value <= high` (or `< high`), naming the key."""
    bound = ")" if high_open else "]"
    inside = is_number(value) and low <= value and (value < high if high_open else value <= high)
    if not inside:
        raise ValueError(f"model_conf.{key} must be a number in [{low:g}, {high:g}{bound}, got {value!r}")


def check_known_keys(conf: Mapping[str, Any], known: Collection[str], where: str = "model_conf") -> None:
    """Unknown keys are typos until proven otherwise: name them, with the closest known key."""
    unknown = sorted(k for k in conf if k not in known)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(known), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(f"unknown key(s) in {where}: {', '.join(hints)}; known keys: {sorted(known)}")


def check_kd_layers(kd_layers: Any, encoder: EncoderShape) -> List[int]:
    """Distinct 1-based block numbers inside the encoder, which must be able to return them."""
    if not isinstance(kd_layers, (list, tuple)):
        raise ValueError(f"model_conf.kd_layers must be a list of encoder block numbers, got {kd_layers!r}")
    layers = list(kd_layers)
    if not layers:
        return []
    if not all(isinstance(l, int) and not isinstance(l, bool) for l in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"model_conf.kd_layers must be distinct integers, got {layers}")
    if encoder.num_blocks is not None and (min(layers) < 1 or max(layers) > encoder.num_blocks):
        raise ValueError(
            f"model_conf.kd_layers {layers} out of range: encoder blocks are numbered 1..{encoder.num_blocks} "
            f"({encoder.num_blocks} = the final layer; encoder_conf.num_blocks sets the count)"
        )
    if min(layers) < 1:
        raise ValueError(f"model_conf.kd_layers {layers}: blocks are numbered from 1")
    if not encoder.intermediate:
        raise ValueError(
            f"model_conf.kd_layers: {encoder.name} cannot return intermediate layers "
            "(use conformer, transformer or e_branchformer)"
        )
    return sorted(layers)


def check_kd_decoder(name: Any, conf: Any) -> None:
    """An ESPnet attention decoder, and a conf whose keys its constructor takes."""
    from espnet2.tasks.asr import decoder_choices

    if name in NON_ATTENTION_DECODERS:
        raise ValueError(f"model_conf.kd_decoder={name!r} is not an attention decoder")
    if name not in decoder_choices.classes:
        raise ValueError(f"model_conf.kd_decoder={name!r} is not an ESPnet decoder; choose one of "
                         f"{[n for n in decoder_choices.classes if n not in NON_ATTENTION_DECODERS]}")
    if conf is None:
        return
    if not isinstance(conf, Mapping):
        raise ValueError(f"model_conf.kd_decoder_conf must be a mapping, got {conf!r}")
    params = inspect.signature(decoder_choices.classes[name].__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    # vocab_size and encoder_output_size are set by the model.
    known = [k for k in params if k not in ("self", "vocab_size", "encoder_output_size")]
    check_known_keys(conf, known, f"model_conf.kd_decoder_conf (kd_decoder: {name})")


def check_kd_conf(
    *,
    kd_layers: Any,
    kd_alpha: Any,
    kd_decoder: Any,
    kd_decoder_conf: Any,
    kd_share_decoder: Any,
    kd_decoder_dim: Any,
    teacher: Any,
    ctc_weight: Any,
    interctc_weight: Any,
    lsm_weight: Any,
    encoder: EncoderShape,
) -> KDConfig:
    """Every value check of a bertkd model_conf (ESPnet's own weights included, as ESPnet only asserts them).

    Values are checked whether or not `kd_layers` is empty: `kd_alpha: 1.5` is a mistake in any config.
    """
    check_range("ctc_weight", ctc_weight, 0.0, 1.0)
    check_range("interctc_weight", interctc_weight, 0.0, 1.0, high_open=True)
    check_range("lsm_weight", lsm_weight, 0.0, 1.0, high_open=True)
    check_range("kd_alpha", kd_alpha, 0.0, 1.0)
    if not isinstance(kd_share_decoder, bool):
        raise ValueError(f"model_conf.kd_share_decoder must be true or false, got {kd_share_decoder!r}")
    if kd_decoder_dim is not None and not (isinstance(kd_decoder_dim, int) and not isinstance(kd_decoder_dim, bool)
                                           and kd_decoder_dim > 0):
        raise ValueError(f"model_conf.kd_decoder_dim must be a positive integer or null, got {kd_decoder_dim!r}")
    teacher_config = TeacherConfig.from_dict(teacher) if teacher is not None else None
    layers = check_kd_layers(kd_layers, encoder)
    if not layers:
        return KDConfig([], teacher_config)
    check_kd_decoder(kd_decoder, kd_decoder_conf)
    if teacher_config is None:
        raise ValueError("model_conf.kd_layers needs model_conf.teacher (at least `model: <hub id or dir>`)")
    if ctc_weight in (0.0, 1.0):
        raise ValueError(
            f"model_conf.ctc_weight={ctc_weight} with kd_layers: the CTC head and the KD decoders both need "
            "weight; choose 0 < ctc_weight < 1 (or kd_layers: [] for a baseline)"
        )
    return KDConfig(layers, teacher_config)


def model_conf_defaults(signature: inspect.Signature) -> dict:
    """The keys model_conf may set (constructor parameters with a default) and their defaults."""
    return {name: p.default for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty}


def check_model_conf(conf: Mapping[str, Any], signature: inspect.Signature, encoder: EncoderShape) -> KDConfig:
    """The preflight's view: unknown keys, then the constructor's own checks on defaults + conf."""
    if not isinstance(conf, Mapping):
        raise ValueError(f"model_conf must be a mapping, got {conf!r}")
    defaults = model_conf_defaults(signature)
    check_known_keys(conf, defaults)
    values = {**defaults, **conf}
    keys: Sequence[str] = [k for k in inspect.signature(check_kd_conf).parameters if k != "encoder"]
    return check_kd_conf(encoder=encoder, **{k: values[k] for k in keys})
