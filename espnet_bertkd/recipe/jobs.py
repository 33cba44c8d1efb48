"""Run N copies of a command with `JOB` replaced by 1..N, like Kaldi's run.pl / slurm.pl (the pip install of
ESPnet has neither).

The recipe's parallel stages (decoding, soft-label extraction, collect-stats) split their input into N parts and
run one job per part; what they need from a launcher is: the job number substituted in the command and the log
path, each job's output in its own log, a bounded number of jobs at once, and a failure that names the job and its
log. The log format follows run.pl (`# CMD`, `# Started at`, output, `# Accounting`, `# Ended (code N)`), so
people and tools used to Kaldi logs can read it.

A command given as one argument is shell code (pipes, redirections), as in run.pl; several arguments are quoted
and joined. Either way it runs under `bash -c` in the launcher's working directory.
"""
from __future__ import annotations

import datetime
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_bertkd.utils.fileio import PathLike, atomic_write_text

ENDED = re.compile(r"^# Ended \(code (-?\d+)\)", re.MULTILINE)


@dataclass(frozen=True)
class JobResult:
    job: int
    returncode: Optional[int]  # None: the job left no exit status (never ran, or was killed)
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class JobsFailed(RuntimeError):
    """Some jobs failed; the message names each with its exit code and log."""

    def __init__(self, results: Sequence[JobResult], tail_lines: int = 5):
        self.failed = [r for r in results if not r.ok]
        lines = [f"{len(self.failed)} of {len(results)} job(s) failed:"]
        for r in self.failed:
            status = "no exit status in the log" if r.returncode is None else f"exit code {r.returncode}"
            lines.append(f"  job {r.job}: {status}, log {r.log}")
        tail = _tail(self.failed[0].log, tail_lines) if self.failed else ""
        if tail:
            lines.append(f"last lines of {self.failed[0].log}:")
            lines += ["    " + x for x in tail.splitlines()]
        super().__init__("\n".join(lines))


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join([x for x in lines if not (x == "#" or x.startswith("# "))][-n:])  # the job's own output


def substitute(text: str, job: int, var: str = "JOB") -> str:
    """Replace every occurrence of `var` (as run.pl does: plain text, anywhere)."""
    return text.replace(var, str(job))


def shell_command(cmd: Sequence[str]) -> str:
    """One argument: shell code as given. Several: each quoted, joined with spaces."""
    if not cmd:
        raise ValueError("no command given")
    return cmd[0] if len(cmd) == 1 else shlex.join(cmd)


def _check(cmd: Sequence[str], nj: int, log: str, max_parallel: Optional[int], var: str) -> None:
    if nj < 1:
        raise ValueError(f"--nj must be at least 1, not {nj}")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"--max_parallel must be at least 1, not {max_parallel}")
    if nj > 1 and var not in log:
        raise ValueError(f"{nj} jobs would share the log {log}: put {var} in the log path")
    shell_command(cmd)


