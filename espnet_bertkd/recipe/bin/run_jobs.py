r"""Run N jobs of a command with JOB replaced by 1..N, locally or as a Slurm array (Kaldi's run.pl / slurm.pl).

    python -m espnet_bertkd.recipe.bin.run_jobs --backend local --nj 4 --log exp/x/log/decode.JOB.log \
        [--max_parallel 2] [--slurm_opts "--gres=gpu:1 -p gpu"] -- python -m MODULE --key_file keys.JOB.scp ...

Each job's output goes to its log (run.pl format). Exit status 1 if any job failed, naming the jobs and their logs.
A command given as one argument is shell code ("cmd1 | cmd2 > out.JOB"), several arguments are quoted.
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.recipe.jobs import JobsFailed, run_jobs


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s [options] -- CMD [ARGS...]")
    p.add_argument("--backend", choices=["local", "slurm"], default="local")
    p.add_argument("--nj", type=int, required=True, help="number of jobs")
    p.add_argument("--log", required=True, help="log path with JOB in it, e.g. exp/x/log/job.JOB.log")
    p.add_argument("--max_parallel", type=int, default=None, help="jobs at once (default: all)")
    p.add_argument("--slurm_opts", default="", help="extra sbatch options, e.g. '--mem 8G -p gpu'")
    p.add_argument("--job_var", default="JOB", help="the placeholder replaced by the job number")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    end = argv.index("--") if "--" in argv else len(argv)
    if "--slurm_opts" in argv[:end]:  # its value starts with "-"; argparse would take "--mem=8G" for an option
        i = argv.index("--slurm_opts")
        if i + 1 < end:
            argv[i: i + 2] = [f"--slurm_opts={argv[i + 1]}"]
    if "--" in argv:
        split = argv.index("--")
        args, cmd = parser.parse_args(argv[:split]), argv[split + 1:]
    else:
        args, cmd = parser.parse_known_args(argv)[0], []  # parsed anyway, so that --help works
    if not cmd:
        parser.error("put the command after --, e.g. ... --log log/job.JOB.log -- echo JOB")
    try:
        run_jobs(cmd, args.nj, args.log, args.backend, args.max_parallel, args.slurm_opts, args.job_var)
    except (JobsFailed, ValueError, RuntimeError) as e:
        sys.exit(f"run_jobs: {e}")


if __name__ == "__main__":
    main()
