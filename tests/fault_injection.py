r"""Fault injection: kill the smoke recipe at several points, re-run it each time, and check that the final outputs
equal those of an uninterrupted run.

    python tests/fault_injection.py --workdir /tmp/faults [--points corpus,teacher,...] [--keep]

Both runs happen in copies of egs/ under --workdir (nothing is written into the repository). The interrupted run is
started, and as soon as a kill point's trigger file appears the whole process group is killed with SIGKILL (no
cleanup handlers run: the worst case, as an OOM kill or a lost node); then the recipe is started again with the same
command, which goes on to the next kill point. After the last one it runs to the end. Compared with the reference:
every decoding's hypotheses, the WER columns of RESULTS.md, the teacher's soft labels and the teacher's and ASR
models' weights. Prints one line per kill point (whether it fired, and at what) and a verdict; exit status 1 on any
difference. Not part of the pytest suite: it runs the smoke recipe twice (about 15 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
RECIPE = "egs/homophones/asr1"
COMMAND = ["./run.sh", "--smoke", "true"]


@dataclass
class KillPoint:
    name: str
    trigger: str  # glob, relative to the recipe directory: kill as soon as it matches
    delay: float = 0.0  # seconds to wait after the trigger, to land inside the work rather than at its start


# In the order the recipe reaches them. Each is inside a stage's work, after it wrote something.
POINTS = [
    KillPoint("corpus", "downloads/homophones_smoke/train-clean/*/*/*.flac"),
    KillPoint("data_prep", "data/train_clean/wav.scp"),
    KillPoint("teacher", "exp/teacher.tmp*", delay=3.0),
    KillPoint("soft_labels", "dump/kd/train_clean/log/extract.*.log", delay=4.0),
    KillPoint("lm", "exp/lm/checkpoint.pth", delay=2.0),
    KillPoint("asr_ctc", "exp/ctc/checkpoint.pth", delay=2.0),
    KillPoint("asr_kd", "exp/inter_aed_kd/checkpoint.pth", delay=2.0),
    KillPoint("decode_greedy", "exp/aed/decode_greedy/*/split*/decode.*.log", delay=3.0),
    KillPoint("decode_beam_lm", "exp/ctc/decode_beam_lm/*/split*/decode.*.log", delay=4.0),
]


def copy_recipe(dest: Path) -> Path:
    """A fresh copy of egs/TEMPLATE and the recipe, without any earlier outputs."""
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("exp*", "data", "dump", "downloads", "RESULTS.md", "results.png")
    for part in ("egs/TEMPLATE", RECIPE):
        shutil.copytree(REPO / part, dest / part, ignore=ignore)
    return dest / RECIPE


def start(recipe: Path, log: Path) -> subprocess.Popen:
    f = open(log, "a", encoding="utf-8")
    return subprocess.Popen(COMMAND, cwd=recipe, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def run_until(recipe: Path, log: Path, point: Optional[KillPoint], poll: float = 0.2) -> str:
    """Run the recipe; kill it at `point` (None: let it finish). Returns what happened."""
    proc = start(recipe, log)
    while proc.poll() is None:
        if point is not None and glob.glob(str(recipe / point.trigger)):
            time.sleep(point.delay)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed"
        time.sleep(poll)
    return "finished" if proc.returncode == 0 else f"failed (exit {proc.returncode}, see {log})"


def hypotheses(recipe: Path) -> Dict[str, str]:
    return {str(p.relative_to(recipe)): p.read_text() for p in sorted(recipe.glob("exp/*/decode_*/*/1best_recog/text"))}


def wer_table(recipe: Path) -> List[str]:
    """RESULTS.md's table rows without the speed columns (timings differ between runs)."""
    lines = (recipe / "RESULTS.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| system"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    keep = [i for i, c in enumerate(columns) if not any(w in c.lower() for w in ("rtf", "utt/s", "speed"))]
    rows = []
    for line in lines[header:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(" | ".join(cells[i] for i in keep))
    return rows


def soft_labels(recipe: Path) -> Dict[str, object]:
    import kaldiio

    out = {}
    here = os.getcwd()
    os.chdir(recipe)  # the scp files hold ark paths relative to the recipe directory
    try:
        for scp in sorted(Path("dump/kd").glob("*/kd_*.scp")):
            for key, array in kaldiio.load_scp_sequential(str(scp)):
                out[f"{scp.parent.name}/{scp.stem}/{key}"] = array
    finally:
        os.chdir(here)
    return out


def weights(recipe: Path) -> Dict[str, object]:
    import torch
    from safetensors.torch import load_file

    out = {f"teacher/{k}": v for k, v in load_file(str(recipe / "exp/teacher/model.safetensors")).items()}
    for pth in sorted(recipe.glob("exp/*/valid.*.ave.pth")):
        for k, v in torch.load(pth, map_location="cpu").items():
            out[f"{pth.parent.name}/{k}"] = v
    return out


def differences(reference: Path, interrupted: Path) -> List[str]:
    import numpy as np

    problems = []
    ref_hyps, hyps = hypotheses(reference), hypotheses(interrupted)
    if not ref_hyps:
        problems.append("the reference run decoded nothing")
    for name in sorted(set(ref_hyps) | set(hyps)):
        if ref_hyps.get(name) != hyps.get(name):
            problems.append(f"hypotheses differ: {name}")
    if wer_table(reference) != wer_table(interrupted):
        problems.append("RESULTS.md WER columns differ:\n  " + "\n  ".join(wer_table(interrupted)))
    for what, loader in (("soft labels", soft_labels), ("weights", weights)):
        ref, got = loader(reference), loader(interrupted)
        if set(ref) != set(got):
            problems.append(f"{what}: different keys ({len(set(ref) ^ set(got))} not in both)")
        for k in sorted(set(ref) & set(got)):
            a, b = np.asarray(ref[k], dtype=np.float64), np.asarray(got[k], dtype=np.float64)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
                problems.append(f"{what} differ: {k}")
                break
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--points", default=",".join(k.name for k in POINTS), help="comma-separated kill points")
    p.add_argument("--reuse_reference", action="store_true", help="keep a finished reference run in --workdir")
    p.add_argument("--compare_only", action="store_true", help="only compare the two finished runs in --workdir")
    args = p.parse_args(argv)
    if args.compare_only:
        return report(differences(args.workdir / "reference" / RECIPE, args.workdir / "interrupted" / RECIPE))
    chosen = [k for k in POINTS if k.name in args.points.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)

    ref_root = args.workdir / "reference"
    if not (args.reuse_reference and (ref_root / RECIPE / "RESULTS.md").is_file()):
        start_time = time.time()
        status = run_until(copy_recipe(ref_root), args.workdir / "reference.log", None)
        print(f"reference run: {status} in {time.time() - start_time:.0f} s", flush=True)
        if status != "finished":
            return 1
    reference = ref_root / RECIPE

    recipe = copy_recipe(args.workdir / "interrupted")
    log = args.workdir / "interrupted.log"
    start_time = time.time()
    fired = 0
    for point in chosen:
        status = run_until(recipe, log, point)
        fired += status == "killed"
        print(f"kill point {point.name:15s} (trigger {point.trigger}): {status}", flush=True)
        if status.startswith("failed"):
            return 1
    status = run_until(recipe, log, None)
    print(f"final re-run: {status}; interrupted run took {time.time() - start_time:.0f} s in all", flush=True)
    if status != "finished":
        return 1
    print(f"{fired} of {len(chosen)} kill points fired")
    return report(differences(reference, recipe))


def report(problems: List[str]) -> int:
    for problem in problems:
        print("DIFFERENT:", problem)
    print("outputs " + ("identical to the uninterrupted run" if not problems else f"differ in {len(problems)} ways"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
