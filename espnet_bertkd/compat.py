"""The one place that knows which ESPnet release is installed (202511 on Python 3.11, 202611 on Python 3.12/3.13).

Every difference between the supported releases that the plugin meets is absorbed here, so the rest of the code
imports one name and never tries two import paths itself:

- 202611 moved the old `espnet.nets` tree under `espnet2.legacy.nets` (`espnet/` keeps only `__init__.py`).
- 202611's `Speech2Text` decodes a list of utterances as one batch (`batch_decode`, with `--batch_size > 1` and a
  `BatchBeamSearch`); 202511 decodes one utterance per call and refuses `--batch_size > 1`.
- 202611's conformer and E-Branchformer convolution modules zero padded frames themselves (`mask_pad`); under
  202511 only the greedy decoder's own masking (espnet_bertkd.asr.greedy_ctc) keeps a batch padding-exact.
- Both print noise when ESPnet is imported (a Flash-Attention notice; offline, nltk download errors from
  g2p_en, which the phoneme tokenizers import): `import espnet_bertkd` installs an import hook that filters it
  out of exactly those modules' imports (`NOISY_MODULES`).

- ESPnet's Lightning trainer (`espnet2.bin.lightning_train`, in both releases; 202511 installs `lightning` with
  ESPnet, 202611 only with its `train` extra, so espnet-bertkd's `[lightning]` extra adds it there) starts a node's
  other DDP processes by re-running the main module, which under `python -m espnet_bertkd.launch -m MODULE` is the
  launcher: `relaunch_through_launcher` makes those processes run `launch -m MODULE` too (not `launch ARGS`, which
  is no command), so that they register the plugin and train `model: bertkd` (`lightning_trainer_missing` says
  where the trainer cannot run, for asr.sh's `--use_lightning true`). Its checkpoint averaging
  (`AverageCheckpointsCallback`, which writes the ESPnet model file) reads Lightning checkpoints with torch.load's
  default weights_only=True (torch >= 2.6), which refuses the argparse.Namespace Lightning saved as the
  hyperparameters: `allow_namespace_in_checkpoints` lets torch.load accept that plain container there.

Two differences need no branch: 202611 reads `kaldi_ark` inputs with omniio, which knows Kaldi's own matrix types
only, so soft labels are Kaldi float32 matrices under both releases (espnet_bertkd.kd.soft_labels); and 202611 no
longer installs `editdistance`, which ESPnet's CER/WER reports import, so setup.py requires it.

Tests guard each of these on both releases (tests/test_compat.py).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import functools
import inspect
import io
import logging
import sys
from importlib import metadata
from types import ModuleType
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

SUPPORTED_RELEASES = ("202511", "202611")


def espnet_version() -> str:
    """The installed ESPnet release, e.g. '202611'."""
    return metadata.version("espnet")


def nets_package() -> str:
    """Where ESPnet's legacy `nets` tree lives in the installed release."""
    return "espnet2.legacy.nets" if importlib.util.find_spec("espnet2.legacy") is not None else "espnet.nets"


def nets_module(name: str) -> ModuleType:
    """A module of the legacy nets tree by its path below `nets`, e.g. 'pytorch_backend.nets_utils'."""
    return importlib.import_module(f"{nets_package()}.{name}")


# The legacy nets' names the plugin uses, resolved on first use (`from espnet_bertkd.compat import add_sos_eos`):
# importing this module stays cheap for the recipe's light tools.
_NETS_NAMES = {
    "th_accuracy": "pytorch_backend.nets_utils",
    "add_sos_eos": "pytorch_backend.transformer.add_sos_eos",
    "LabelSmoothingLoss": "pytorch_backend.transformer.label_smoothing_loss",
    "TooShortUttError": "pytorch_backend.transformer.subsampling",
}


