#!/usr/bin/env python3
"""A LibriSpeech-100-sized rehearsal of this recipe on the machine at hand: the embedded corpus generator at
train-clean-100's utterance count, laid out as LibriSpeech, run through this recipe's own run.sh (its configs, BPE,
speed perturbation 0.9/1.0/1.1, stage numbers and job launcher) one stage at a time, each stage's wall time, peak
memory and disk recorded and projected to LibriSpeech 960 h.

    python local/rehearsal.py --workdir rehearsal --updates 120      # 28,539 training utterances (~1 h on 2 cores)
    python local/rehearsal.py --workdir rehearsal_small --scale 0.125 --updates 20  # 1/8, for the scaling check

What differs from a real run, and why (everything else is the recipe as a user runs it):
- the audio is eSpeak NG's (2.9 s per utterance, not LibriSpeech's 12.7 s): 22.7 h instead of 100.6 h;
- the teacher is a 4 x 192 BERT trained here on 60k lines of the generated LM text (a stand-in for
  bert-base-uncased, which stage 3 likewise takes as it is), and BPE has 300 pieces (the text has ~1.2k words);
- stage 11 trains inter_aed_kd (cached soft labels) and the same config with `teacher.mode: online` for
  --updates updates each, one epoch, batches of 25 s of audio, fp32 (a CPU cannot run ESPnet's 70 epochs);
- stage 12 decodes test_clean (2,000 utterances) greedily (--sf_systems "": no shallow fusion of an undertrained
  model); stages 6-9 run for one shallow-fusion system (LM_STAGE_ARGS: the LM trained for 2 updates of its real batch,
  which take minutes each on a CPU);
- the LM text is the generator's text-only part (~20x the paired words, not LibriSpeech's ~800x).

Writes WORKDIR/rehearsal.json (one record per stage) and prints the table of egs/librispeech/asr1/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

RECIPE = Path(__file__).resolve().parents[1]
GENERATOR = RECIPE.parents[1] / "homophones" / "asr1" / "local" / "make_corpus.py"
FULL = {"num_train": 28539, "num_dev": 500, "num_dev_other": 500, "num_test": 2000}  # train-clean-100's count
SETS = {"train-clean-100": "train-clean", "dev-clean": "dev-clean", "dev-other": "dev-other",
        "test-clean": "test-clean"}
STAGES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
SYSTEMS = ["inter_aed_kd", "inter_aed_kd_online"]
# Stages 6-9 run for a shallow-fusion system: the recipe's 16-layer Transformer LM for a few updates (a CPU cannot
# train it), its perplexity, and the word 3-gram on the whole LM text (KenLM's lmplz where it is on the PATH).
LM_STAGE_ARGS = ["--sf_systems", "inter_aed_kd", "--sf_decodings", "beam_lm beam_ngram",
                 "--lm_args", "--max_epoch 1 --num_iters_per_epoch 2 --accum_grad 1 "
                              "--use_amp false --num_workers 1 --keep_nbest_models 1"]
# LibriSpeech 960 h against what the rehearsal measures: audio hours (what stages 2, 10-12 read), utterances and
# transcript words (what stages 1, 4, 5 read); sp = three copies of the training audio, as in both.
LIBRISPEECH_960 = {"hours": 960.9, "utterances": 281241, "words": 9403555}
LIBRISPEECH_TEST_WORDS = 210269  # dev-clean, dev-other, test-clean, test-other: what stages 8 and 12 read
LIBRISPEECH_LM_WORDS = 803e6  # librispeech-lm-norm.txt (40.4 M sentences), the LM text of ESPnet's recipe


def run_stage(stage: int, args: List[str], log: Path) -> Dict[str, float]:
    """One stage of run.sh as a child process: wall seconds and the peak RSS of its largest process (wait4 reports
    the maximum over the child and the descendants it waited for)."""
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(["bash", str(RECIPE / "run.sh"), "--stage", str(stage), "--stop_stage", str(stage),
                                 *args], stdout=f, stderr=subprocess.STDOUT, cwd=RECIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        sys.exit(f"rehearsal: stage {stage} failed (exit {code}); log {log}:\n{tail}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def disk_mib(*paths: Path) -> float:
    total = 0
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath, name)
                if not p.is_symlink():
                    total += p.stat().st_size
    return round(total / 2**20, 1)


def make_corpus(workdir: Path, scale: float, nj: int) -> Dict[str, float]:
    """The generated corpus in LibriSpeech's layout (set directories named as LibriSpeech's) and its size."""
    synth = workdir / "synth"
    sizes = {k: max(10, round(v * scale)) for k, v in FULL.items()}
    cmd = [sys.executable, str(GENERATOR), "--output_dir", str(synth), "--nj", str(nj), "--no_progress",
           "--train_utts_per_speaker", "114", *[f"--{k}={v}" for k, v in sizes.items()]]
    subprocess.run(cmd, check=True, cwd=GENERATOR.parents[1])
    root = workdir / "LibriSpeech"
    root.mkdir(exist_ok=True)
    for name, generated in SETS.items():
        link = root / name
        if not link.exists():
            link.symlink_to(synth / generated)
    info = json.loads((synth / "corpus_info.json").read_text())
    train = info["sets"]["train-clean"]
    return {"hours": train["hours"], "utterances": train["utterances"], "words": train["words"],
            "lm_words": info["lm_text"]["words"], "generation_s": info.get("generation_seconds", 0.0)}


def make_teacher(workdir: Path) -> Path:
    """The stand-in for bert-base-uncased: a small BERT on 60k lines of the generated LM text."""
    teacher = workdir / "teacher"
    if (teacher / "config.json").exists():
        return teacher
    lines = (workdir / "synth" / "lm_text.txt").read_text(encoding="utf-8").splitlines()[:60000]
    text = workdir / "teacher_text.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "espnet_bertkd.bin.train_teacher", "--text", str(text),
                    "--output_dir", str(teacher), "--epochs", "1", "--lr", "1e-3", "--batch_size", "64",
                    "--vocab_size", "3000", "--hidden_size", "192", "--num_layers", "4", "--num_heads", "4"],
                   check=True)
    return teacher


def make_configs(workdir: Path) -> Path:
    """The recipe's inter_aed_kd config, and the same with the online teacher (its only difference)."""
    conf = workdir / "conf"
    conf.mkdir(exist_ok=True)
    cached = (RECIPE / "conf" / "train_asr_inter_aed_kd.yaml").read_text()
    if "mode: cached" not in cached:
        sys.exit(f"rehearsal: {RECIPE / 'conf' / 'train_asr_inter_aed_kd.yaml'} no longer says `mode: cached`")
    (conf / "train_asr_inter_aed_kd.yaml").write_text(cached)
    (conf / "train_asr_inter_aed_kd_online.yaml").write_text(cached.replace("mode: cached", "mode: online"))
    return conf


