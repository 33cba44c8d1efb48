# How the heavy stages run their jobs (ESPnet's cmd.sh names): every stage that trains, extracts or decodes goes
# through one of these, so nothing heavy runs on the node that runs asr.sh.
#   train_cmd   CPU jobs: collect-stats, LM statistics, n-gram, data preparation jobs
#   cuda_cmd    jobs that may use GPUs (--gpu N): teacher, soft labels, LM and ASR training
#   decode_cmd  decoding jobs (cuda_cmd with --gpu 1 when --gpu_inference true)
# Each is espnet_bertkd.recipe.bin.run_jobs, Kaldi's run.pl / slurm.pl interface:
#   ${cuda_cmd} --gpu 1 --mem 8G JOB=1:4 exp/log/x.JOB.log python -m MODULE ... JOB ...
# cmd_backend (asr.sh --cmd_backend, or here):
#   local  background processes on this machine; a job with --gpu N gets N visible GPUs of its own
#   slurm  one sbatch array per stage, its resources through slurm_conf (ESPnet's conf/slurm.conf format:
#          the recipe's conf/slurm.conf, else egs/TEMPLATE/asr1/conf/slurm.conf)
cmd_backend=${cmd_backend:-local}
slurm_conf=${slurm_conf:-}
_launcher="${python:-python3} -m espnet_bertkd.recipe.bin.run_jobs"
case "${cmd_backend}" in
    local)
        train_cmd="${_launcher} --backend local"
        cuda_cmd="${_launcher} --backend local"
        decode_cmd="${_launcher} --backend local" ;;
    slurm)
        if [ -z "${slurm_conf}" ]; then
            slurm_conf=conf/slurm.conf
            [ -f "${slurm_conf}" ] || slurm_conf="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/conf/slurm.conf"
        fi
        train_cmd="${_launcher} --backend slurm --config ${slurm_conf}"
        cuda_cmd="${_launcher} --backend slurm --config ${slurm_conf}"
        decode_cmd="${_launcher} --backend slurm --config ${slurm_conf} --mem 4G" ;;
    *) echo "cmd.sh: cmd_backend must be local or slurm, not '${cmd_backend}'" >&2; return 1 ;;
esac
unset _launcher
