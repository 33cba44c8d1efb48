"""espnet-bertkd: distil a masked-LM teacher into an ESPnet CTC recogniser.

Importing the package makes `model: bertkd` known to ESPnet's ASR task (see espnet_bertkd.tasks.asr): at once if
`espnet2.tasks.asr` is already imported, else right after it is. Registration waits for ESPnet because importing ESPnet
takes ~10 s: the recipe's many small tools (data prep, job splitting, scoring) never build a model and should not pay
for it, while every process that does (training, decoding, DDP workers, `build_model_from_file`) imports
`espnet2.tasks.asr` first and so registers the plugin.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence

__version__ = "0.1.0"
__all__ = ["register", "__version__"]

_ESPNET_ASR_TASK = "espnet2.tasks.asr"


def register() -> None:
    """Make `model: bertkd` and the soft-label inputs known to ESPnet's ASRTask (idempotent)."""
    from espnet_bertkd.tasks.asr import register as register_in_asr_task

    register_in_asr_task()


class _RegisteringLoader(importlib.abc.Loader):
    """Runs ESPnet's own loader for espnet2.tasks.asr, then registers the plugin in the finished module."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        # Importing our task module registers the plugin; if that import is what brought ESPnet's task module in,
        # it is half-done here, gets returned as it is, and registers at its own end.
        importlib.import_module("espnet_bertkd.tasks.asr")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds espnet2.tasks.asr like Python would and hands it back with the registering loader."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if fullname != _ESPNET_ASR_TASK:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


if _ESPNET_ASR_TASK in sys.modules:
    importlib.import_module("espnet_bertkd.tasks.asr")
elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterImport())
