r"""Run N jobs of a command with JOB replaced by 1..N, locally or as a Slurm array (Kaldi's run.pl / slurm.pl).

Kaldi's form, what cmd.sh's train_cmd / cuda_cmd / decode_cmd are (ESPnet's asr.sh calls them the same way):

    python -m espnet_bertkd.recipe.bin.run_jobs --backend local [--gpu 1] [--mem 4G] [--time 24:00:00] \
        [--num_threads 4] [--num_nodes 1] [--max_jobs_run 2] [--config conf/slurm.conf] \
        JOB=1:4 exp/x/log/decode.JOB.log python -m MODULE --key_file keys.JOB.scp ...

or with named options (the same jobs):

    python -m espnet_bertkd.recipe.bin.run_jobs --nj 4 --log exp/x/log/decode.JOB.log [--max_parallel 2] \
        [--slurm_opts "--gres=gpu:1 -p gpu"] -- python -m MODULE --key_file keys.JOB.scp ...

Without JOB=1:N there is one job. Each job's output goes to its log (run.pl format). Locally, jobs with --gpu G get
G GPUs of their own (CUDA_VISIBLE_DEVICES); on Slurm the options become sbatch options through --config (ESPnet's
conf/slurm.conf format). Exit status 1 if any job failed (naming the jobs and their logs) or if the jobs ask for
GPUs this machine does not have (before any job runs). `--check_gpu G` only checks that.
A command given as one argument is shell code ("cmd1 | cmd2 > out.JOB"), several arguments are quoted.
"""
import argparse
import re
import sys
from typing import List, Optional, Tuple

from espnet_bertkd.recipe.jobs import JobsFailed, Resources, SlurmConfig, check_gpus, run_jobs

JOB_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$")
VALUE_OPTIONS = ("--backend", "--nj", "--log", "--max_parallel", "--max_jobs_run", "--slurm_opts", "--job_var",
                 "--gpu", "--mem", "--time", "--num_threads", "--num_nodes", "--name", "--config", "--check_gpu")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s [options] [JOB=1:N] LOG CMD [ARGS...]\n"
                                      "       %(prog)s [options] --nj N --log LOG -- CMD [ARGS...]")
    p.add_argument("--backend", choices=["local", "slurm"], default="local")
    p.add_argument("--nj", type=int, default=None, help="number of jobs")
    p.add_argument("--log", default=None, help="log path with JOB in it, e.g. exp/x/log/job.JOB.log")
    p.add_argument("--max_parallel", "--max_jobs_run", type=int, default=None, dest="max_parallel",
                   help="jobs at once (default: all)")
    p.add_argument("--slurm_opts", default="", help="extra sbatch options, e.g. '--mem 8G -p gpu'")
    p.add_argument("--job_var", default="JOB", help="the placeholder replaced by the job number")
    p.add_argument("--gpu", type=int, default=None, help="GPUs per job")
    p.add_argument("--mem", default=None, help="memory per job (Slurm config's mem option)")
    p.add_argument("--time", default=None, help="time limit per job (Slurm config's time option)")
    p.add_argument("--num_threads", type=int, default=None, help="CPU threads per job")
    p.add_argument("--num_nodes", type=int, default=None, help="nodes per job (Slurm; the command runs srun)")
    p.add_argument("--name", default=None, help="job name (default: from the log name)")
    p.add_argument("--config", default=None, help="Slurm config in ESPnet's conf/slurm.conf format")
    p.add_argument("--check_gpu", type=int, default=None, help="only check that G GPUs are visible here")
    return p


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    """Options (up to `--` or the first word that is not one) and the rest: Kaldi's JOB=1:N LOG CMD..."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], argv[i + 1:]
        name = arg.split("=", 1)[0]
        if name in VALUE_OPTIONS:
            i += 1 if "=" in arg else 2
        elif arg in ("-h", "--help"):
            i += 1
        else:
            break
    return argv[:i], argv[i:]


def kaldi_positionals(words: List[str], var: str) -> Tuple[int, str, str, List[str]]:
    """JOB=1:N LOG CMD... (or LOG CMD...) -> (nj, log, var, cmd)."""
    nj = 1
    match = JOB_RANGE.match(words[0]) if words else None
    if match:
        var, start, end = match.group(1), int(match.group(2)), int(match.group(3))
        if start != 1 or end < 1:
            raise ValueError(f"{words[0]}: job ranges start at 1 (e.g. {var}=1:4)")
        nj, words = end, words[1:]
    if len(words) < 2:
        raise ValueError("give the log and the command: [JOB=1:N] LOG CMD [ARGS...]")
    return nj, words[0], var, words[1:]


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    options, rest = split_argv(argv)
    if "--slurm_opts" in options:  # its value starts with "-"; argparse would take "--mem=8G" for an option
        i = options.index("--slurm_opts")
        if i + 1 < len(options):
            options[i: i + 2] = [f"--slurm_opts={options[i + 1]}"]
    args = parser.parse_args(options)
    try:
        if args.check_gpu is not None:
            print(f"run_jobs: {len(check_gpus(args.check_gpu))} GPU(s) visible")
            return
        if args.log is not None:  # the named form: --nj N --log LOG -- CMD
            if "--" not in argv:
                parser.error("put the command after --, e.g. ... --log log/job.JOB.log -- echo JOB")
            nj, log, var, cmd = args.nj or 1, args.log, args.job_var, rest
        else:
            nj, log, var, cmd = kaldi_positionals(rest, args.job_var)
            if args.nj is not None and args.nj != nj:
                raise ValueError(f"--nj {args.nj} disagrees with the job range ({nj} jobs)")
        if not cmd:
            parser.error("no command given")
        resources = Resources(gpu=args.gpu, mem=args.mem, time=args.time, num_threads=args.num_threads,
                              num_nodes=args.num_nodes, name=args.name)
        config = SlurmConfig.read(args.config) if args.config and args.backend == "slurm" else None
        run_jobs(cmd, nj, log, args.backend, args.max_parallel, args.slurm_opts, var, resources, config)
    except (JobsFailed, ValueError, RuntimeError) as e:  # ResourceError is a RuntimeError
        sys.exit(f"run_jobs: {e}")


if __name__ == "__main__":
    main()
