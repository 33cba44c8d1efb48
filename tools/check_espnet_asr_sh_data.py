#!/usr/bin/env python3
"""Helpers of tools/check_espnet_asr_sh.sh: the data, configs and outcome checks around ESPnet's own asr.sh.

    check_espnet_asr_sh_data.py dump    --corpus DIR --recipe DIR    # data/<set> + dump/raw/<set> (= asr.sh stages 3-4)
    check_espnet_asr_sh_data.py configs --recipe DIR --teacher DIR   # conf/train_<system>.yaml, conf/decode_ctc.yaml
    check_espnet_asr_sh_data.py check   --recipe DIR SYSTEM ...      # verify each system, print one line per system

`dump` writes what asr.sh's stages 3 (format_wav_scp.sh) and 4 (length filter) would write for 16 kHz FLAC input
that needs no conversion, so the check runs asr.sh from stage 5 without Kaldi binaries or resampy.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List

import soundfile
import yaml

from espnet_bertkd.compat import DECODER_NONE_WARNING, IMPORT_NOISE as NOISE

SETS = {"train-clean": "train_clean", "dev-clean": "dev_clean", "test-clean": "test_clean"}
TRAIN, VALID, TEST = "train_clean", "dev_clean", "test_clean"
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
DECODE_TAG = "decode_ctc_asr_model_valid.cer_ctc.ave"  # asr.sh's inference_tag for the options the check passes
MODEL_FILE = "valid.cer_ctc.ave.pth"


# ----------------------------------------------------------------------------------------------------------- dump
def dump(args: argparse.Namespace) -> None:
    data = os.path.join(args.recipe, "data")
    subprocess.run(
        [sys.executable, "-m", "espnet_bertkd.recipe.bin.prepare_librispeech", "--root", args.corpus, "--data_dir", data,
         *SETS], check=True)
    raw = os.path.join(args.recipe, "dump", "raw")
    for name in SETS.values():
        src, dst = os.path.join(data, name), os.path.join(raw, name)
        os.makedirs(dst, exist_ok=True)
        for f in KALDI_FILES:
            shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
        with open(os.path.join(src, "wav.scp"), encoding="utf-8") as f:
            wavs = [line.split(maxsplit=1) for line in f if line.strip()]
        with open(os.path.join(dst, "utt2num_samples"), "w", encoding="utf-8") as out:
            for utt, path in wavs:
                info = soundfile.info(path.strip())
                if info.samplerate != 16000:
                    sys.exit(f"{path.strip()}: {info.samplerate} Hz; asr.sh here runs with --fs 16k")
                out.write(f"{utt} {info.frames}\n")
        for f, value in (("feats_type", "raw"), ("audio_format", "flac")):
            with open(os.path.join(dst, f), "w", encoding="utf-8") as out:
                out.write(value + "\n")
        print(f"{dst}: {len(wavs)} utterances")
    # stage 4 writes the LM/token-list text from the training transcripts
    shutil.copyfile(os.path.join(raw, TRAIN, "text"), os.path.join(raw, "lm_train.txt"))


# -------------------------------------------------------------------------------------------------------- configs
def _train_config(model_conf: Dict) -> Dict:
    """A 2-block, 32-wide Conformer; no `normalize:` (asr.sh adds --normalize global_mvn itself)."""
    return {
        "frontend": "default",
        "frontend_conf": {"n_fft": 512, "hop_length": 160, "n_mels": 40},
        "encoder": "conformer",
        "encoder_conf": {
            "output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2, "dropout_rate": 0.0,
            "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0, "input_layer": "conv2d",
            "normalize_before": True, "macaron_style": True, "rel_pos_type": "latest", "pos_enc_layer_type": "rel_pos",
            "selfattention_layer_type": "rel_selfattn", "activation_type": "swish", "use_cnn_module": True,
            "cnn_module_kernel": 7,
        },
        "model": "bertkd",
        "model_conf": model_conf,
        "optim": "adam",
        "optim_conf": {"lr": 0.002},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 20},
        "max_epoch": 2,
        "batch_type": "folded",
        "batch_size": 8,
        "best_model_criterion": [["valid", "cer_ctc", "min"]],
        "keep_nbest_models": 2,
        "num_workers": 0,
        "log_interval": 5,
        "num_att_plot": 0,
        "seed": 0,
    }


def configs(args: argparse.Namespace) -> None:
    conf = os.path.join(args.recipe, "conf")
    os.makedirs(conf, exist_ok=True)
    kd = {"lsm_weight": 0.1, "kd_layers": [1, 2], "kd_alpha": 0.5, "kd_decoder": "transformer",
          "kd_decoder_conf": {"num_blocks": 1, "attention_heads": 2, "linear_units": 64, "dropout_rate": 0.0}}
    teacher = os.path.abspath(args.teacher)
    systems = {
        "ctc": {"ctc_weight": 1.0, "kd_layers": []},
        "kd_online": {"ctc_weight": 0.5, **kd, "teacher": {"model": teacher, "mode": "online", "topk": args.topk}},
        "kd_cached": {"ctc_weight": 0.5, **kd, "teacher": {"model": teacher, "mode": "cached", "topk": args.topk}},
    }
    for name, model_conf in systems.items():
        _write_yaml(os.path.join(conf, f"train_{name}.yaml"), _train_config(model_conf))
    # CTC-only decoding through ESPnet's asr_inference (a width-1 CTC prefix search)
    _write_yaml(os.path.join(conf, "decode_ctc.yaml"),
                {"beam_size": 1, "ctc_weight": 1.0, "lm_weight": 0.0, "penalty": 0.0, "maxlenratio": 0.0,
                 "minlenratio": 0.0, "nbest": 1})
    print(f"{conf}: train_{{{','.join(systems)}}}.yaml decode_ctc.yaml")


def _write_yaml(path: str, obj: Dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(obj, f, sort_keys=False)


# ---------------------------------------------------------------------------------------------------------- check
def _logs(directory: str) -> List[str]:
    return sorted(glob.glob(os.path.join(directory, "**", "*.log"), recursive=True))


def _count(files: List[str], needle: str) -> int:
    n = 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            n += sum(line.count(needle) for line in f)
    return n


def _results(path: str) -> Dict[str, str]:
    """Err of the first test-set row of each `## ... WER/CER` table of asr.sh's RESULTS.md."""
    out: Dict[str, str] = {}
    metric = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^###\s+(WER|CER|TER)", line)
            if m:
                metric = m.group(1)
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if metric and metric not in out and len(cells) >= 8 and cells[0].endswith(f"/{TEST}"):
                out[metric] = cells[7]  # |dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|
    return out


