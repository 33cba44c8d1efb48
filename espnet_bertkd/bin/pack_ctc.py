r"""Pack a trained model as an ESPnet model zip that names only files inside itself (asr.sh stage 14, made portable).

    python -m espnet_bertkd.bin.pack_ctc --asr_train_config exp/S/config.yaml \
        --asr_model_file exp/S/valid.cer_ctc.ave.pth --outpath exp/S/packed/asr_model.zip \
        [--readme_extra exp/S/RESULTS.md]

A `model: bertkd` config is exported first, as export_ctc does (KD decoders and teacher dropped: a plain
`model: espnet` model). A `model: espnet` config (e.g. the CTC baseline trained without KD) is packed as it is, its
weights checked against it the same way; any other model is refused.

The files the config needs at decoding time (normalize_conf.stats_file, token_list when it is a file, bpemodel for
token_type bpe, non_linguistic_symbols) are copied into the archive and the config is rewritten to name them there,
so ESPnet's unpack (espnet2.main_funcs.pack_funcs.unpack, espnet_model_zoo) points them at the unpacked copies;
paths only training used (train/valid data and shape files, output_dir, init_param, ...) are cleared, and a
bpemodel that the token type does not use is dropped. Relative paths in the config are read from the current
directory, as ESPnet reads them: run pack_ctc from the recipe directory.

README.md at the archive's root names the teacher (model and vocabulary size), the KD settings, the plugin version
and the git commit of its checkout ("unknown" outside one); --readme_extra appends a Markdown file (e.g. RESULTS.md).
The packing itself is ESPnet's own (`pack`, behind `python -m espnet2.bin.pack asr`), run in a staging directory so
that every member name is relative; the zip is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import yaml

import espnet_bertkd
from espnet_bertkd.asr.bertkd_model import MODEL_NAME, ESPnetBertKDModel
from espnet_bertkd.asr.export import (MismatchedWeights, check_loads, export_config, export_state_dict,
                                      read_model_state, read_train_config)
from espnet_bertkd.kd.teacher_config import TeacherConfig

PLAIN_MODEL = "espnet"
README = "README.md"
# Where the config's files go in the archive: ESPnet's recipe layout (exp/<stats>/train/feats_stats.npz,
# data/token_list/...), so an unpacked model looks like the ones espnet_model_zoo serves.
MEMBERS = {
    "normalize_conf.stats_file": "exp/asr_stats/train/feats_stats.npz",
    "token_list": "data/token_list/tokens.txt",
    "bpemodel": "data/token_list/bpe.model",
    "non_linguistic_symbols": "data/non_linguistic_symbols.txt",
}
# Token types whose `bpemodel` is a name (a hub model, a Whisper vocabulary), not a file.
NAMED_BPEMODEL = ("hugging_face", "whisper")
# Paths that only training reads: cleared, so the packed config names nothing on the training machine.
TRAINING_ONLY = {
    "config": None, "output_dir": None, "pretrain_path": None, "deepspeed_config": None, "rir_scp": None,
    "noise_scp": None, "init_param": [], "train_shape_file": [], "valid_shape_file": [],
    "train_data_path_and_name_and_type": [], "valid_data_path_and_name_and_type": [],
}
KD_KEYS = ("kd_layers", "kd_alpha", "kd_decoder", "kd_decoder_conf", "kd_share_decoder", "kd_decoder_dim")
LOSS_KEYS = ("ctc_weight", "interctc_weight", "lsm_weight")


@dataclass(frozen=True)
class Packed:
    """What was packed: the archive, its members, the parameter count of the packed model."""

    outpath: Path
    members: List[str]
    params: int


# ------------------------------------------------------------------------------------------------ the config


def get_key(config: Mapping[str, Any], key: str) -> Any:
    """`a.b` of a nested mapping (None where absent)."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def set_key(config: Dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        config[part] = dict(config.get(part) or {})
        config = config[part]
    config[last] = value


def bundled_files(config: Mapping[str, Any]) -> Dict[str, str]:
    """Config key -> the file it names, for every file decoding needs (see MEMBERS)."""
    files = {}
    for key in ("normalize_conf.stats_file", "token_list", "non_linguistic_symbols"):
        value = get_key(config, key)
        if isinstance(value, str) and value.lower() != "none":
            files[key] = value
    if config.get("token_type") == "bpe":
        if not isinstance(config.get("bpemodel"), str):
            raise ValueError("token_type: bpe needs bpemodel (the sentencepiece model), which is not set")
        files["bpemodel"] = config["bpemodel"]
    return files


