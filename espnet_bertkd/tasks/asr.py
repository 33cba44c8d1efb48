"""Registers the plugin in ESPnet's ASR task.

ESPnet (202511, 202611) has no plugin mechanism: `ASRTask.build_model` reads the module-level `ClassChoices` of
`espnet2.tasks.asr`, and `ASRTask.optional_data_names` lists the extra inputs its data loader accepts. We add our model
and our soft-label inputs there. This must happen in every process that builds a model (training, collect-stats,
decoding, `build_model_from_file`, DDP workers), which is why importing `espnet_bertkd` arranges it (once
`espnet2.tasks.asr` is imported: see espnet_bertkd/__init__.py).
"""
from __future__ import annotations

from typing import Tuple

from espnet2.tasks import asr as espnet_asr

from espnet_bertkd.asr.bertkd_model import MODEL_NAME, ESPnetBertKDModel
from espnet_bertkd.kd.soft_labels import KD_DATA_NAMES
from espnet_bertkd.tasks.audio import register as register_audio_loaders



def register() -> None:
    """Idempotently make `model: bertkd` and the `kd_token`/`kd_prob` inputs known to ESPnet's ASRTask."""
    espnet_asr.model_choices.classes[MODEL_NAME] = ESPnetBertKDModel
    register_audio_loaders()  # audio read errors name the utterance (espnet_bertkd.tasks.audio)
    task = espnet_asr.ASRTask
    if getattr(task, "_bertkd_registered", False):
        return
    espnet_optional = task.optional_data_names.__func__

    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return tuple(espnet_optional(cls, train, inference)) + KD_DATA_NAMES

    task.optional_data_names = classmethod(optional_data_names)
    task._bertkd_registered = True


register()  # on import: `import espnet_bertkd` arranges this import once ESPnet's ASR task is loaded