def __getattr__(name: str):
    if name in _NETS_NAMES:
        return getattr(nets_module(_NETS_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def speech2text_decodes_batches() -> bool:
    """Whether the installed `Speech2Text` decodes several utterances in one beam search (`batch_decode`)."""
    from espnet2.bin.asr_inference import Speech2Text

    return hasattr(Speech2Text, "batch_decode")


def convolutions_mask_padding() -> bool:
    """Whether ESPnet's conformer convolution module zeroes padded frames itself (202611's `mask_pad`)."""
    module = nets_module("pytorch_backend.conformer.convolution").ConvolutionModule
    return "mask_pad" in inspect.signature(module.forward).parameters


# ---------------------------------------------------------------------------------------------- import noise
# Lines ESPnet's import prints (to stdout or stderr) that say nothing about the run: a CTC model never uses Flash-
# Attention (the notice is printed by the legacy attention module whenever `flash_attn` is not installed), and the
# g2p frontends only matter to phoneme tokenizers, which the plugin's recipes do not use (offline, g2p_en's
# `nltk.download` calls print several lines per missing corpus).
IMPORT_NOISE: Tuple[str, ...] = ("Failed to import Flash Attention", "[nltk_data]")
# Modules whose import prints that noise (the legacy attention module under either release's path, and g2p_en).
NOISY_MODULES: Tuple[str, ...] = (
    "espnet.nets.pytorch_backend.transformer.attention",
    "espnet2.legacy.nets.pytorch_backend.transformer.attention",
    "g2p_en",
)


@contextlib.contextmanager
def _output_without(noise: Tuple[str, ...]) -> Iterator[None]:
    """Capture what is printed inside the block and pass on every line not starting with `noise`, to the stream it
    was written to (202511 prints the Flash-Attention notice to stdout, 202611 to stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        for captured, stream in ((out, sys.stdout), (err, sys.stderr)):
            kept = [line for line in captured.getvalue().splitlines(keepends=True) if not line.startswith(noise)]
            stream.write("".join(kept))


class _LoaderInside(importlib.abc.Loader):
    """A module's own loader, executing the module inside a context manager."""

    def __init__(self, inner: importlib.abc.Loader, around: Callable[[], ContextManager]) -> None:
        self.inner, self.around = inner, around

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with self.around():
            self.inner.exec_module(module)


class ImportHook(importlib.abc.MetaPathFinder):
    """Finds the named modules like Python would and runs their import inside `around[name]()`: how the plugin
    acts on an ESPnet import without importing ESPnet itself (which takes ~10 s) before anyone needs it."""

    def __init__(self, around: Dict[str, Callable[[], ContextManager]]) -> None:
        self.around = around

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if fullname not in self.around:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderInside(spec.loader, self.around[fullname])
        return spec


def quiet_import() -> ContextManager:
    return _output_without(IMPORT_NOISE)


def install_import_hook(around: Dict[str, Callable[[], ContextManager]]) -> None:
    """Put an ImportHook first on sys.meta_path (idempotent per module name)."""
    todo = {name: fn for name, fn in around.items() if not any(
        isinstance(f, ImportHook) and name in f.around for f in sys.meta_path)}
    if todo:
        sys.meta_path.insert(0, ImportHook(todo))


class _DropMessage(logging.Filter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


# ESPnetASRModel.__init__ logs this when ctc_weight == 1.0 (both releases, on the root logger).
DECODER_NONE_WARNING = "Set decoder to none as ctc_weight==1.0"


@contextlib.contextmanager
def without_decoder_none_warning() -> Iterator[None]:
    """Silence ESPnet's "Set decoder to none" warning while the plugin builds ESPnet's side of a KD model: there
    the plugin passes ctc_weight 1.0 only to get past ESPnet's decoder check, and the model's real ctc_weight
    (say 0.5, weighing CTC against the KD decoders) is set right after, so the warning would be wrong."""
    drop = _DropMessage(DECODER_NONE_WARNING)
    loggers = [logging.getLogger(), logging.getLogger("espnet2.asr.espnet_model")]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


# ---------------------------------------------------------------------------------------- the Lightning trainer
LIGHTNING_TRAIN = "espnet2.bin.lightning_train"
LAUNCHER = "espnet_bertkd.launch"
# Where lightning.pytorch's DDP launcher (the default `start_method="popen"` of ESPnet's DDPStrategy) builds the
# command of each further process on a node: `[python, -m, <__main__'s module>, *sys.argv[1:]]` (or the script's
# path when __main__ is a script). Its `_call_children_scripts` looks the function up in this module at call time.
LIGHTNING_SUBPROCESS_SCRIPT = "lightning.pytorch.strategies.launchers.subprocess_script"


def lightning_trainer_missing() -> Optional[str]:
    """Why ESPnet's Lightning trainer cannot run with this interpreter, in one sentence; None where it can."""
    if importlib.util.find_spec(LIGHTNING_TRAIN) is None:
        return (f"ESPnet {espnet_version()} has no Lightning trainer ({LIGHTNING_TRAIN}); train with ESPnet's "
                f"trainer (--use_lightning false)")
    if importlib.util.find_spec("lightning") is None:
        return ("the lightning package is not installed (ESPnet's Lightning trainer needs it): "
                "pip install 'espnet-bertkd[lightning]', or tools/install.sh")
    return None


def launched_module_command() -> Optional[List[str]]:
    """The command that starts one more process of the run in progress, where this process is the plugin's launcher
    running a module (`python -m espnet_bertkd.launch -m MODULE ARGS`: __main__ is the launcher and sys.argv is
    [MODULE, ARGS...], as launch.run_module sets it); None otherwise."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is None or spec.name != LAUNCHER or not sys.argv or not sys.argv[0] or sys.argv[0].endswith(".py"):
        return None
    return [sys.executable, "-m", LAUNCHER, "-m", sys.argv[0], *sys.argv[1:]]


def relaunch_through_launcher(module: ModuleType) -> None:
    """Make Lightning's launcher module start a node's further DDP processes through the plugin's launcher when it
    runs the training (idempotent; any other main module keeps Lightning's own command)."""
    original = module._basic_subprocess_cmd
    if getattr(original, "_through_launcher", False):
        return

    @functools.wraps(original)
    def command():
        return launched_module_command() or original()

    command._through_launcher = True
    module._basic_subprocess_cmd = command


@contextlib.contextmanager
def _after_lightning_launcher_import() -> Iterator[None]:
    yield
    relaunch_through_launcher(sys.modules[LIGHTNING_SUBPROCESS_SCRIPT])


# ESPnet's module that averages the best Lightning checkpoints into `<monitor>.ave_<N>best.pth` with torch.load
LIGHTNING_CALLBACKS = "espnet2.train.lightning_callbacks"


def allow_namespace_in_checkpoints() -> None:
    """Let torch.load(weights_only=True) read the argparse.Namespace of training arguments that ESPnet's
    LitESPnetModel (`save_hyperparameters()`) puts into every Lightning checkpoint (idempotent)."""
    import argparse

    import torch.serialization

    if argparse.Namespace not in torch.serialization.get_safe_globals():
        torch.serialization.add_safe_globals([argparse.Namespace])


@contextlib.contextmanager
def _after_lightning_callbacks_import() -> Iterator[None]:
    yield
    allow_namespace_in_checkpoints()


for _name, _hook, _now in ((LIGHTNING_SUBPROCESS_SCRIPT, _after_lightning_launcher_import,
                            lambda: relaunch_through_launcher(sys.modules[LIGHTNING_SUBPROCESS_SCRIPT])),
                           (LIGHTNING_CALLBACKS, _after_lightning_callbacks_import, allow_namespace_in_checkpoints)):
    if _name in sys.modules:
        _now()
    else:
        install_import_hook({_name: _hook})