def check_files(files: Mapping[str, str], config_path: str) -> None:
    """Every bundled file exists, else one line naming the config key and the path."""
    for key, path in files.items():
        if not Path(path).is_file():
            where = "" if os.path.isabs(path) else (f" (relative paths are read from the current directory, "
                                                    f"{os.getcwd()}, as ESPnet reads them: run pack_ctc from the "
                                                    "recipe directory)")
            raise ValueError(f"{config_path}: {key}: no such file {path!r}{where}")


def portable_config(config: Mapping[str, Any], files: Mapping[str, str]) -> Dict[str, Any]:
    """The config naming the archive's copies of `files`, with the training-only paths cleared."""
    config = dict(config)
    for key in files:
        set_key(config, key, MEMBERS[key])
    token_type = str(config.get("token_type") or "")
    if "bpemodel" not in files and not token_type.startswith(NAMED_BPEMODEL):
        config["bpemodel"] = None  # unused by this token type (asr.sh passes one for every type)
    for key, cleared in TRAINING_ONLY.items():
        if key in config:
            config[key] = cleared
    return config


def absolute_paths(value: Any, key: str = "") -> List[Tuple[str, str]]:
    """(key, value) of every absolute path left in the config (the token list's entries are tokens, not paths)."""
    if isinstance(value, Mapping):
        return [hit for k, v in value.items() if k != "token_list" for hit in absolute_paths(v, f"{key}{k}.")]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in absolute_paths(v, f"{key}{i}.")]
    return [(key.rstrip("."), value)] if isinstance(value, str) and os.path.isabs(value) else []


# ------------------------------------------------------------------------------------------------ the README


def source_commit(package_dir: Path) -> str:
    """HEAD of the git checkout the plugin is imported from, "unknown" if it is not imported from one (a wheel in a
    venv that happens to sit in some other repository's work tree does not count)."""
    try:
        out = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 2:
        return "unknown"
    top, commit = lines
    if (Path(top) / package_dir.name).resolve() != package_dir.resolve():
        return "unknown"
    status = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=30)
    return commit + (" (with uncommitted changes)" if status.returncode == 0 and status.stdout.strip() else "")


