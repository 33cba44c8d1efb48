"""Run N copies of a command with `JOB` replaced by 1..N, like Kaldi's run.pl / slurm.pl (the pip install of
ESPnet has neither).

The recipe's parallel stages (decoding, soft-label extraction, collect-stats) split their input into N parts and
run one job per part; what they need from a launcher is: the job number substituted in the command and the log
path, each job's output in its own log, a bounded number of jobs at once, and a failure that names the job and its
log. The log format follows run.pl (`# CMD`, `# Started at`, output, `# Accounting`, `# Ended (code N)`), so
people and tools used to Kaldi logs can read it.

A command given as one argument is shell code (pipes, redirections), as in run.pl; several arguments are quoted
and joined. Either way it runs under `bash -c` in the launcher's working directory.

What each job needs (Kaldi's `--gpu`, `--mem`, `--time`, `--num_threads`, `--num_nodes`) is a `Resources`. Locally,
jobs that ask for GPUs get their own devices from the visible ones (`CUDA_VISIBLE_DEVICES`, else `nvidia-smi`) and
wait for free ones, so `--inference_nj 8` on 4 GPUs runs 4 at a time, one per GPU (run.pl would put all 8 on GPU
0); asking for more GPUs than the machine has fails before any job starts. On Slurm the resources become sbatch
options through a config in the format of ESPnet's `conf/slurm.conf` (`command`, `option NAME=VALUE ARGS`,
`option NAME=* ARGS with $0`, `default NAME=VALUE`; see `SlurmConfig`).
"""
from __future__ import annotations

import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

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


@dataclass(frozen=True)
class Resources:
    """What each job asks for, as Kaldi's run.pl / slurm.pl options (None: not asked)."""
    gpu: Optional[int] = None
    mem: Optional[str] = None
    time: Optional[str] = None
    num_threads: Optional[int] = None
    num_nodes: Optional[int] = None
    name: Optional[str] = None

    @property
    def gpus(self) -> int:
        return self.gpu or 0

    def given(self) -> Dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}


class ResourceError(RuntimeError):
    """The jobs ask for what this machine cannot give (e.g. GPUs on a machine without any)."""


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


def visible_gpus(env: Optional[Mapping[str, str]] = None) -> List[str]:
    """The GPUs local jobs may use: CUDA_VISIBLE_DEVICES where it is set (CUDA stops at the first invalid entry,
    e.g. -1), else those `nvidia-smi` lists, else none."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        devices = []
        for d in env["CUDA_VISIBLE_DEVICES"].split(","):
            d = d.strip()
            if not d or d.startswith("-"):
                break
            devices.append(d)
        return devices
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def check_gpus(gpus_per_job: int, env: Optional[Mapping[str, str]] = None) -> List[str]:
    """The visible GPUs, or ResourceError when fewer than one job's share: before any job runs."""
    devices = visible_gpus(env)
    if gpus_per_job > len(devices):
        where = ("CUDA_VISIBLE_DEVICES=" + repr((env or os.environ)["CUDA_VISIBLE_DEVICES"])
                 if "CUDA_VISIBLE_DEVICES" in (env or os.environ) else "no nvidia-smi GPU")
        raise ResourceError(f"the jobs ask for {gpus_per_job} GPU(s) each, but this machine has {len(devices)} "
                            f"({where}): use --ngpu 0 and --gpu_inference false here, or run on a GPU machine or "
                            "through Slurm (cmd_backend=slurm in cmd.sh)")
    return devices


