"""espnet-bertkd: distil a masked-LM teacher into an ESPnet CTC recogniser.

Importing the package makes `model: bertkd` known to ESPnet's ASR task (see espnet_bertkd.tasks.asr): at once if
`espnet2.tasks.asr` is already imported, else right after it is. Registration waits for ESPnet because importing ESPnet
takes ~10 s: the recipe's many small tools (data prep, job splitting, scoring) never build a model and should not pay
for it, while every process that does (training, decoding, DDP workers, `build_model_from_file`) imports
`espnet2.tasks.asr` first and so registers the plugin.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Iterator

from espnet_bertkd.compat import NOISY_MODULES, install_import_hook, quiet_import

__version__ = "0.2.0"
__all__ = ["register", "__version__"]

_ESPNET_ASR_TASK = "espnet2.tasks.asr"


def register() -> None:
    """Make `model: bertkd` and the soft-label inputs known to ESPnet's ASRTask (idempotent)."""
    from espnet_bertkd.tasks.asr import register as register_in_asr_task

    register_in_asr_task()


@contextlib.contextmanager
def _register_after() -> Iterator[None]:
    """ESPnet's own loader runs espnet2.tasks.asr, then the plugin registers in the finished module."""
    yield
    # Importing our task module registers the plugin; if that import is what brought ESPnet's task module in,
    # it is half-done here, gets returned as it is, and registers at its own end.
    importlib.import_module("espnet_bertkd.tasks.asr")


# ESPnet's import noise (Flash-Attention notice, offline nltk errors) is filtered out of the modules that print it.
install_import_hook({name: quiet_import for name in NOISY_MODULES})
if _ESPNET_ASR_TASK in sys.modules:
    importlib.import_module("espnet_bertkd.tasks.asr")
else:
    install_import_hook({_ESPNET_ASR_TASK: _register_after})