def defaults(function: Any) -> Dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def teacher_vocab_size(teacher: TeacherConfig, state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """The config's teacher.vocab_size, else the KD decoders' output size less their <sos/eos> (never the teacher)."""
    if teacher.vocab_size is not None:
        return teacher.vocab_size
    sizes = {v.shape[0] for k, v in state.items()
             if k.startswith(ESPnetBertKDModel.TRAINING_ONLY_PREFIXES) and k.endswith("output_layer.weight")}
    return sizes.pop() - 1 if len(sizes) == 1 else None


def kd_section(model_conf: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> List[str]:
    """The teacher and every KD setting of `model_conf` (defaults marked), as README lines."""
    from espnet2.asr.espnet_model import ESPnetASRModel

    lines = ["## Knowledge distillation (training only)", ""]
    if model_conf.get("teacher") is not None:
        teacher = TeacherConfig.from_dict(model_conf["teacher"])
        vocab = teacher_vocab_size(teacher, state)
        lines += [f"- teacher: `{teacher.model}` (`model_conf.teacher.model`), vocabulary of "
                  f"{vocab if vocab is not None else 'an unrecorded number of'} tokens",
                  f"- teacher soft labels: mode `{teacher.mode}`, top-k {teacher.topk}, temperature "
                  f"{teacher.temperature}, special tokens dropped: {str(teacher.drop_special).lower()}"]
    else:
        lines.append("- teacher: none (`kd_layers: []`: trained as a plain CTC model)")
    known = {**defaults(ESPnetASRModel.__init__), **defaults(ESPnetBertKDModel.__init__)}
    for key in LOSS_KEYS + KD_KEYS:
        value = model_conf.get(key, known.get(key))
        lines.append(f"- `{key}`: `{json.dumps(value)}`" + ("" if key in model_conf else " (default)"))
    return lines


def readme_text(source: Mapping[str, Any], packed: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                params: int, members: List[str], sources: Tuple[str, str], extra: str = "") -> str:
    """README.md of the archive: what the model is, how it was distilled, what made it."""
    exported = source.get("model") == MODEL_NAME
    name = Path(sources[0]).resolve().parent.name
    decoder = packed.get("decoder") or "none (CTC only)"
    if exported:
        what = ("a plain ESPnet model (`model: espnet`), exported from an espnet-bertkd `model: bertkd` training "
                "run: the KD decoders and the teacher were used in training only and are not in it")
    else:
        what = "a plain ESPnet model (`model: espnet`) packed as it was trained, without knowledge distillation"
    n_tokens = state["ctc.ctc_lo.weight"].shape[0] if "ctc.ctc_lo.weight" in state else None
    lines = [f"# {name}", "", f"This is {what}. ESPnet alone loads and decodes it; espnet-bertkd is not needed.", "",
             "## Model", "", f"- parameters: {params}", f"- decoder: {decoder}",
             f"- token_type: {packed.get('token_type')}" + (f", {n_tokens} tokens" if n_tokens else ""),
             f"- packed from: `{sources[0]}`, `{sources[1]}`", ""]
    if exported:
        lines += kd_section(source.get("model_conf") or {}, state) + [""]
    lines += ["## Provenance", "", f"- espnet-bertkd {espnet_bertkd.__version__}, git commit "
              f"{source_commit(Path(espnet_bertkd.__file__).parent)}",
              f"- packed with ESPnet {_version('espnet')}, torch {torch.__version__}, Python {sys.version.split()[0]}",
              "", "## Files", "", *[f"- `{m}`" for m in members], ""]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------ packing


def packable(config: Mapping[str, Any], state: Dict[str, torch.Tensor]
             ) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """The deployed config and weights: a bertkd model exported, a plain ESPnet model as it is."""
    if config.get("model") == MODEL_NAME:
        return export_config(config), export_state_dict(state)
    return dict(config), state


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """ESPnet's pack names each member by its path relative to the current directory (absolute ones outside it,
    which its unpack would not rewrite), so it runs inside the staging directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def stage(staging: Path, config: Dict[str, Any], state: Mapping[str, torch.Tensor], files: Mapping[str, str],
          model_name: str, exp_name: str) -> Tuple[str, str, List[str]]:
    """Copy everything into `staging` under its member name; returns the config's and model's members and the
    bundled files' members."""
    config_member, model_member = f"exp/{exp_name}/config.yaml", f"exp/{exp_name}/{model_name}"
    for key, path in files.items():
        (staging / MEMBERS[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, staging / MEMBERS[key])
    (staging / model_member).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), staging / model_member)
    (staging / config_member).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return config_member, model_member, [MEMBERS[k] for k in files]


def pack_ctc(asr_train_config: str, asr_model_file: str, outpath: str, readme_extra: Optional[str] = None) -> Packed:
    """Export (bertkd) or take (espnet) the model, stage it with its files and README, pack it with ESPnet's pack."""
    from espnet2.main_funcs.pack_funcs import pack

    out = Path(outpath).absolute()
    if out.suffix != ".zip":
        raise ValueError(f"--outpath must end in .zip (ESPnet's packed model, as asr.sh stage 14 writes it), "
                         f"got {outpath}")
    source = read_train_config(asr_train_config)
    if source.get("model") not in (MODEL_NAME, PLAIN_MODEL):
        raise ValueError(f"{asr_train_config}: model: {source.get('model')!r}; pack_ctc packs `model: {MODEL_NAME}` "
                         f"(exported) and `model: {PLAIN_MODEL}` configs")
    extra = Path(readme_extra).read_text(encoding="utf-8") if readme_extra else ""
    files = bundled_files(source)
    check_files(files, asr_train_config)
    state = read_model_state(asr_model_file)
    config, deployed = packable(source, state)
    params = check_loads(config, deployed)
    config = portable_config(config, files)
    for key, value in absolute_paths(config):
        print(f"pack_ctc: warning: {key} names {value}, a path of this machine that is not packed", file=sys.stderr)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.zip")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        exp_name = Path(asr_train_config).resolve().parent.name
        config_member, model_member, options = stage(staging, config, deployed, files, Path(asr_model_file).name,
                                                     exp_name)
        members = ["meta.yaml", config_member, model_member, *options, README]
        text = readme_text(source, config, state, params, members, (asr_train_config, asr_model_file), extra)
        (staging / README).write_text(text, encoding="utf-8")
        with working_dir(staging):
            pack(files={"asr_model_file": model_member}, yaml_files={"asr_train_config": config_member},
                 option=[*options, README], outpath=str(tmp))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    return Packed(out, members, params)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True, help="the training run's config.yaml")
    p.add_argument("--asr_model_file", required=True, help="its model file, e.g. valid.cer_ctc.ave.pth")
    p.add_argument("--outpath", required=True, help="the zip to write, e.g. exp/S/packed/asr_model.zip")
    p.add_argument("--readme_extra", default=None, help="a Markdown file appended to README.md (e.g. RESULTS.md)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        packed = pack_ctc(args.asr_train_config, args.asr_model_file, args.outpath, args.readme_extra)
    except (ValueError, OSError, MismatchedWeights) as e:
        # a config or model file refused, a file the config names missing, weights of another model
        sys.exit(f"pack_ctc: {e}")
    print(f"wrote {packed.outpath} ({packed.params} parameters): {', '.join(packed.members)}")


if __name__ == "__main__":
    main(sys.argv[1:])
