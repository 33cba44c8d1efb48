"""The stage driver's reliability (issue cases 1, 2 and 13): path options asr.sh cannot handle are refused before any
stage runs, a stage that did not write its outputs fails naming them, option values reach the programs verbatim
(never evaluated by a shell a second time), and one run at a time holds an --expdir. The training is a stub
interpreter (tests/probes/driver.py): it records the argv asr_train got."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from espnet_bertkd.recipe.bin import lock as lock_cli
from probes.driver import (HOSTILE_ARGS, HOSTILE_EXPDIR, HOSTILE_TEACHER, PWNED, argv_of, asr_sh, asr_sh_args,
                           make_recipe, start_holder, stop)


# ------------------------------------------------------------------------------------- case 1: outputs, paths
@pytest.mark.parametrize("option", ["expdir", "datadir", "dumpdir", "lm_exp", "asr_stats_dir", "results_dir",
                                    "asr_config_dir", "lm_config", "inference_config"])
def test_paths_with_whitespace_are_refused_up_front(tmp_path, option):
    root = make_recipe(tmp_path)
    proc = asr_sh(root, f"--{option}", "x space")
    assert proc.returncode != 0 and "Finished" not in proc.stdout
    assert f"--{option} 'x space': paths with whitespace are not supported" in proc.stderr, proc.stderr
    assert "Stage" not in proc.stdout  # before any stage
    assert not (root / "x space").exists() and not (root / "exp/ctc").exists()


def test_commas_and_job_in_paths_are_refused(tmp_path):
    root = make_recipe(tmp_path)
    proc = asr_sh(root, "--datadir", "da,ta")
    assert proc.returncode != 0 and "--datadir 'da,ta': commas are not supported" in proc.stderr
    proc = asr_sh(root, "--expdir", "exp_JOBS")
    assert proc.returncode != 0 and "--expdir 'exp_JOBS': 'JOB' is not supported" in proc.stderr
    assert not (root / "exp_JOBS").exists()


def test_training_without_outputs_fails_the_stage(tmp_path):
    """The stub training exits 0 but writes neither config.yaml nor the model: stage 11 must not report success."""
    root = make_recipe(tmp_path)
    proc = asr_sh(root, STUB_NO_OUTPUT="1")
    assert proc.returncode != 0 and "Finished" not in proc.stdout
    assert "Stage 11 (training ctc, log exp/ctc.train.log) did not produce exp/ctc/config.yaml" in proc.stderr
    # decoding then names the missing model instead of a deep ESPnet error
    proc = asr_sh(root, "--stage", "12", "--stop_stage", "12")
    assert proc.returncode != 0 and "Stage 12: exp/ctc/config.yaml is missing (stage 11 trains ctc)" in proc.stderr
    # with outputs, the same stage succeeds and the queue ran each system's train.sh
    proc = asr_sh(root)
    assert proc.returncode == 0 and "Finished stages 11..11" in proc.stdout, proc.stderr
    assert (root / "exp/train_jobs/scripts.txt").read_text() == "exp/ctc/train.sh\nexp/kd/train.sh\n"
    argvs = [argv_of(root / "exp" / s) for s in ("ctc", "kd")]
    assert [a[a.index("--output_dir") + 1] for a in argvs] == ["exp/ctc", "exp/kd"]
    assert all(a[a.index("--multiprocessing_distributed") + 1] == "true" for a in argvs)  # ESPnet's DDP


def test_a_missing_training_script_fails_its_job(tmp_path):
    """The queue runs train_jobs/job.N.sh, which runs the system's train.sh by a quoted path: gone, the job fails."""
    root = make_recipe(tmp_path)
    assert asr_sh(root).returncode == 0
    job = root / "exp/train_jobs/job.1.sh"
    os.remove(root / "exp/ctc/train.sh")
    proc = subprocess.run(["bash", str(job)], cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0 and "exp/ctc/train.sh" in proc.stderr


# ------------------------------------------------------------------------------- case 2: no shell re-evaluation
def test_asr_args_reach_training_verbatim(tmp_path):
    root = make_recipe(tmp_path)
    (root / "a_file_for_the_glob").touch()
    proc = asr_sh(root, "--asr_args", HOSTILE_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in PWNED if (root / p).exists()] == []
    words = HOSTILE_ARGS.split()  # split at whitespace, nothing else: $(...), `...`, ;, {a,b}, * and quotes kept
    assert "*" in words and "{pwned_a,pwned_b}" in words and "'q\"uote'" in words
    for system in ("ctc", "kd"):
        assert argv_of(root / "exp" / system)[-len(words):] == words
    # train.sh run by hand gives the same argv, and still runs nothing else
    os.remove(root / "exp/kd/argv")
    subprocess.run(["bash", "exp/kd/train.sh"], cwd=root, check=True)
    assert argv_of(root / "exp/kd")[-len(words):] == words and [p for p in PWNED if (root / p).exists()] == []


def test_expdir_and_teacher_reach_training_verbatim(tmp_path):
    root = make_recipe(tmp_path, stats_dir="stats")
    proc = asr_sh(root, "--expdir", HOSTILE_EXPDIR, "--teacher", HOSTILE_TEACHER, "--asr_stats_dir", "stats")
    assert proc.returncode == 0, proc.stderr
    assert [p for p in PWNED if (root / p).exists()] == []
    argv = argv_of(root / HOSTILE_EXPDIR / "kd")
    assert argv[argv.index("--output_dir") + 1] == f"{HOSTILE_EXPDIR}/kd"
    override = next(a for a in argv if a.startswith("teacher.model="))
    assert yaml.safe_load(override.split("=", 1)[1]) == HOSTILE_TEACHER  # what ESPnet's --model_conf parsing gives
    assert (root / f"{HOSTILE_EXPDIR}.train.log").exists() is False  # the log is <expdir>/<system>.train.log
    assert "trained by pid" in (root / HOSTILE_EXPDIR / "kd.train.log").read_text()


@pytest.mark.parametrize("teacher", ["/m/it's #2: x", "123", "/m/{a: b}"])
def test_teacher_reaches_espnet_as_the_same_string(tmp_path, teacher):
    """ESPnet parses a --model_conf value as YAML: a path with `#`, `: `, quotes or digits only stays itself quoted."""
    root = make_recipe(tmp_path, stats_dir="stats")
    proc = asr_sh(root, "--teacher", teacher, "--asr_stats_dir", "stats")
    assert proc.returncode == 0, proc.stderr
    argv = argv_of(root / "exp" / "kd")
    override = next(a for a in argv if a.startswith("teacher.model="))
    assert yaml.safe_load(override.split("=", 1)[1]) == teacher


# ----------------------------------------------------------------------------------- case 13: one run at a time
def test_second_run_in_one_expdir_is_refused(tmp_path):
    root = make_recipe(tmp_path)
    flag = tmp_path / "release"
    first = start_holder(root, flag)
    try:
        written = {p: p.read_bytes() for p in (root / "exp").rglob("*") if p.is_file()}
        second = asr_sh(root)
        assert second.returncode != 0 and "Stage" not in second.stdout
        assert f"another run holds the lock {root}/exp/.lock (pid {first.pid}" in second.stderr \
            or f"another run holds the lock exp/.lock (pid {first.pid}" in second.stderr, second.stderr
        # nothing of the first run was touched: scripts, logs, argv
        assert {p: p.read_bytes() for p in (root / "exp").rglob("*") if p.is_file()} == written
        # a run in another --expdir (as local/evidence.sh runs them) goes ahead beside it
        other = asr_sh(root, "--expdir", "exp2", "--asr_stats_dir", "exp/asr_stats_char")
        assert other.returncode == 0, other.stderr
        flag.touch()
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert "trained by pid" in (root / "exp/ctc.train.log").read_text()
        assert (root / "exp/kd/valid.cer_ctc.ave.pth").exists()
    finally:
        stop(first, flag)


def test_lock_goes_with_a_killed_run(tmp_path):
    root = make_recipe(tmp_path)
    first = start_holder(root, tmp_path / "never")
    stop(first, tmp_path / "never")  # SIGKILL to the whole run
    proc = asr_sh(root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "exp/.lock").read_text().strip().isdigit()


def test_lock_helper_refuses_waits_and_retries(tmp_path):
    path = tmp_path / ".lock"
    holder = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert lock_cli.lock(holder, str(path), 4242) == 0 and path.read_text() == "4242\n"
    other = os.open(path, os.O_WRONLY | os.O_APPEND)
    assert lock_cli.lock(other, str(path), 1) == lock_cli.HELD  # refused, the file still names the holder
    assert path.read_text() == "4242\n"

    def release():  # the holder removes the file and lets go, as asr.sh's shared-stage lock does
        time.sleep(0.3)
        os.remove(path)
        os.close(holder)

    threading.Thread(target=release).start()
    assert lock_cli.lock(other, str(path), 1, wait=True) == lock_cli.STALE  # locked a removed file: retry
    os.close(other)
    fresh = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert lock_cli.lock(fresh, str(path), 7) == 0 and path.read_text() == "7\n"
    fcntl.flock(fresh, fcntl.LOCK_UN)
    os.close(fresh)


def test_lock_cli_message(tmp_path, capsys):
    path = tmp_path / ".lock"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(path)!r}, os.O_WRONLY | os.O_APPEND)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as exit_:
            lock_cli.main(["--fd", str(fd), "--file", str(path), "--pid", "1", "--what", "one run per --expdir"])
        assert exit_.value.code == lock_cli.HELD
        err = capsys.readouterr().err
        assert f"another run holds the lock {path} (pid {holder.pid}: " in err and "one run per --expdir" in err
    finally:
        holder.kill()
        holder.wait()
        os.close(fd)


def test_shared_stages_lock_is_removed_after_use(tmp_path):
    """Stages 1-5 hold ${datadir}/.shared_stages.lock while they run and remove it after (data/ holds only the data
    sets)."""
    root = make_recipe(tmp_path)
    proc = subprocess.run(asr_sh_args(root, "--stage", "4", "--stop_stage", "4", "--systems", "ctc"), cwd=root,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "Stage 4: skip" in proc.stdout, proc.stderr
    assert (root / "data").is_dir() and list((root / "data").iterdir()) == []