def _now() -> str:
    return datetime.datetime.now().astimezone().strftime("%a %b %d %H:%M:%S %Z %Y")


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def job_environment(parallel: int, cpus: Optional[int] = None) -> Dict[str, str]:
    """The environment of local jobs: the machine's cores shared out among the jobs running at once.

    PyTorch gives every process one thread per core; N such jobs on N cores oversubscribe them and the threads'
    spin-waiting makes each job many times slower. A value the user exported is kept."""
    env = dict(os.environ)
    threads = str(max(1, (cpus or os.cpu_count() or 1) // max(1, parallel)))
    for name in THREAD_VARS:
        env.setdefault(name, threads)
    return env


def run_local(cmd: Sequence[str], nj: int, log: PathLike, max_parallel: Optional[int] = None, var: str = "JOB",
              poll_seconds: float = 0.05) -> List[JobResult]:
    """Run the jobs as background processes, at most `max_parallel` (default: all) at a time; wait for all (a
    failure does not stop the others, as in run.pl). On an interrupt the running jobs are killed."""
    log = str(log)
    _check(cmd, nj, log, max_parallel, var)
    limit = max_parallel or nj
    env = job_environment(min(limit, nj))
    command = shell_command(cmd)
    pending = list(range(1, nj + 1))
    running: Dict[int, tuple] = {}  # job -> (Popen, log file object, start time)
    results: Dict[int, JobResult] = {}
    try:
        while pending or running:
            while pending and len(running) < limit:
                job = pending.pop(0)
                job_cmd, job_log = substitute(command, job, var), Path(substitute(log, job, var))
                job_log.parent.mkdir(parents=True, exist_ok=True)
                f = open(job_log, "w", encoding="utf-8")
                f.write(f"# {job_cmd}\n# Started at {_now()}\n#\n")
                f.flush()
                proc = subprocess.Popen(["bash", "-c", job_cmd], stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, env=env)
                running[job] = (proc, f, time.monotonic())
            finished = [job for job, (proc, _, _) in running.items() if proc.poll() is not None]
            if not finished:
                time.sleep(poll_seconds)
                continue
            for job in finished:
                proc, f, start = running.pop(job)
                elapsed = int(round(time.monotonic() - start))
                f.write(f"# Accounting: time={elapsed} threads=1\n"
                        f"# Ended (code {proc.returncode}) at {_now()}, elapsed time {elapsed} seconds\n")
                f.close()
                results[job] = JobResult(job, proc.returncode, Path(f.name))
    finally:
        for proc, f, _ in running.values():  # only on an exception (e.g. KeyboardInterrupt)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
            f.close()
    return [results[j] for j in range(1, nj + 1)]


def slurm_script(cmd: Sequence[str], nj: int, log: str, var: str = "JOB", cwd: Optional[PathLike] = None) -> str:
    """The sbatch script of an array job: task $SLURM_ARRAY_TASK_ID runs its command into its log, run.pl style."""
    command = shell_command(cmd)
    lines = [
        "#!/usr/bin/env bash",
        "# Written by espnet_bertkd.recipe.jobs: one array task per job.",
        f"cd {shlex.quote(str(cwd or os.getcwd()))} || exit 1",
        'case "${SLURM_ARRAY_TASK_ID}" in',
    ]
    for job in range(1, nj + 1):
        job_log = shlex.quote(substitute(log, job, var))
        lines.append(f"  {job}) log={job_log}; cmd={shlex.quote(substitute(command, job, var))} ;;")
    lines += [
        '  *) echo "unexpected SLURM_ARRAY_TASK_ID=${SLURM_ARRAY_TASK_ID}" >&2; exit 1 ;;',
        "esac",
        'mkdir -p "$(dirname "$log")"',
        '{ echo "# $cmd"; echo "# Started at $(date)"; echo "#"; } > "$log"',
        "start=$(date +%s)",
        'bash -c "$cmd" >> "$log" 2>&1',
        "rc=$?",
        "elapsed=$(( $(date +%s) - start ))",
        'echo "# Accounting: time=${elapsed} threads=1" >> "$log"',
        'echo "# Ended (code ${rc}) at $(date), elapsed time ${elapsed} seconds" >> "$log"',
        "exit ${rc}",
    ]
    return "\n".join(lines) + "\n"


def sbatch_command(script: Path, nj: int, max_parallel: Optional[int], slurm_opts: str, job_name: str,
                   sbatch: str = "sbatch") -> List[str]:
    array = f"1-{nj}" + (f"%{max_parallel}" if max_parallel else "")
    out = script.with_name(script.name[: -len(".sh")] + ".%a.out")
    return [sbatch, "--wait", "--parsable", f"--job-name={job_name}", f"--array={array}", f"--output={out}",
            *shlex.split(slurm_opts), str(script)]


def exit_status(log: Path) -> Optional[int]:
    """The exit code a run.pl-style log ends with, None if it has none."""
    try:
        found = ENDED.findall(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return int(found[-1]) if found else None


def run_slurm(cmd: Sequence[str], nj: int, log: PathLike, max_parallel: Optional[int] = None,
              slurm_opts: str = "", var: str = "JOB", sbatch: str = "sbatch") -> List[JobResult]:
    """Submit one array job (`sbatch --wait --array=1-N[%P]`) and wait; each task's status is read back from its
    log, so the failing tasks can be named. The script lands in `<log dir>/q/<log name>.sh`."""
    log = str(log)
    _check(cmd, nj, log, max_parallel, var)
    logs = [Path(substitute(log, j, var)) for j in range(1, nj + 1)]
    for p in logs:
        p.unlink(missing_ok=True)  # a stale log must not vouch for a task that did not run
    base = Path(log).name.replace(f".{var}", "").replace(var, "")
    base = base[: -len(".log")] if base.endswith(".log") else base
    script = Path(log).parent / "q" / f"{base or 'job'}.sh"
    atomic_write_text(script, slurm_script(cmd, nj, log, var))
    script.chmod(0o755)
    argv = sbatch_command(script, nj, max_parallel, slurm_opts, job_name=base or "job", sbatch=sbatch)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"{sbatch} not found on PATH (use --backend local off a Slurm cluster)") from None
    results = [JobResult(j, exit_status(p), p) for j, p in zip(range(1, nj + 1), logs)]
    if proc.returncode != 0 and all(r.ok or r.returncode is None for r in results):
        # no task failed on its own: the submission (or Slurm) did; its message is the useful one
        raise RuntimeError(f"{shlex.join(argv)} failed with exit code {proc.returncode}: {proc.stderr.strip()} "
                           f"(script {script})")
    return results


def run_jobs(cmd: Sequence[str], nj: int, log: PathLike, backend: str = "local", max_parallel: Optional[int] = None,
           slurm_opts: str = "", var: str = "JOB") -> List[JobResult]:
    """Run the jobs on `backend` (local | slurm); raise JobsFailed naming the failed jobs and their logs."""
    if backend == "local":
        results = run_local(cmd, nj, log, max_parallel, var)
    elif backend == "slurm":
        results = run_slurm(cmd, nj, log, max_parallel, slurm_opts, var)
    else:
        raise ValueError(f"backend must be local or slurm, not {backend!r}")
    if not all(r.ok for r in results):
        raise JobsFailed(results)
    return results
