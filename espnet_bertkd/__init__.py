"""espnet-bertkd: distil a masked-LM teacher into an ESPnet CTC recogniser.

Importing the package registers `model: bertkd` in ESPnet's ASR task (see espnet_bertkd.tasks.asr).
"""
from espnet_bertkd.tasks.asr import MODEL_NAME, register

register()

__version__ = "0.1.0"
__all__ = ["MODEL_NAME", "register", "__version__"]
