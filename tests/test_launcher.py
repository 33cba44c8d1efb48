"""The job launcher: JOB substitution, per-job run.pl-style logs, the parallelism bound (checked with a lock-guarded
counter the jobs keep themselves, not with timings), failure reporting, and the Slurm array job it would submit
(through a fake `sbatch` on PATH that runs the array tasks locally)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List

import pytest

from espnet_bertkd.recipe.bin import run_jobs as cli
from espnet_bertkd.recipe.bin import split_scp as split_cli
from espnet_bertkd.utils.fileio import DataError
from espnet_bertkd.recipe.jobs import (THREAD_VARS, JobsFailed, ResourceError, Resources, SlurmConfig, run_jobs,
                                       run_local, slurm_script, visible_gpus)
from espnet_bertkd.recipe.scp import merge_scp, split_scp
from espnet_bertkd.utils.jobs import split_sizes

# A job that records its start and end in EVENTS, and the number of jobs running at its start (RUNNING is a counter
# file all jobs update under one lock).
COUNTING_JOB = r"""
import fcntl, sys, time
job, d = sys.argv[1], sys.argv[2]
def update(delta, event):
    with open(d + "/lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(d + "/running") as f:
                n = int(f.read() or 0)
        except FileNotFoundError:
            n = 0
        n += delta
        with open(d + "/running", "w") as f:
            f.write(str(n))
        with open(d + "/events", "a") as f:
            f.write(f"{event} {job} {n}\n")
update(+1, "start")
time.sleep(0.2)
update(-1, "end")
"""


def events(d: Path) -> List[List[str]]:
    return [line.split() for line in (d / "events").read_text().splitlines()]


def test_jobs_run_with_substitution_and_logs(tmp_path):
    out = tmp_path / "out"
    code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2]); print('hi', sys.argv[2])"
    results = run_jobs([sys.executable, "-c", code, f"{out}.JOB.txt", "JOB"], nj=3, log=tmp_path / "log" / "job.JOB.log")
    assert [(r.job, r.returncode, r.log) for r in results] == [
        (j, 0, tmp_path / "log" / f"job.{j}.log") for j in (1, 2, 3)]
    for j in (1, 2, 3):
        assert Path(f"{out}.{j}.txt").read_text() == str(j)
        log = (tmp_path / "log" / f"job.{j}.log").read_text().splitlines()
        assert log[0].startswith("# ") and f"{out}.{j}.txt {j}" in log[0]  # the substituted command
        assert log[1].startswith("# Started at ") and log[3] == f"hi {j}"
        assert log[-2].startswith("# Accounting: time=") and log[-1].startswith("# Ended (code 0) at ")


def test_single_argument_is_shell_code(tmp_path):
    run_jobs([f"echo part JOB | tr a-z A-Z > {tmp_path}/o.JOB"], nj=2, log=tmp_path / "log.JOB")
    assert (tmp_path / "o.1").read_text() == "PART 1\n" and (tmp_path / "o.2").read_text() == "PART 2\n"


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_max_parallel(tmp_path, max_parallel):
    script = tmp_path / "job.py"
    script.write_text(COUNTING_JOB)
    run_local([sys.executable, str(script), "JOB", str(tmp_path)], nj=5, log=tmp_path / "log/JOB.log",
              max_parallel=max_parallel)
    ev = events(tmp_path)
    assert sorted(int(e[1]) for e in ev if e[0] == "start") == [1, 2, 3, 4, 5]
    assert max(int(e[2]) for e in ev if e[0] == "start") <= max_parallel
    assert (tmp_path / "running").read_text() == "0"
    if max_parallel == 1:  # strictly one after the other, in job order
        assert [e[:2] for e in ev] == [[kind, str(j)] for j in range(1, 6) for kind in ("start", "end")]


def test_failure_names_job_and_log(tmp_path):
    log = tmp_path / "log" / "decode.JOB.log"
    cmd = [f"echo running JOB; if [ JOB = 2 ] || [ JOB = 4 ]; then echo boom JOB >&2; exit 3; fi; "
           f"touch {tmp_path}/ok.JOB"]
    with pytest.raises(JobsFailed) as e:
        run_jobs(cmd, nj=4, log=log, max_parallel=2)
    msg = str(e.value)
    assert msg.startswith("2 of 4 job(s) failed:")
    assert f"job 2: exit code 3, log {tmp_path}/log/decode.2.log" in msg
    assert f"job 4: exit code 3, log {tmp_path}/log/decode.4.log" in msg
    assert "boom 2" in msg  # the tail of the first failed log
    assert [j for j in range(1, 5) if (tmp_path / f"ok.{j}").exists()] == [1, 3]  # the others still ran
    assert "# Ended (code 3)" in (tmp_path / "log" / "decode.2.log").read_text()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="put JOB in the log path"):
        run_jobs(["true"], nj=2, log=tmp_path / "one.log")
    with pytest.raises(ValueError, match="--nj must be at least 1"):
        run_jobs(["true"], nj=0, log=tmp_path / "x.JOB.log")
    with pytest.raises(ValueError, match="backend must be local or slurm"):
        run_jobs(["true"], nj=1, log=tmp_path / "x.log", backend="sge")


def test_cli(tmp_path, capsys):
    cli.main(["--nj", "2", "--log", f"{tmp_path}/l.JOB.log", "--", "touch", f"{tmp_path}/t.JOB"])
    assert (tmp_path / "t.1").exists() and (tmp_path / "t.2").exists()
    with pytest.raises(SystemExit) as e:
        cli.main(["--nj", "2", "--log", f"{tmp_path}/f.JOB.log", "--", "bash", "-c", "exit $((JOB - 1))"])
    assert f"1 of 2 job(s) failed:\n  job 2: exit code 1, log {tmp_path}/f.2.log" in str(e.value.code)
    with pytest.raises(SystemExit):
        cli.main(["--nj", "2", "--log", f"{tmp_path}/f.JOB.log", "touch", "x"])  # no "--"
    assert "put the command after --" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# Slurm, with a fake sbatch that records its arguments and runs each array task with SLURM_ARRAY_TASK_ID set.

FAKE_SBATCH = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_SBATCH_ARGS"
script="${@: -1}"
array=""
for a in "$@"; do case "$a" in --array=*) array="${a#--array=}";; esac; done
range="${array%%%*}"
rc=0
for i in $(seq "${range%-*}" "${range#*-}"); do
  SLURM_ARRAY_TASK_ID=$i bash "$script" || rc=1
done
echo 12345
exit $rc
"""


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_ARGS", str(tmp_path / "sbatch_args"))
    return tmp_path / "sbatch_args"


def test_slurm_array_job(tmp_path, fake_sbatch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = "exp/log/extract.JOB.log"
    results = run_jobs(["python3", "-c", "print('task', 'JOB')"], nj=3, log=log, backend="slurm", max_parallel=2,
                     slurm_opts="--mem 4G -p gpu --gres=gpu:1")
    assert [(r.job, r.returncode) for r in results] == [(1, 0), (2, 0), (3, 0)]
    script = tmp_path / "exp/log/q/extract.sh"
    assert fake_sbatch.read_text().splitlines() == [
        "--wait", "--parsable", "--job-name=extract", "--array=1-3%2", "--output=exp/log/q/extract.%a.out",
        "--mem", "4G", "-p", "gpu", "--gres=gpu:1", "exp/log/q/extract.sh"]
    body = script.read_text()
    assert f"cd {tmp_path} || exit 1" in body
    assert "  2) log=exp/log/extract.2.log; cmd='python3 -c " in body and "JOB" not in body
    for j in (1, 2, 3):
        text = (tmp_path / f"exp/log/extract.{j}.log").read_text().splitlines()
        assert text[0] == f"# python3 -c 'print('\"'\"'task'\"'\"', '\"'\"'{j}'\"'\"')'"
        assert text[3] == f"task {j}" and text[-1].startswith("# Ended (code 0)")


def test_slurm_cli_single_option(tmp_path, fake_sbatch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(["--backend", "slurm", "--nj", "1", "--log", "l/x.JOB.log", "--slurm_opts", "--mem=8G", "--", "true"])
    assert fake_sbatch.read_text().splitlines()[-2:] == ["--mem=8G", "l/q/x.sh"]
    assert (tmp_path / "l/x.1.log").read_text().splitlines()[-1].startswith("# Ended (code 0)")


def test_slurm_failure_and_script(tmp_path, fake_sbatch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobsFailed) as e:
        run_jobs(["test JOB -ne 3"], nj=3, log="log/s.JOB.log", backend="slurm")
    assert "job 3: exit code 1, log log/s.3.log" in str(e.value) and "job 1" not in str(e.value)
    assert "--array=1-3" in fake_sbatch.read_text().splitlines()
    script = slurm_script(["echo JOB"], 2, "l/JOB.log", cwd="/w")
    assert script.splitlines()[2:6] == ["cd /w || exit 1", 'case "${SLURM_ARRAY_TASK_ID}" in',
                                        "  1) log=l/1.log; cmd='echo 1' ;;", "  2) log=l/2.log; cmd='echo 2' ;;"]


def test_slurm_without_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="sbatch not found on PATH"):
        run_jobs(["true"], nj=1, log="x.log", backend="slurm")


# --------------------------------------------------------------------------------------------------------------
# splitting a key file for the jobs, merging their outputs


def test_split_and_merge_scp(tmp_path, capsys):
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"u{i} /a/u{i}.flac\n" for i in range(7)))
    parts = [tmp_path / f"keys.{j}.scp" for j in (1, 2, 3)]
    # the one job split (espnet_bertkd.utils.jobs, soft-label extraction's): the last parts take the remainder
    assert split_scp(scp, parts) == [2, 2, 3] == split_sizes(7, 3)
    assert parts[0].read_text() == "u0 /a/u0.flac\nu1 /a/u1.flac\n"
    assert parts[2].read_text() == "u4 /a/u4.flac\nu5 /a/u5.flac\nu6 /a/u6.flac\n"
    assert "".join(p.read_text() for p in parts) == scp.read_text()
    with pytest.raises(DataError, match="7 lines cannot be split into 8"):
        split_scp(scp, [tmp_path / f"k{j}" for j in range(8)])
    # the jobs' outputs come back in any order; the merge sorts by key (C order)
    (tmp_path / "out.1").write_text("u9 NINE\nu1\n")
    (tmp_path / "out.2").write_text("u10 TEN\n")
    assert merge_scp([tmp_path / "out.1", tmp_path / "out.2"], tmp_path / "text") == 3
    assert (tmp_path / "text").read_text() == "u1\nu10 TEN\nu9 NINE\n"
    (tmp_path / "out.2").write_text("u10 TEN\nu9 AGAIN\n")
    with pytest.raises(DataError) as e:
        merge_scp([tmp_path / "out.1", tmp_path / "out.2"], tmp_path / "text")
    assert f"{tmp_path}/out.2:2: utterance u9: also in {tmp_path}/out.1:1" in str(e.value)
    split_cli.main(["--nj", "2", str(scp), f"{tmp_path}/split.JOB.scp"])
    assert (tmp_path / "split.2.scp").read_text().splitlines() == [f"u{i} /a/u{i}.flac" for i in (3, 4, 5, 6)]
    split_cli.main(["--merge", "--nj", "2", f"{tmp_path}/split.JOB.scp", f"{tmp_path}/merged.scp"])
    assert (tmp_path / "merged.scp").read_text() == scp.read_text()
    assert "wrote" in capsys.readouterr().out


