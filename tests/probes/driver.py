"""The stage driver (egs/TEMPLATE/asr1/asr.sh): path options with whitespace, stages that report success without
their outputs, user strings written into train.sh and evaluated a second time, and two runs at once in one
directory. The training itself is a stub interpreter (as tests/test_teacher_source.py does it): it records the
argv asr_train got, writes what training writes (or not), and can wait for a flag file; every other module runs
on the real interpreter. tests/test_reliability_driver.py uses the same scaffolding.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import yaml

try:
    from probes.common import Case, Outcome, first_line, run_cli
except ImportError:  # imported as tests.probes.driver
    from .common import Case, Outcome, first_line, run_cli

ASR_SH = Path(__file__).resolve().parents[2] / "egs/TEMPLATE/asr1/asr.sh"

STUB = """#!/usr/bin/env bash
# asr_train: record argv (NUL-separated) in $out/argv, optionally wait for $STUB_WAIT, then write config.yaml and the
# model unless STUB_NO_OUTPUT is set. Anything else: the real interpreter.
case " $* " in *" espnet_bertkd.bin.asr_train "*)
  out=; prev=; for a in "$@"; do [ "$prev" = --output_dir ] && out=$a; prev=$a; done
  mkdir -p "$out"; printf '%s\\0' "$@" > "$out/argv"
  if [ -n "${STUB_WAIT:-}" ]; then
    echo "training $out" >> "$STUB_WAIT.started"
    while [ ! -e "$STUB_WAIT" ]; do sleep 0.1; done
  fi
  echo "trained by pid $$"
  [ -n "${STUB_NO_OUTPUT:-}" ] || touch "$out/config.yaml" "$out/valid.cer_ctc.ave.pth"
  exit 0 ;;
