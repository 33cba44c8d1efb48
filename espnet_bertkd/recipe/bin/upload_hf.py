r"""Upload a packed model (pack_ctc's zip) to the Hugging Face Hub, as ESPnet's asr.sh stage 15 does.

    python -m espnet_bertkd.recipe.bin.upload_hf --packed_zip exp/S/packed/asr_model.zip --hf_repo USER/NAME \
        [--repo_dir DIR] [--lang en] [--license cc-by-4.0] [--dry_run true]

The zip is unpacked as it is into REPO_DIR (default: hf_USER_NAME beside the zip, asr.sh's name for it): its config
keeps the archive's relative paths, which espnet_model_zoo points at the downloaded copies. A model card README.md
replaces the packed one and quotes it: the Hub metadata, the packed README (teacher, KD settings, versions), how to
decode, the config. REPO_DIR is built under a temporary name and swapped in. Then huggingface_hub's upload_folder
sends it (the repo is created where missing; log in with `huggingface-cli login` or set HF_TOKEN), where asr.sh
clones the repo and pushes with git-lfs. `--dry_run true` builds REPO_DIR, prints the repo and the file list and
uploads nothing (huggingface_hub is not even imported).
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional

import yaml

from espnet_bertkd.utils.cli import add_overwrite
from espnet_bertkd.utils.fileio import OWNER_FILE, atomic_dir, check_output_dir

OWNER = "upload_hf"  # the owner marker of the folders it builds (check_output_dir)

# Hugging Face repo ids: NAMESPACE/NAME of letters, digits, "-", "_", "."; no "--" or ".."; "-"/"." not at the ends.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"{_PART}/{_PART}")
README = "README.md"

ESPNET_CITATION = """@inproceedings{watanabe2018espnet,
  author={Shinji Watanabe and Takaaki Hori and Shigeki Karita and Tomoki Hayashi and Jiro Nishitoba and Yuya Unno
  and Nelson Yalta and Jahn Heymann and Matthew Wiesner and Nanxin Chen and Adithya Renduchintala and Tsubasa Ochiai},
  title={{ESPnet}: End-to-End Speech Processing Toolkit},
  year={2018},
  booktitle={Proceedings of Interspeech},
  pages={2207--2211},
  doi={10.21437/Interspeech.2018-1456},
}"""


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValueError(f"--hf_repo {repo_id!r} is not a Hugging Face repo id: USER/NAME of letters, digits, "
                         "'-', '_' and '.' (no '--' or '..', not starting or ending with '-' or '.')")


def read_meta(archive: zipfile.ZipFile, zip_path: str) -> Dict[str, Any]:
    """ESPnet's meta.yaml of the archive, checked: every member stays inside the folder, every file it names is
    there."""
    names = set(archive.namelist())
    unsafe = [n for n in names if PurePosixPath(n).is_absolute() or ".." in PurePosixPath(n).parts]
    if unsafe:
        raise ValueError(f"{zip_path}: member {unsafe[0]!r} would land outside the folder; refusing to unpack")
    if "meta.yaml" not in names:
        raise ValueError(f"{zip_path} has no meta.yaml: not an ESPnet packed model (make one with "
                         "python -m espnet_bertkd.bin.pack_ctc)")
    meta = yaml.safe_load(archive.read("meta.yaml"))
    if not (isinstance(meta, dict) and isinstance(meta.get("files"), dict)
            and isinstance(meta.get("yaml_files"), dict)):
        raise ValueError(f"{zip_path}: meta.yaml lacks ESPnet's `files` and `yaml_files` mappings")
    absent = [v for v in [*meta["files"].values(), *meta["yaml_files"].values()] if v not in names]
    if absent:
        raise ValueError(f"{zip_path}: meta.yaml names {absent[0]!r}, which is not in the archive (packed with "
                         "absolute paths? pack with python -m espnet_bertkd.bin.pack_ctc)")
    return meta


def model_card(repo_id: str, packed_readme: str, config_text: str, lang: str, license_: str, rate: int) -> str:
    """README.md of the Hub repo: ESPnet's TEMPLATE_HF_Readme.md front matter, the packed README, usage, config."""
    front = yaml.safe_dump({"tags": ["espnet", "espnet-bertkd", "audio", "automatic-speech-recognition"],
                            "language": lang, "license": license_, "library_name": "espnet"}, sort_keys=False)
    usage = (
        "## How to use\n\n"
        "```python\n"
        "import soundfile\n"
        "from espnet2.bin.asr_inference import Speech2Text  # pip install espnet espnet_model_zoo\n\n"
        f'speech2text = Speech2Text.from_pretrained("{repo_id}", ctc_weight=1.0, beam_size=1)\n'
        f'speech, rate = soundfile.read("speech.wav")  # mono, {rate} Hz\n'
        "text, tokens, token_ids, hyp = speech2text(speech)[0]\n"
        "```\n"
    )
    body = packed_readme.strip() or f"# {repo_id}\n\nAn ESPnet ASR model."
    return (f"---\n{front}---\n\n{body}\n\n{usage}\n## ASR config\n\n<details><summary>expand</summary>\n\n"
            f"```\n{config_text.rstrip()}\n```\n\n</details>\n\n### Citing ESPnet\n\n```BibTex\n{ESPNET_CITATION}\n"
            "```\n")


