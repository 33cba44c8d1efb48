"""Probe cases 3 and 10: cached soft labels that no longer match the training data (edited transcripts; a deleted
ark), provoked through the real entry points: extract_soft_labels, then asr_train's preflight."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

from probes.common import Case, Outcome, first_line, run_cli

TEXTS = ["THEIR HOUSE IS OVER THERE", "I WANT TO GO TOO", "THE KNIGHT RODE AT NIGHT", "WRITE THE RIGHT ANSWER",
         "WE SEE THE SEA FROM HERE", "TWO DOGS RAN TO THE PARK"]
UTTS = [f"spk{i % 2}-{i:04d}" for i in range(12)]


def setup(workdir: Path) -> Path:
    """A tiny teacher, a config in cached mode, a data dir's text and its extracted soft labels."""
    from espnet_bertkd.kd.build_teacher import build_bert

    teacher = build_bert(TEXTS * 4, str(workdir / "teacher"), vocab_size=120, seed=0)
    (workdir / "train.yaml").write_text(
        "model: bertkd\nencoder: transformer\nencoder_conf: {num_blocks: 2, output_size: 16}\n"
        f"model_conf: {{kd_layers: [1], teacher: {{model: {teacher}, mode: cached, topk: 4}}}}\n")
    (workdir / "data").mkdir()
    write_text(workdir, {})
    proc = extract(workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"extract_soft_labels failed: {proc.stderr[-300:]}")
    return workdir


def write_text(workdir: Path, edits: dict) -> None:
    (workdir / "data/text").write_text(
        "".join(f"{u} {edits.get(u, TEXTS[i % len(TEXTS)])}\n" for i, u in enumerate(UTTS)))


def extract(workdir: Path) -> subprocess.CompletedProcess:
    return run_cli(["-m", "espnet_bertkd.bin.extract_soft_labels", "--asr_config", "train.yaml", "--text",
                    "data/text", "--output_dir", "kd", "--nj", "2", "--chunk_size", "4"], workdir)


def train(workdir: Path) -> subprocess.CompletedProcess:
    data: List[str] = []
    for split in ("train", "valid"):
        flag = f"--{split}_data_path_and_name_and_type"
        data += [flag, "data/wav.scp,speech,sound", flag, "data/text,text,text",
                 flag, "kd/kd_token.scp,kd_token,kaldi_ark", flag, "kd/kd_prob.scp,kd_prob,kaldi_ark"]
    return run_cli(["-m", "espnet_bertkd.bin.asr_train", "--config", "train.yaml", "--token_type", "char",
                    "--token_list", "tokens.txt", "--output_dir", "exp", *data], workdir)


def passed_soft_labels(proc: subprocess.CompletedProcess) -> bool:
    """The preflight went past the soft labels: it stops at the data check (there is no wav.scp here)."""
    return "data/wav.scp" in proc.stderr and "no such file" in proc.stderr


def refusal(proc: subprocess.CompletedProcess) -> str:
    """The preflight's message (the line after the launcher's `not started, the preflight refused the run`)."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if "preflight refused" in line:
            return lines[i + 1][:200]
    return first_line(lines[-1] if lines else "")


def edited_transcripts(workdir: Path) -> Outcome:
    setup(workdir)
    write_text(workdir, {"spk1-0003": "THE KNIGHT RODE AT NIGHT AGAIN", "spk0-0008": "I WANT TO GO THERE TOO"})
    proc = train(workdir)
    if passed_soft_labels(proc):
        return Outcome("silent", "the preflight passed soft labels extracted from the transcripts before the edit")
    message = refusal(proc)
    if "'spk1-0003', 'spk0-0008'" not in proc.stderr or "extract_soft_labels" not in proc.stderr:
        return Outcome("crash", f"refused without naming the edited utterances and the fix: {message}")
    rerun = extract(workdir)  # what asr.sh's stage 4 runs again
    after = train(workdir)
    if rerun.returncode != 0 or not passed_soft_labels(after):
        return Outcome("silent", f"re-running extraction did not repair them: {refusal(after) or rerun.stderr[-200:]}")
    return Outcome("ok", f"refused ({message[:150]}); a re-run of extraction repaired them")


def deleted_ark(workdir: Path) -> Outcome:
    setup(workdir)
    ark = workdir / "kd/split2/2/kd_prob.0.ark"
    ark.unlink()
    proc = train(workdir)
    if passed_soft_labels(proc):
        return Outcome("silent", f"the preflight passed an scp pointing into the deleted {ark.name}")
    message = refusal(proc)
    if "kd/kd_prob.scp" not in proc.stderr or "kd/split2/2/kd_prob.0.ark" not in proc.stderr \
            or "utterance 'spk0-0006'" not in proc.stderr:
        return Outcome("crash", f"refused without naming the scp, the ark and an utterance: {message}")
    rerun = extract(workdir)
    after = train(workdir)
    if rerun.returncode != 0 or not passed_soft_labels(after):
        return Outcome("silent", f"re-running extraction did not redo the lost labels: {refusal(after)}")
    return Outcome("ok", f"refused ({message[:150]}); a re-run of extraction redid them")


CASES = [
    Case(3, "soft labels of edited transcripts", edited_transcripts),
    Case(10, "soft-label scp pointing to a deleted ark", deleted_ark),
]