def check(args: argparse.Namespace) -> None:
    failed = []
    lines = []
    for system in args.systems:
        exp = os.path.join(args.recipe, "exp", f"asr_{system}")
        problems = []
        model = os.path.join(exp, MODEL_FILE)
        hyp = os.path.join(exp, DECODE_TAG, TEST, "text")
        results = os.path.join(exp, "RESULTS.md")
        if not os.path.isfile(model):
            problems.append(f"no {model}")
        if not os.path.isfile(hyp) or os.path.getsize(hyp) == 0:
            problems.append(f"no hypotheses {hyp}")
        else:
            with open(os.path.join(args.recipe, "dump", "raw", TEST, "text"), encoding="utf-8") as f:
                refs = {line.split(maxsplit=1)[0] for line in f if line.strip()}
            with open(hyp, encoding="utf-8") as f:
                hyps = {line.split(maxsplit=1)[0] for line in f if line.strip()}
            if hyps != refs:
                problems.append(f"{hyp}: {len(hyps)} hypotheses for {len(refs)} test utterances")
        scores = _results(results) if os.path.isfile(results) else {}
        if not os.path.isfile(results):
            problems.append(f"no {results}")
        elif not scores:
            problems.append(f"{results}: no {TEST} rows")
        stats = os.path.join(args.recipe, "exp", f"asr_stats_{system}")
        asr_logs = _logs(exp) + _logs(stats)  # collect-stats, training and decoding logs
        if system.startswith("kd"):
            n = _count(asr_logs, DECODER_NONE_WARNING)
            if n:
                problems.append(f"'{DECODER_NONE_WARNING}' logged {n} times in a KD system's logs")
        driver = os.path.join(args.recipe, "logs", f"asr_sh_{system}.log")  # asr.sh's own output
        logs = asr_logs + ([driver] if os.path.isfile(driver) else [])
        noise = ", ".join(f"'{s}' x{_count(logs, s)}" for s in NOISE)
        status = "FAIL" if problems else "ok"
        score = " ".join(f"{k} {v}%" for k, v in sorted(scores.items(), key=lambda kv: "WCT".index(kv[0][0])))
        model_shown = os.path.relpath(model, args.recipe) if os.path.isfile(model) else "-"
        stages = args.stages + (" (earlier run)" if system in args.reused.split() else "")
        lines.append(f"{status:4} {system:10} stages {stages}  model {model_shown}  "
                     f"{TEST}: {score or '-'}  (noise in logs: {noise})")
        for p in problems:
            lines.append(f"     {system}: {p}")
        if problems:
            failed.append(system)
    print("\n".join(lines))
    if failed:
        sys.exit(f"check_espnet_asr_sh: failed: {' '.join(failed)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--corpus", required=True)
    d.add_argument("--recipe", required=True)
    c = sub.add_parser("configs")
    c.add_argument("--recipe", required=True)
    c.add_argument("--teacher", required=True)
    c.add_argument("--topk", type=int, default=4)
    k = sub.add_parser("check")
    k.add_argument("--recipe", required=True)
    k.add_argument("--stages", default="10-13", help="what the summary says was run")
    k.add_argument("--reused", default="", help="systems whose outputs an earlier run left")
    k.add_argument("systems", nargs="+")
    args = p.parse_args()
    {"dump": dump, "configs": configs, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
