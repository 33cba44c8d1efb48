"""The `teacher:` block of `model_conf`: which masked LM, how its soft labels are made and used.

Its own module because the training config, the preflight, soft-label extraction and the online teacher all read
it, and none of them should need the Hugging Face loading code (espnet_bertkd.kd.teacher) to do so.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional


TEACHER_MODES = ("cached", "online")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names (kd.teacher maps them; no torch here)


@dataclass(frozen=True)
class TeacherConfig:
    """The `teacher:` block of `model_conf` (and the options of `extract_soft_labels`).

    model: Hugging Face hub id or local directory of a masked LM and its tokenizer.
    mode: `cached` reads soft labels written by `extract_soft_labels`; `online` runs the teacher in training.
    topk, temperature: q_i = softmax(top-k logits / temperature).
    vocab_size: size of the teacher vocabulary; read from the model's config when omitted (set it to build a
        model on a machine that does not have the teacher).
    device: `auto` follows the ASR model in online mode; otherwise a torch device string.
    dtype: float32, bfloat16 or float16 for the teacher's forward pass (soft labels are always computed in fp32).
    max_length: window length in tokens including special tokens; defaults to the model's maximum.
    max_tokens_per_batch: padded tokens per teacher forward pass (memory knob).
    drop_special: leave the tokenizer's special tokens ([CLS], [SEP], [MASK], [PAD], [UNK], ...) out of the top k,
        as Futami et al. do: they never occur in a transcript, and a weak teacher puts mass on them.
    """

    model: str
    mode: str = "cached"
    topk: int = 8
    temperature: float = 1.0
    vocab_size: Optional[int] = None
    device: str = "auto"
    dtype: str = "float32"
    max_length: Optional[int] = None
    max_tokens_per_batch: int = 16384
    drop_special: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("teacher.model must be a hub id or a local directory of a masked LM")
        if self.mode not in TEACHER_MODES:
            raise ValueError(f"teacher.mode must be one of {TEACHER_MODES}, got {self.mode!r}")
        if not (isinstance(self.topk, int) and self.topk >= 1):
            raise ValueError(f"teacher.topk must be a positive integer, got {self.topk!r}")
        if not self.temperature > 0:
            raise ValueError(f"teacher.temperature must be > 0, got {self.temperature!r}")
        if self.dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher.dtype must be one of {list(TEACHER_DTYPES)}, got {self.dtype!r}")
        if self.max_length is not None and self.max_length < 4:
            raise ValueError(f"teacher.max_length must be at least 4 tokens, got {self.max_length!r}")

    @classmethod
    def from_dict(cls, conf: Mapping[str, Any]) -> "TeacherConfig":
        """Build from a YAML mapping, naming any unknown key (typos fail before data is read)."""
        if not isinstance(conf, Mapping):
            raise TypeError(f"model_conf.teacher must be a mapping, got {type(conf).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in model_conf.teacher: {unknown}; known keys: {sorted(known)}")
        if "model" not in conf:
            raise ValueError("model_conf.teacher needs `model` (a hub id or a local directory)")
        return cls(**conf)