def test_local_jobs_share_the_cores(tmp_path, monkeypatch):
    """N local jobs at once get cores/N threads each (oversubscribed PyTorch threads spin), unless the user set it."""
    from espnet_bertkd.recipe.jobs import job_environment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert job_environment(parallel=2, cpus=8)["OMP_NUM_THREADS"] == "4"
    assert job_environment(parallel=16, cpus=8)["MKL_NUM_THREADS"] == "1"
    run_jobs(["bash", "-c", f"echo $OMP_NUM_THREADS > {tmp_path}/t.JOB"], nj=2, log=tmp_path / "log.JOB",
           max_parallel=1)
    assert (tmp_path / "t.1").read_text().strip() == str(max(1, os.cpu_count() or 1))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert job_environment(parallel=2, cpus=8)["OMP_NUM_THREADS"] == "3"


# --------------------------------------------------------------------------------------------------------------
# Kaldi's interface (cmd.sh's train_cmd / cuda_cmd / decode_cmd), GPUs shared out locally, ESPnet's slurm.conf


def test_kaldi_form_cli(tmp_path, monkeypatch):
    for name in THREAD_VARS:  # the default share of the cores, whatever threads the suite runs with
        monkeypatch.delenv(name, raising=False)
    cli.main(["--num_threads", "1", "JOB=1:3", f"{tmp_path}/k.JOB.log", "touch", f"{tmp_path}/k.JOB"])
    assert all((tmp_path / f"k.{j}").exists() for j in (1, 2, 3))
    cli.main([f"{tmp_path}/one.log", "bash", "-c", "echo $OMP_NUM_THREADS"])  # no range: one job
    assert (tmp_path / "one.log").read_text().splitlines()[3] == str(max(1, os.cpu_count() or 1))
    with pytest.raises(SystemExit) as e:
        cli.main(["JOB=2:3", f"{tmp_path}/x.JOB.log", "true"])
    assert "job ranges start at 1" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        cli.main(["JOB=1:2", f"{tmp_path}/x.JOB.log"])
    assert "give the log and the command" in str(e.value.code)