def run_local(cmd: Sequence[str], nj: int, log: PathLike, max_parallel: Optional[int] = None, var: str = "JOB",
              poll_seconds: float = 0.05, resources: Resources = Resources()) -> List[JobResult]:
    """Run the jobs as background processes, at most `max_parallel` (default: all) at a time; wait for all (a
    failure does not stop the others, as in run.pl). Jobs that ask for GPUs each get their own
    (CUDA_VISIBLE_DEVICES), as many at once as there are GPUs to share out. On an interrupt the running jobs are
    killed."""
    log = str(log)
    _check(cmd, nj, log, max_parallel, var)
    limit = max_parallel or nj
    free_gpus: List[str] = []
    if resources.gpus:
        free_gpus = check_gpus(resources.gpus)
        limit = min(limit, len(free_gpus) // resources.gpus)
    env = job_environment(min(limit, nj))
    if resources.num_threads:
        env.update({name: str(resources.num_threads) for name in THREAD_VARS})
    command = shell_command(cmd)
    pending = list(range(1, nj + 1))
    running: Dict[int, tuple] = {}  # job -> (Popen, log file object, start time, its GPUs)
    results: Dict[int, JobResult] = {}
    try:
        while pending or running:
            while pending and len(running) < limit:
                job = pending.pop(0)
                job_cmd, job_log = substitute(command, job, var), Path(substitute(log, job, var))
                job_log.parent.mkdir(parents=True, exist_ok=True)
                gpus, free_gpus = free_gpus[: resources.gpus], free_gpus[resources.gpus:]
                job_env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else env
                f = open(job_log, "w", encoding="utf-8")
                f.write(f"# {job_cmd}\n# Started at {_now()}\n" + (f"# GPUs {','.join(gpus)}\n" if gpus else "")
                        + "#\n")
                f.flush()
                proc = subprocess.Popen(["bash", "-c", job_cmd], stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, env=job_env)
                running[job] = (proc, f, time.monotonic(), gpus)
            finished = [job for job, (proc, *_) in running.items() if proc.poll() is not None]
            if not finished:
                time.sleep(poll_seconds)
                continue
            for job in finished:
                proc, f, start, gpus = running.pop(job)
                free_gpus += gpus
                elapsed = int(round(time.monotonic() - start))
                f.write(f"# Accounting: time={elapsed} threads=1\n"
                        f"# Ended (code {proc.returncode}) at {_now()}, elapsed time {elapsed} seconds\n")
                f.close()
                results[job] = JobResult(job, proc.returncode, Path(f.name))
    finally:
        for proc, f, *_ in running.values():  # only on an exception (e.g. KeyboardInterrupt)
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


@dataclass(frozen=True)
class SlurmConfig:
    """Kaldi's / ESPnet's `conf/slurm.conf`: how each resource becomes sbatch options.

        command sbatch --export=ALL          the submit command and its fixed options
        option mem=* --mem-per-cpu $0        --mem VALUE -> these options, $0 replaced by VALUE
        option mem=0                         --mem 0 -> no option (an exact value wins over *)
        default gpu=0                        the value when the job does not ask
        option gpu=* -p gpu --gres=gpu:$0

    Lines that are empty or start with # are skipped; a `#` after the options starts a comment, as in slurm.pl.
    slurm.pl's `--max-jobs-run` is the array's `%N` here, not a config line."""
    command: tuple
    options: Mapping[str, Mapping[str, tuple]]
    defaults: Mapping[str, str]
    source: str = "slurm config"

    @classmethod
    def parse(cls, text: str, source: str = "slurm config") -> "SlurmConfig":
        command: tuple = ()
        options: Dict[str, Dict[str, tuple]] = {}
        defaults: Dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            words = shlex.split(raw.split(" #")[0], comments=True)
            if not words:
                continue
            kind, rest = words[0], words[1:]
            if kind == "command" and rest:
                command = tuple(rest)
            elif kind in ("option", "default") and rest and "=" in rest[0]:
                name, value = rest[0].split("=", 1)
                if kind == "default":
                    defaults[name] = value
                else:
                    options.setdefault(name, {})[value] = tuple(rest[1:])
            else:
                raise ValueError(f"{source}:{n}: not a slurm.conf line (command ..., option NAME=VALUE ..., "
                                 f"default NAME=VALUE): {raw.strip()!r}")
        if not command:
            raise ValueError(f"{source}: no 'command sbatch ...' line")
        return cls(command, options, defaults, source)

    @classmethod
    def read(cls, path: PathLike) -> "SlurmConfig":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read the Slurm config {path}: {e.strerror}") from None
        return cls.parse(text, str(path))

    def args(self, resources: Resources) -> List[str]:
        """The sbatch options for these resources (the defaults filled in)."""
        out: List[str] = []
        for name, value in {**self.defaults, **resources.given()}.items():
            rules = self.options.get(name)
            if rules is None:
                if name == "name":  # every job has a name; a config need not say how to pass it
                    out.append(f"--job-name={value}")
                    continue
                raise ValueError(f"{self.source}: the jobs ask for --{name} {value}, but it has no "
                                 f"'option {name}=...' line")
            if value in rules:
                out += rules[value]
            elif "*" in rules:
                out += [a.replace("$0", value) for a in rules["*"]]
            else:
                raise ValueError(f"{self.source}: no 'option {name}={value}' or 'option {name}=*' line")
        return out


def sbatch_command(script: Path, nj: int, max_parallel: Optional[int], slurm_opts: str, job_name: str,
                   sbatch: str = "sbatch", config: Optional[SlurmConfig] = None,
                   resources: Resources = Resources()) -> List[str]:
    """Without a config: plain `sbatch` with --slurm_opts. With one: its command and the resources' options."""
    array = f"1-{nj}" + (f"%{max_parallel}" if max_parallel else "")
    out = script.with_name(script.name[: -len(".sh")] + ".%a.out")
    if config is None:
        return [sbatch, "--wait", "--parsable", f"--job-name={resources.name or job_name}", f"--array={array}",
                f"--output={out}", *shlex.split(slurm_opts), str(script)]
    own = config.args(replace(resources, name=resources.name or job_name))
    return [*config.command, "--wait", "--parsable", f"--array={array}", f"--output={out}", *own,
            *shlex.split(slurm_opts), str(script)]


def exit_status(log: Path) -> Optional[int]:
    """The exit code a run.pl-style log ends with, None if it has none."""
    try:
        found = ENDED.findall(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return int(found[-1]) if found else None


def run_slurm(cmd: Sequence[str], nj: int, log: PathLike, max_parallel: Optional[int] = None,
              slurm_opts: str = "", var: str = "JOB", sbatch: str = "sbatch", config: Optional[SlurmConfig] = None,
              resources: Resources = Resources()) -> List[JobResult]:
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
    argv = sbatch_command(script, nj, max_parallel, slurm_opts, job_name=base or "job", sbatch=sbatch, config=config,
                          resources=resources)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"{argv[0]} not found on PATH (use --backend local off a Slurm cluster)") from None
    results = [JobResult(j, exit_status(p), p) for j, p in zip(range(1, nj + 1), logs)]
    if proc.returncode != 0 and all(r.ok or r.returncode is None for r in results):
        # no task failed on its own: the submission (or Slurm) did; its message is the useful one
        raise RuntimeError(f"{shlex.join(argv)} failed with exit code {proc.returncode}: {proc.stderr.strip()} "
                           f"(script {script})")
    return results


def run_jobs(cmd: Sequence[str], nj: int, log: PathLike, backend: str = "local", max_parallel: Optional[int] = None,
             slurm_opts: str = "", var: str = "JOB", resources: Resources = Resources(),
             slurm_config: Optional[SlurmConfig] = None) -> List[JobResult]:
    """Run the jobs on `backend` (local | slurm); raise JobsFailed naming the failed jobs and their logs."""
    if backend == "local":
        results = run_local(cmd, nj, log, max_parallel, var, resources=resources)
    elif backend == "slurm":
        results = run_slurm(cmd, nj, log, max_parallel, slurm_opts, var, config=slurm_config, resources=resources)
    else:
        raise ValueError(f"backend must be local or slurm, not {backend!r}")
    if not all(r.ok for r in results):
        raise JobsFailed(results)
    return results