def projection(stage: int, wall_s: float, corpus: Dict[str, float], systems: int) -> str:
    """The stage's wall time scaled to LibriSpeech 960 h by what it reads (a linear model: the scaling check
    between two rehearsal sizes says where that holds)."""
    audio = LIBRISPEECH_960["hours"] / corpus["hours"]
    words = LIBRISPEECH_960["words"] / corpus["words"]
    utts = LIBRISPEECH_960["utterances"] / corpus["utterances"]
    if stage in (2, 10):
        hours = wall_s * audio / 3600
        return f"{hours:.1f} h on 2 CPU cores (x{audio:.0f} audio), {hours * 2 / 32 * 60:.0f} min with --nj 32 on 32"
    if stage == 1:
        return f"{wall_s * utts / 60:.0f} min (x{utts:.1f} utterances)"
    if stage == 4:
        return ("bert-base on one H200 (benchmarks/README.md): ~10 M teacher tokens at 6,250 tokens/s = ~26 min "
                "(fp32, the default), at 22,380 = ~7.5 min (--kd_dtype bfloat16), + start-up; --nj GPUs divide it")
    if stage == 5:
        return f"{wall_s * words / 60:.0f} min (x{words:.0f} words)"
    if stage in (6, 9):
        lm_words = LIBRISPEECH_LM_WORDS / corpus["lm_words"]
        return f"{wall_s * lm_words / 3600:.1f} h on 2 CPU cores (x{lm_words:.0f} LM words)" + (
            ", --nj 32 on 32: 1/16 of it" if stage == 6 else "; lmplz -S 20% streams counts to disk")
    if stage == 8:
        test_words = LIBRISPEECH_TEST_WORDS / corpus["test_words"]
        return f"{wall_s * test_words / 60:.0f} min on 2 CPU cores for the four sets (x{test_words:.0f} words)"
    if stage == 7:
        return "ESPnet's 16-layer Transformer LM: days on GPUs (its LibriSpeech recipe)"
    if stage == 11:
        return "per system: ESPnet's 960 h Conformer takes ~3.5 days on 4 V100 (README, Expected cost)"
    if stage == 12:
        per_system = wall_s / systems * 21.4 / corpus["test_hours"]
        return (f"{per_system / 60:.0f} min per system on 2 CPU cores for the four evaluation sets (21.4 h, greedy); "
                "one GPU job per set: minutes")
    return "constant"


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="everything goes here (relative: to the recipe directory)")
    p.add_argument("--scale", type=float, default=1.0, help="share of train-clean-100's utterance count")
    p.add_argument("--updates", type=int, default=200, help="stage 11 updates per system")
    p.add_argument("--nj", type=int, default=os.cpu_count() or 1)
    p.add_argument("--stages", default=" ".join(map(str, STAGES)))
    p.add_argument("--sf_decodings", default="",
                   help="stage 12 also decodes inter_aed_kd with these (e.g. beam_ngram: stage 9's lm.bin)")
    args = p.parse_args(argv)
    workdir = (RECIPE / args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    record_path = workdir / "rehearsal.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"stages": {}}
    record["corpus"] = corpus = make_corpus(workdir, args.scale, args.nj)
    test_info = json.loads((workdir / "synth" / "corpus_info.json").read_text())["sets"]["test-clean"]
    corpus["test_hours"] = test_info["hours"]
    corpus["test_utterances"] = test_info["utterances"]
    corpus["test_words"] = test_info["words"]
    teacher = make_teacher(workdir)
    conf = make_configs(workdir)
    for name in ("decode_sf.yaml", "decode_ngram.yaml", "train_lm_transformer.yaml"):  # named by run.sh, unused without --sf_systems
        if not (conf / name).exists():
            shutil.copyfile(RECIPE / "conf" / name, conf / name)
    common = [
        "--librispeech_root", str(workdir / "LibriSpeech"), "--corpus_sets", " ".join(SETS),
        "--lm_text", str(workdir / "synth" / "lm_text.txt"), "--teacher", str(teacher),
        "--datadir", str(workdir / "data"), "--python", sys.executable,
        "--expdir", str(workdir / "exp"), "--dumpdir", str(workdir / "dump"), "--results_dir", str(workdir),
        "--asr_config_dir", str(conf), "--lm_config", str(conf / "train_lm_transformer.yaml"),
        "--inference_config", str(conf / "decode_sf.yaml"), "--ngram_config", str(conf / "decode_ngram.yaml"),
        "--systems", " ".join(SYSTEMS), "--sf_systems", "", "--test_sets", "test_clean",
        "--nbpe", "300", "--nj", str(args.nj), "--inference_nj", str(args.nj), "--train_nj", "1",
        "--asr_args", f"--batch_bins 400000 --accum_grad 1 --use_amp false --num_workers 1 --max_epoch 1 "
                      f"--num_iters_per_epoch {args.updates} --log_interval 50 --keep_nbest_models 1",
    ]
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    for stage in map(int, args.stages.split()):
        print(f"rehearsal: stage {stage} ...", flush=True)
        extra = LM_STAGE_ARGS if 6 <= stage <= 9 else []
        if stage == 12 and args.sf_decodings:
            extra = ["--sf_systems", SYSTEMS[0], "--sf_decodings", args.sf_decodings]
        result = run_stage(stage, common + extra, logs / f"stage{stage}.log")
        result["disk_mib"] = disk_mib(workdir / "data", workdir / "dump", workdir / "exp")
        decoded = 1 if stage == 12 and args.sf_decodings else len(SYSTEMS)  # the skipped greedy decodes cost ~0
        result["projection_960h"] = projection(stage, result["wall_s"], corpus, decoded)
        result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        key = f"{stage} {args.sf_decodings}" if stage == 12 and args.sf_decodings else str(stage)
        record["stages"][key] = result
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"rehearsal: stage {stage}: {result}", flush=True)
    print_table(record)


def print_table(record: Dict) -> None:
    print("| stage | wall | peak RSS (largest process) | disk after (data + dump + exp) | LibriSpeech 960 h |")
    print("| --- | --- | --- | --- | --- |")
    for stage, r in sorted(record["stages"].items(), key=lambda kv: (int(kv[0].split()[0]), kv[0])):
        print(f"| {stage} | {r['wall_s'] / 60:.1f} min | {r['peak_rss_mib'] / 1024:.2f} GiB | "
              f"{r['disk_mib'] / 1024:.2f} GiB | {r['projection_960h']} |")


if __name__ == "__main__":
    main(sys.argv[1:])