esac
exec PYTHON "$@"
"""


def make_recipe(root: Path, teacher: str = "exp/teacher", stats_dir: str = "exp/asr_stats_char") -> Path:
    """A recipe directory ready for stage 11: a CTC and a cached-mode KD config, collect-stats done, the stub."""
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "train_asr_ctc.yaml").write_text(yaml.safe_dump({"model": "bertkd", "model_conf": {"kd_layers": []}}))
    (conf / "train_asr_kd.yaml").write_text(yaml.safe_dump(
        {"model": "bertkd", "model_conf": {"kd_layers": [1], "teacher": {"model": teacher, "mode": "cached"}}}))
    stats = root / stats_dir / "train/feats_stats.npz"
    stats.parent.mkdir(parents=True, exist_ok=True)
    stats.touch()
    python = root / "python"
    python.write_text(STUB.replace("PYTHON", sys.executable))
    python.chmod(0o755)
    return root


def asr_sh_args(root: Path, *args: str) -> List[str]:
    return ["bash", str(ASR_SH), "--python", str(root / "python"), "--train_set", "train", "--valid_set", "dev",
            "--test_sets", "test", "--token_type", "char", "--stage", "11", "--stop_stage", "11", "--systems",
            "ctc kd", *args]


def asr_sh(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_cli(asr_sh_args(root, *args), cwd=root, timeout=300, **env)


def argv_of(system_dir: Path) -> List[str]:
    return (system_dir / "argv").read_text().split("\0")[:-1]


# The option values of case 2: command substitution, backticks, ;, braces, a glob, quotes; each must arrive as it is
HOSTILE_ARGS = ("--note $(touch${IFS}pwned_dollar) `touch${IFS}pwned_backtick` a;touch${IFS}pwned_semicolon "
                "{pwned_a,pwned_b} * 'q\"uote' \\back")
HOSTILE_EXPDIR = "exp_$(touch${IFS}pwned_expdir)"
HOSTILE_TEACHER = "/models/bert$(touch${IFS}pwned_teacher)"
PWNED = ["pwned_dollar", "pwned_backtick", "pwned_semicolon", "pwned_a", "pwned_b", "pwned_expdir", "pwned_teacher"]


# ------------------------------------------------------------------------------------------------------------ cases
def case_stage_without_outputs(workdir: Path) -> Outcome:
    """1: --expdir "exp space" used to print Finished (exit 0) and train nothing; and a training that writes no
    model must fail the stage."""
    root = make_recipe(workdir)
    spaced = asr_sh(root, "--expdir", "exp space")
    if spaced.returncode == 0:
        finished = first_line(spaced.stdout, "Finished") or "no output"
        return Outcome("silent", f"--expdir 'exp space': exit 0, {finished}")
    if "--expdir" not in spaced.stderr or (root / "exp space").exists():
        return Outcome("crash", f"--expdir 'exp space': exit {spaced.returncode}: {first_line(spaced.stderr)}")
    nothing = asr_sh(root, STUB_NO_OUTPUT="1")
    if nothing.returncode == 0:
        return Outcome("silent", "a training that wrote no model: stage 11 exit 0")
    message = first_line(nothing.stderr, "did not produce")
    if "config.yaml" not in message:
        return Outcome("crash", f"a training that wrote no model: {first_line(nothing.stderr)}")
    return Outcome("ok", f"{first_line(spaced.stderr)} | {message}")


def case_user_strings_evaluated(workdir: Path) -> Outcome:
    """2: --asr_args, --expdir and --teacher written into train.sh unquoted ran `$(touch FILE)`."""
    root = make_recipe(workdir, teacher="exp/teacher", stats_dir="stats")
    (root / "a_file_for_the_glob").touch()
    proc = asr_sh(root, "--asr_args", HOSTILE_ARGS, "--expdir", HOSTILE_EXPDIR, "--teacher", HOSTILE_TEACHER,
                  "--asr_stats_dir", "stats")
    made = [p for p in PWNED if (root / p).exists()]
    if made:
        return Outcome("code-exec", f"created {', '.join(made)} (exit {proc.returncode})")
    if proc.returncode != 0:
        return Outcome("crash", f"exit {proc.returncode}: {first_line(proc.stderr) or first_line(proc.stdout)}")
    argv = argv_of(root / HOSTILE_EXPDIR / "kd")
    expected = HOSTILE_ARGS.split()
    if argv[-len(expected):] != expected:
        return Outcome("silent", f"asr_train got {argv[-len(expected):]!r}, not the words of --asr_args")
    # ESPnet parses a --model_conf value as YAML: what it gets is the parsed value
    teacher = [yaml.safe_load(a.split("=", 1)[1]) for a in argv if a.startswith("teacher.model=")]
    if teacher != [HOSTILE_TEACHER] or argv[argv.index("--output_dir") + 1] != f"{HOSTILE_EXPDIR}/kd":
        return Outcome("silent", "--teacher or --expdir did not reach asr_train verbatim")
    return Outcome("ok", f"no file created; asr_train got {len(expected)} words of --asr_args, --teacher and "
                         "--expdir verbatim")


def start_holder(root: Path, flag: Path) -> subprocess.Popen:
    """A first asr.sh that holds its locks until `flag` exists (its training waits for it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STUB_WAIT": str(flag)}
    proc = subprocess.Popen(asr_sh_args(root), cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    started = Path(f"{flag}.started")
    deadline = time.time() + 120
    while not started.exists():
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate(timeout=10) if proc.poll() is not None else ("", "")
            raise RuntimeError(f"the first asr.sh did not start training: {err[-500:] or out[-500:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen, flag: Path) -> None:
    """Kill a holder started by start_holder and release its stub trainer: the job launcher starts jobs in their own
    process groups, so the SIGKILL to asr.sh's group leaves the stub waiting for `flag`, which is created here."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    flag.touch()


def case_two_runs_at_once(workdir: Path) -> Outcome:
    """13: a second run in the same directory while the first one runs."""
    root = make_recipe(workdir)
    flag = workdir / "release"
    first = start_holder(root, flag)
    try:
        script = (root / "exp/ctc/train.sh").read_text()
        second = asr_sh(root)
        if second.returncode == 0:
            return Outcome("silent", "the second asr.sh ran beside the first (exit 0)")
        message = first_line(second.stderr, ".lock")
        if f"pid {first.pid}" not in message or (root / "exp/ctc/train.sh").read_text() != script:
            return Outcome("crash", f"second run: exit {second.returncode}: {first_line(second.stderr)}")
        flag.touch()
        out, err = first.communicate(timeout=120)
        if first.returncode != 0 or not (root / "exp/kd/valid.cer_ctc.ave.pth").exists():
            return Outcome("crash", f"the first run failed after the second was refused: {err[-300:]}")
        return Outcome("ok", message.replace(str(root) + "/", ""))
    finally:
        stop(first, flag)


CASES = [
    Case(1, "asr.sh stage without its outputs / path with a space", case_stage_without_outputs),
    Case(2, "user strings re-evaluated by the shell in train.sh", case_user_strings_evaluated),
    Case(13, "two runs at once in one recipe directory", case_two_runs_at_once),
]