def test_local_gpu_jobs_get_their_own_gpus(tmp_path, monkeypatch):
    """4 jobs of 1 GPU on 2 visible GPUs: 2 at a time, each with one device that no running job holds."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    script = tmp_path / "job.py"
    script.write_text(COUNTING_JOB.replace('update(+1, "start")', 'update(+1, "start " + __import__("os").environ['
                                           '"CUDA_VISIBLE_DEVICES"])'))
    run_local([sys.executable, str(script), "JOB", str(tmp_path)], nj=4, log=tmp_path / "log/JOB.log",
              resources=Resources(gpu=1))
    ev = events(tmp_path)
    starts = [e for e in ev if e[0] == "start"]
    assert sorted(int(e[2]) for e in starts) == [1, 2, 3, 4] and {e[1] for e in starts} <= {"3", "5"}
    assert max(int(e[3]) for e in starts) <= 2
    held = {}  # job -> device, while running
    for e in ev:
        if e[0] == "start":
            assert e[1] not in held.values(), ev  # no two running jobs share a GPU
            held[e[2]] = e[1]
        else:
            held.pop(e[1])
    assert "# GPUs " in (tmp_path / "log/1.log").read_text()


def test_more_gpus_than_visible_fails_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ResourceError, match=r"ask for 2 GPU\(s\) each, but this machine has 1"):
        run_jobs(["touch", f"{tmp_path}/ran.JOB"], nj=2, log=tmp_path / "l.JOB.log", resources=Resources(gpu=2))
    assert not list(tmp_path.iterdir())  # no log, no job
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SystemExit) as e:
        cli.main(["--check_gpu", "1"])
    assert "but this machine has 0 (CUDA_VISIBLE_DEVICES='')" in str(e.value.code)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2,-1,3"}) == ["0", "2"]  # CUDA stops at an invalid id


ESPNET_SLURM_CONF = (Path(__file__).resolve().parents[1] / "egs/TEMPLATE/asr1/conf/slurm.conf")


def test_slurm_conf_rules():
    conf = SlurmConfig.read(ESPNET_SLURM_CONF)
    assert conf.command == ("sbatch", "--export=ALL")
    assert conf.args(Resources()) == ["-p", "cpu"]  # default gpu=0
    assert conf.args(Resources(gpu=2, mem="4G", time="1:00:00", num_threads=1, num_nodes=2, name="x")) == [
        "-p", "gpu", "--gres=gpu:2", "-c", "2", "--mem-per-cpu", "4G", "--time", "1:00:00", "--cpus-per-task", "1",
        "--nodes", "2", "--job-name", "x"]
    assert conf.args(Resources(mem="0")) == ["-p", "cpu"]  # an exact value wins over *
    with pytest.raises(ValueError, match=r"c.conf:2: not a slurm.conf line"):
        SlurmConfig.parse("command sbatch\nbogus line\n", "c.conf")
    with pytest.raises(ValueError, match="no 'option gpu=...' line"):
        SlurmConfig.parse("command sbatch\n", "c.conf").args(Resources(gpu=1))


def test_slurm_array_with_the_config(tmp_path, fake_sbatch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(["--backend", "slurm", "--config", str(ESPNET_SLURM_CONF), "--gpu", "1", "--mem", "8G",
              "--max_jobs_run", "2", "JOB=1:3", "exp/log/decode.JOB.log", "echo", "JOB"])
    assert fake_sbatch.read_text().splitlines() == [
        "--export=ALL", "--wait", "--parsable", "--array=1-3%2", "--output=exp/log/q/decode.%a.out",
        "-p", "gpu", "--gres=gpu:1", "-c", "1", "--mem-per-cpu", "8G", "--job-name", "decode",
        "exp/log/q/decode.sh"]
    assert [(tmp_path / f"exp/log/decode.{j}.log").read_text().splitlines()[3] for j in (1, 2, 3)] == ["1", "2", "3"]
