#!/usr/bin/env bash
# Every table of benchmarks/README.md in one command: decoding (greedy vs encoder vs ESPnet's and flashlight's
# searches), the KD training step, the teacher. On one GPU (--device cuda, the default) it is meant to take under
# 6 minutes (not yet timed on a GPU); --device cpu runs the CPU sizes of the README (about 25 minutes on 2 cores).
# Each benchmark prints its own table; they are also kept under --out.
#
#   bash benchmarks/gpu.sh [--device cuda|cpu] [--out benchmarks/gpu_results] [--python python] [--quick true]
#
# --quick true shrinks every size (a few seconds on a CPU: checks that the script runs, measures nothing useful).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
out=benchmarks/gpu_results
python=python
quick=false
while [ $# -gt 0 ]; do
    case "$1" in
        --device|--out|--python|--quick)
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 2; }
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;  # the value as it is, never evaluated
        *) echo "$0: unknown option $1 (options: --device --out --python --quick)" >&2; exit 2 ;;
    esac
done
mkdir -p "${out}"

amp_dtypes=(bfloat16)
if [ "${quick}" = true ]; then
    decoding=(--utterances 4 --slow_utterances 0 --repeats 1 --batch_seconds 20,40)
    train=(--steps 1 --batch 2 --frames 200 --blocks 2 --units 64 --kd_layers 1,2)
    teacher=(--utterances 2 --repeats 1 --sizes small)
elif [ "${device}" = cpu ]; then
    # The CPU tables of benchmarks/README.md (about 25 minutes on the 2-core machine); no AMP rows on the CPU.
    decoding=(--utterances 24 --slow_utterances 8 --beam_batch_size 8 --repeats 5 --batch_seconds 100,400)
    train=(--steps 5 --batch 8 --frames 800)
    teacher=(--utterances 32 --repeats 3 --sizes small,base)
    amp_dtypes=()
else
    # The issue-15 shapes: 64 random 3-12 s utterances in 100 s and 400 s batches; 12 x 256 conformer, batch
    # 32 x 16 s (1600 fbank frames); bert-base-sized teacher.
    decoding=(--utterances 64 --slow_utterances 8 --beam_batch_size 8 --repeats 5 --batch_seconds 100,400)
    train=(--steps 7 --batch 32 --frames 1600)
    teacher=(--utterances 256 --repeats 3 --sizes small,base)
fi

run() {  # $1 = name of the output file, then the command
    local name=$1; shift
    echo "== $*"
    "$@" 2>&1 | tee "${out}/${name}.txt.tmp"
    mv "${out}/${name}.txt.tmp" "${out}/${name}.txt"
}

run decoding "${python}" benchmarks/decoding.py --device "${device}" --dtype bfloat16 "${decoding[@]}"
run train_step_fp32 "${python}" benchmarks/train_step.py --device "${device}" --online "${train[@]}"
for amp in "${amp_dtypes[@]}"; do
    run "train_step_amp_${amp}" "${python}" benchmarks/train_step.py --device "${device}" --amp "${amp}" "${train[@]}"
done
for dtype in bfloat16 float32; do
    run "teacher_${dtype}" "${python}" benchmarks/teacher_throughput.py --device "${device}" --dtype "${dtype}" \
        "${teacher[@]}"
done
echo "== tables in ${out}/"
