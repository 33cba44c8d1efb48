"""Registers the plugin in ESPnet's ASR task.

ESPnet (202511, 202611) has no plugin mechanism: `ASRTask.build_model` reads the module-level `ClassChoices` of
`espnet2.tasks.asr`, and `ASRTask.optional_data_names` lists the extra inputs its data loader accepts. We add our model
and our soft-label inputs there. This must happen in every process that builds a model (training, collect-stats,
decoding, `build_model_from_file`, DDP workers), which is why importing `espnet_bertkd` arranges it (once
`espnet2.tasks.asr` is imported: see espnet_bertkd/__init__.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Tuple

from espnet2.tasks import asr as espnet_asr

from espnet_bertkd.asr.bertkd_model import ESPnetBertKDModel
from espnet_bertkd.kd.soft_labels import KD_DATA_NAMES

if TYPE_CHECKING:
    from espnet_bertkd.kd.teacher import TeacherConfig

MODEL_NAME = "bertkd"


def register() -> None:
    """Idempotently make `model: bertkd` and the `kd_token`/`kd_prob` inputs known to ESPnet's ASRTask."""
    espnet_asr.model_choices.classes[MODEL_NAME] = ESPnetBertKDModel
    task = espnet_asr.ASRTask
    if getattr(task, "_bertkd_registered", False):
        return
    espnet_optional = task.optional_data_names.__func__

    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return tuple(espnet_optional(cls, train, inference)) + KD_DATA_NAMES

    task.optional_data_names = classmethod(optional_data_names)
    task._bertkd_registered = True



def check_training_args(args) -> None:
    """Fail before any data is read when a KD training run cannot work.

    Checks the model config (building nothing heavy) and, in cached teacher mode, that every training and validation
    set has soft labels for all of its utterances, written by the configured teacher.
    """
    import os

    from espnet_bertkd.kd.soft_labels import KD_PROB, KD_TOKEN, check_coverage, check_meta, read_scp_keys
    from espnet_bertkd.kd.teacher import TeacherConfig

    if getattr(args, "model", None) != MODEL_NAME or getattr(args, "collect_stats", False):
        return
    conf = dict(args.model_conf or {})
    if not conf.get("kd_layers"):
        return
    if conf.get("teacher") is None:
        raise ValueError("model_conf.kd_layers needs model_conf.teacher (at least `model: <hub id or dir>`)")
    teacher = TeacherConfig.from_dict(conf["teacher"])
    if teacher.mode != "cached":
        return
    expected = _expected_meta(teacher)
    for split in ("train", "valid"):
        entries = {name: path for path, name, _ in getattr(args, f"{split}_data_path_and_name_and_type") or []}
        for name in (KD_TOKEN, KD_PROB):
            if name not in entries:
                raise ValueError(
                    f"teacher.mode is 'cached' but --{split}_data_path_and_name_and_type has no {name!r} input: add "
                    f"DIR/{name}.scp,{name},kaldi_ark (written by espnet_bertkd.bin.extract_soft_labels)"
                )
            if not os.path.exists(entries[name]):
                raise FileNotFoundError(f"--{split}_data_path_and_name_and_type: {entries[name]} does not exist")
        reference = entries.get("text")
        if reference is not None and os.path.exists(reference):
            utt_ids = read_scp_keys(reference)
            for name in (KD_TOKEN, KD_PROB):
                check_coverage(entries[name], utt_ids, reference)
        for directory in sorted({os.path.dirname(entries[name]) for name in (KD_TOKEN, KD_PROB)}):
            check_meta(directory, expected)
            _warn_if_unverified(directory, teacher, expected)


def _expected_meta(teacher: TeacherConfig) -> Dict[str, Any]:
    """What kd_meta.json must say for this config. The vocabulary fingerprint and size come from the teacher when
    it loads here (None, not checked, where it does not); the model's KD decoders are sized the same way."""
    from espnet_bertkd.kd.soft_labels import STORAGE
    from espnet_bertkd.kd.teacher import TeacherLoadError, load_teacher_vocab_size, load_vocab_hash

    vocab_size = teacher.vocab_size
    if vocab_size is None:
        try:
            vocab_size = load_teacher_vocab_size(teacher.model)
        except TeacherLoadError:
            vocab_size = None
    return {"vocab_hash": load_vocab_hash(teacher.model), "topk": teacher.topk, "temperature": teacher.temperature,
            "drop_special": teacher.drop_special, "vocab_size": vocab_size, "storage": STORAGE}


def _warn_if_unverified(directory: str, teacher: TeacherConfig, expected: Dict[str, Any]) -> None:
    """Where the teacher cannot be loaded here its vocabulary cannot be compared: say so, with both teacher ids
    (paths differ between machines, so a different id alone is no error)."""
    import logging

    from espnet_bertkd.kd.soft_labels import read_meta

    meta = read_meta(directory) or {}
    if expected["vocab_hash"] is None and meta.get("teacher") != teacher.model:
        logging.warning(
            "cannot load teacher %r here to compare its vocabulary with the soft labels in %s, written by teacher "
            "%r: make sure they are the same model", teacher.model, directory, meta.get("teacher"),
        )


register()  # on import: `import espnet_bertkd` arranges this import once ESPnet's ASR task is loaded
