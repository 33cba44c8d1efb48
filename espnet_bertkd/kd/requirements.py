"""What an ASR training config needs from the stage driver, read from the config itself (the one source of truth).

A config is a KD system when it says `model: bertkd` with non-empty `model_conf.kd_layers`; its teacher is
`model_conf.teacher` (espnet_bertkd.kd.teacher_config). In `cached` mode training reads soft labels (`kd_token`,
`kd_prob`) written beforehand by `extract_soft_labels --asr_config CONFIG`; in `online` mode it runs the teacher
itself and reads none. A location override of `teacher.model` (a local copy of a hub model on an offline machine)
is applied here exactly as training applies `--model_conf teacher.model=...`.

Reads the YAML only (no ESPnet import): the driver asks this once per system.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from espnet_bertkd.kd.teacher_config import TeacherConfig

BERTKD_MODEL = "bertkd"  # espnet_bertkd.asr.bertkd_model.MODEL_NAME, not imported: it loads ESPnet's model code
# The teacher settings that change the soft labels written in cached mode (the others, device and
# max_tokens_per_batch, only change where and in what batches the teacher runs; vocab_size is the teacher's own).
SOFT_LABEL_FIELDS = ("model", "topk", "temperature", "drop_special", "max_length", "dtype")
NO_MODE = "none"


@dataclass(frozen=True)
class Requirements:
    """What one training config needs: `teacher` is None for a system without KD decoders."""

    config: str
    teacher: Optional[TeacherConfig]

    @property
    def kd(self) -> bool:
        return self.teacher is not None

    @property
    def mode(self) -> str:
        """`cached`, `online`, or `none` (no KD decoders)."""
        return self.teacher.mode if self.teacher is not None else NO_MODE

    @property
    def soft_labels(self) -> bool:
        """Whether training reads cached soft labels (the `kd_token`/`kd_prob` data inputs)."""
        return self.mode == "cached"

    def as_dict(self) -> Dict[str, Any]:
        return {"config": self.config, "kd": self.kd, "mode": self.mode, "soft_labels": self.soft_labels,
                "teacher": dataclasses.asdict(self.teacher) if self.teacher is not None else None}


def load_config(path: str) -> Mapping[str, Any]:
    """An ESPnet training config (the YAML of --config, or a trained model's config.yaml) as a mapping."""
    with open(path, encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    if conf is None:
        conf = {}
    if not isinstance(conf, Mapping):
        raise ValueError(f"{path}: an ESPnet training config must be a YAML mapping, got {type(conf).__name__}")
    return conf


def requirements(path: str, teacher_model: Optional[str] = None) -> Requirements:
    """Read `path`; `teacher_model`, where given, replaces `model_conf.teacher.model` of a KD config."""
    conf = load_config(path)
    model_conf = conf.get("model_conf") or {}
    if conf.get("model") != BERTKD_MODEL or not model_conf.get("kd_layers"):
        return Requirements(path, None)
    block = model_conf.get("teacher")
    if block is None:
        raise ValueError(f"{path}: model_conf.kd_layers needs model_conf.teacher (at least `model: <hub id or dir>`)")
    try:
        teacher = TeacherConfig.from_dict({**block, **({"model": teacher_model} if teacher_model else {})})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return Requirements(path, teacher)


def read_teacher_config(path: str, teacher_model: Optional[str] = None) -> TeacherConfig:
    """The teacher of a KD config (what `extract_soft_labels --asr_config` extracts with); an error naming the
    file where the config has no KD decoders."""
    req = requirements(path, teacher_model)
    if req.teacher is None:
        raise ValueError(f"{path} trains no KD decoders (it needs `model: {BERTKD_MODEL}` with non-empty "
                         "model_conf.kd_layers and a model_conf.teacher): it uses no teacher")
    return req.teacher


def soft_label_source(reqs: Sequence[Requirements]) -> Optional[Requirements]:
    """The config whose teacher writes the cached soft labels that every cached-mode config of one run reads (the
    driver gives them all the same soft-label directories); None where no config reads soft labels. Configs that
    would need different soft labels are an error naming both and every differing setting."""
    cached = [r for r in reqs if r.soft_labels]
    if not cached:
        return None
    first = cached[0]
    for other in cached[1:]:
        diffs = [f"{k}: {getattr(first.teacher, k)!r} vs {getattr(other.teacher, k)!r}" for k in SOFT_LABEL_FIELDS
                 if getattr(first.teacher, k) != getattr(other.teacher, k)]
        if diffs:
            raise ValueError(
                f"{first.config} and {other.config} read cached soft labels from the same directories but ask for "
                f"different ones (model_conf.teacher {'; '.join(diffs)}): make their teacher blocks agree, or train "
                "them in separate runs (e.g. another --dumpdir)"
            )
    return first


def common_teacher(reqs: Sequence[Requirements]) -> Optional[str]:
    """The one teacher model every KD config names (what the driver's stage 3 trains); None without KD configs."""
    kd = [r for r in reqs if r.kd]
    if not kd:
        return None
    models: Dict[str, List[str]] = {}
    for r in kd:
        models.setdefault(r.teacher.model, []).append(r.config)
    if len(models) > 1:
        named = "; ".join(f"{model!r} in {', '.join(configs)}" for model, configs in models.items())
        raise ValueError(f"the KD configs name different teachers ({named}): one run trains one teacher")
    return kd[0].teacher.model


def overall_mode(reqs: Sequence[Requirements]) -> str:
    """`none` without KD configs, the KD configs' mode where they agree, else `mixed`."""
    modes = {r.mode for r in reqs if r.kd}
    return NO_MODE if not modes else modes.pop() if len(modes) == 1 else "mixed"
