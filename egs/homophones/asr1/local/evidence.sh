#!/usr/bin/env bash
# The evidence behind the recipe README: every system of the recipe trained with several seeds on one shared
# data / teacher / soft-label / LM set-up, the teacher's contribution at smaller paired-data sizes, then
# evidence/summary.json, evidence/RESULTS.md and the plots (local/evidence_summary.py). Run from anywhere:
#
#   local/evidence.sh                                   # seeds 0 1 2; the KD gain at paired data 1 and 1/4 (seeds 0 1)
#   local/evidence.sh --fractions "0.5 0.25"           # and at 1/2 (two more trainings)
#   local/evidence.sh --seeds "0 1" --fractions ""      # fewer runs
#
# Seed 0 is the default run itself (./run.sh, skipped where done; exp/ becomes evidence/exp/seed0). Every other
# seed, and every smaller paired-data size (aed and inter_aed_kd only: the KD gain), is one chain of run.sh stages in
# its own directory under evidence/exp/; --nj chains run at once, one thread each (all three by default: on two
# cores the data-size chain then runs beside the seed chains, not after them).
set -euo pipefail

seeds="0 1 2"          # training seeds; 0 is the default run
fractions="0.25"       # shares of the paired training utterances (the text-only part stays the same)
size_seeds="0 1"       # seeds trained at each smaller size (aed and inter_aed_kd), among --seeds
nj=3                   # chains at once
. "$(dirname "$0")/../../../TEMPLATE/asr1/parse_options.sh"
cd "$(dirname "$0")/.."
out=evidence
case " ${seeds} " in *" 0 "*) ;; *) echo "$0: --seeds must include 0 (the default run)" >&2; exit 2 ;; esac
for s in ${size_seeds}; do
    case " ${seeds} " in *" ${s} "*) ;; *) echo "$0: --size_seeds ${s} is not in --seeds (the full-data row needs it)" >&2; exit 2 ;; esac
done
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (evidence.sh) $*"; }
# One evidence run at a time (a second one would rewrite the job scripts the first is running); the runs it starts
# lock their own --expdir (asr.sh)
mkdir -p "${out}/exp"
exec {evidence_lock}>>"${out}/exp/.lock"
python3 -m espnet_bertkd.recipe.bin.lock --fd "${evidence_lock}" --file "${out}/exp/.lock" --pid $$ \
    --prog evidence.sh --what "another local/evidence.sh is running here"
start=$(date +%s)
command="local/evidence.sh --seeds \"${seeds}\" --fractions \"${fractions}\" --size_seeds \"${size_seeds}\" --nj ${nj}"

log "seed 0 and the shared set-up: the default run (./run.sh)"
./run.sh
default_run=$(( $(date +%s) - start ))
. local/settings.sh
# where the default run (asr.sh with --expdir exp) put the shared set-up
teacher_dir=exp/teacher
lm_exp=exp/lm
asr_stats_dir=exp/asr_stats_${token_type}

exp=${out}/exp
mkdir -p "${exp}/jobs"
ln -sfn ../../exp "${exp}/seed0"
rm -f "${exp}"/jobs/job.*.sh
n=0
add_chain() {  # one job script: the given commands, each on its own line, quoted, stopping at the first failure
    n=$((n + 1))
    { echo "#!/usr/bin/env bash"; echo "set -euo pipefail"; echo "cd $(printf %q "$(pwd)")"
      for c in "$@"; do echo "${c}"; done; } > "${exp}/jobs/job.${n}.sh"
}
shared=(--nj 1 --teacher "${teacher_dir}" --lm_exp "${lm_exp}")
for seed in ${seeds}; do
    [ "${seed}" = 0 ] && continue
    add_chain "$(printf '%q ' ./run.sh --stage 10 --seed "${seed}" "${shared[@]}" --asr_stats_dir "${asr_stats_dir}" \
        --expdir "${exp}/seed${seed}" --results_dir "${exp}/seed${seed}")"
done
train_utts=$(wc -l < "data/${train_set}/text")
for fraction in ${fractions}; do
    size=$(python3 -c "import sys; print(round(float(sys.argv[1]) * int(sys.argv[2])))" "${fraction}" "${train_utts}")
    subset=${train_set}_${size}
    log "paired data x${fraction}: ${size} of ${train_utts} training utterances, evenly spaced -> data/${subset}"
    [ -f "data/${subset}/text" ] || python3 -m espnet_bertkd.recipe.bin.combine_data_dirs "data/${subset}" "data/${train_set}" \
        --subset "${size}"
    # As many updates as with all the data (epochs of the full data's number of updates, the same schedule): with a
    # quarter of the data for a quarter of the updates, aed and inter_aed_kd stayed on the CTC blank plateau (dev CER
    # 0.73 after 15 epochs), which measures nothing about the teacher.
    iters=$(python3 -c "import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print(round(c['scheduler_conf']['warmup_steps_list'][-2] / c['max_epoch']))" conf/train_asr_inter_aed_kd.yaml)
    chain=()
    for seed in ${size_seeds}; do
        # stage 4 writes the subset's soft labels and stage 10 its stats once (the first seed); the others reuse them
        chain+=("$(printf '%q ' ./run.sh --stage 4 --seed "${seed}" "${shared[@]}" --train_set "${subset}" \
            --asr_stats_dir "exp/asr_stats_${subset}" --systems "aed inter_aed_kd" --sf_systems "" \
            --asr_args "--num_iters_per_epoch ${iters}" \
            --expdir "${exp}/size${fraction}/seed${seed}" --results_dir "${exp}/size${fraction}/seed${seed}")")
    done
    add_chain "${chain[@]}"
done
if [ "${n}" -gt 0 ]; then
    log "${n} chain(s), ${nj} at a time: ${exp}/jobs/job.*.sh, logs ${exp}/jobs/job.*.log"
    python3 -m espnet_bertkd.recipe.bin.run_jobs --nj "${n}" --max_parallel "${nj}" --log "${exp}/jobs/job.JOB.log" -- \
        bash "${exp}/jobs/job.JOB.sh"
fi

wall=$(( $(date +%s) - start ))
log "runs done: ${wall} s in all, of which ${default_run} s in ./run.sh (nothing left to do there if it had run before)"
size_opts=()
for fraction in ${fractions}; do size_opts+=("${fraction}=${exp}/size${fraction}"); done
log "summary -> ${out} (${wall} s so far)"
python3 local/evidence_summary.py --root "${exp}" --data_dir data --seeds ${seeds} \
    --systems ctc/greedy ctc/beam_lm aed/greedy final_aed_kd/greedy inter_aed_kd/greedy \
    --test_sets ${test_sets} \
    --compare inter_aed_kd/greedy:ctc/greedy inter_aed_kd/greedy:aed/greedy inter_aed_kd/greedy:final_aed_kd/greedy \
        final_aed_kd/greedy:ctc/greedy inter_aed_kd/greedy:ctc/beam_lm \
    --corpus_info "${corpus}/corpus_info.json" --train_text "data/${train_set}/text" \
    ${fractions:+--sizes "${size_opts[@]}" --size_seeds ${size_seeds}} --output_dir "${out}" --command "${command}" --wall_seconds "${wall}" \
    --default_run_seconds "${default_run}"
log "done in $(( $(date +%s) - start )) s"