def sample_rate(config_text: str) -> int:
    """The model's frontend_conf.fs (ESPnet's default 16 kHz; "16k" as ESPnet reads it), for the card's example."""
    config = yaml.safe_load(config_text) if config_text else None
    fs = ((config.get("frontend_conf") or {}) if isinstance(config, dict) else {}).get("fs", 16000)
    if isinstance(fs, str) and fs.lower().endswith("k"):
        return int(float(fs[:-1]) * 1000)
    return int(fs)


def build_folder(zip_path: str, repo_dir: Path, repo_id: str, lang: str, license_: str,
                 overwrite: bool = False) -> List[Path]:
    """Unpack the zip into `repo_dir` (swapped in whole, so refused unless absent, empty or upload_hf's own,
    or `overwrite`) with the model card; returns the files to upload, sorted (without the owner marker)."""
    check_output_dir(repo_dir, OWNER, [zip_path], overwrite, option="--repo_dir")
    with zipfile.ZipFile(zip_path) as archive:
        meta = read_meta(archive, zip_path)
        config_member = meta["yaml_files"].get("asr_train_config")
        config_text = archive.read(config_member).decode("utf-8") if config_member else ""
        packed_readme = archive.read(README).decode("utf-8") if README in archive.namelist() else ""
        with atomic_dir(repo_dir, OWNER, [zip_path], overwrite) as tmp:
            archive.extractall(tmp)
            card = model_card(repo_id, packed_readme, config_text, lang, license_, sample_rate(config_text))
            (tmp / README).write_text(card, encoding="utf-8")
    return sorted(p for p in repo_dir.rglob("*") if p.is_file() and p.name != OWNER_FILE)


def upload(repo_dir: Path, repo_id: str) -> str:
    """huggingface_hub's upload_folder (imported here: only a real upload needs it); returns the commit's URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ValueError("huggingface_hub is not installed: pip install huggingface_hub") from None
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(repo_dir), repo_type="model",
                             commit_message="Update model", ignore_patterns=[OWNER_FILE])
    return str(getattr(info, "commit_url", "") or f"https://huggingface.co/{repo_id}")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packed_zip", required=True, help="pack_ctc's zip")
    p.add_argument("--hf_repo", required=True, help="USER/NAME on the Hugging Face Hub")
    p.add_argument("--repo_dir", default=None, help="the folder uploaded (default: hf_USER_NAME beside the zip)")
    p.add_argument("--lang", default="noinfo", help="the card's language (asr.sh's --lang)")
    p.add_argument("--license", default="cc-by-4.0", help="the card's license (ESPnet's template's)")
    p.add_argument("--dry_run", default="false", choices=["true", "false"], help="true: print, upload nothing")
    add_overwrite(p, "a --repo_dir that upload_hf did not make")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    repo_dir = Path(args.repo_dir or Path(args.packed_zip).parent / f"hf_{args.hf_repo.replace('/', '_')}")
    try:
        check_repo_id(args.hf_repo)
        if not zipfile.is_zipfile(args.packed_zip):
            raise ValueError(f"--packed_zip {args.packed_zip} is missing or not a zip file (make one with "
                             "python -m espnet_bertkd.bin.pack_ctc)")
        files = build_folder(args.packed_zip, repo_dir, args.hf_repo, args.lang, args.license, args.overwrite)
        if args.dry_run == "true":
            print(f"dry run: would upload {len(files)} files from {repo_dir} to https://huggingface.co/{args.hf_repo}")
            for f in files:
                print(f"  {f.relative_to(repo_dir).as_posix()} ({f.stat().st_size} bytes)")
            return
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        sys.exit(f"upload_hf: {e}")
    try:
        url = upload(repo_dir, args.hf_repo)
    except (ValueError, OSError) as e:  # huggingface_hub's HTTP, offline and login errors are OSErrors
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        sys.exit(f"upload_hf: upload of {repo_dir} to {args.hf_repo} failed: {reason}")
    print(f"uploaded {len(files)} files from {repo_dir} to {url}")


if __name__ == "__main__":
    main(sys.argv[1:])
