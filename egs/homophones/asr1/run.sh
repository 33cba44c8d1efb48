#!/usr/bin/env bash
# The embedded default recipe: a synthetic English corpus (eSpeak NG speech, sentences whose spelling needs a
# language model: their/there, two/to/too, knight/night, ...) generated here from a seed, then every system of
# docs/method.md trained, decoded and scored by the shared stage driver. Runs offline on CPU.
#
#   ./run.sh                 # default size
#   ./run.sh --smoke true    # a few minutes (what CI runs)
#   ./run.sh --stage 10 --stop_stage 13 --systems "ctc inter_aed_kd"
#   # another training seed beside the first run, sharing its data, teacher, soft labels and LM (the teacher is
#   # where the configs' model_conf.teacher.model says, exp/teacher, whatever --expdir is):
#   ./run.sh --stage 10 --seed 1 --expdir exp_seed1 --lm_exp exp/lm \
#       --asr_stats_dir exp/asr_stats_char --results_dir exp_seed1
#   local/evidence.sh        # every system over 3 seeds, the KD gain at 1/4 of the paired data, significance tests
set -euo pipefail

smoke=false     # true: a tiny corpus and 2 epochs, a few minutes
seed=0          # training seed (teacher, LM, ASR)
corpus_seed=0   # the corpus stays the same across training seeds
stage=0         # 0: generate the corpus; 1-15: the stage driver's (ESPnet's numbers; see its --help)
stop_stage=100
nj=2            # parallel jobs: corpus synthesis, soft labels, decoding, and systems trained at once
systems="ctc aed final_aed_kd inter_aed_kd"
passthrough=()  # every other option goes to the stage driver
_help_driver="$(dirname "$0")/../../TEMPLATE/asr1/asr.sh"
. "$(dirname "$0")/../../TEMPLATE/asr1/parse_options.sh"
cd "$(dirname "$0")"
. local/settings.sh

size=default
# The teacher: a 4 x 192 BERT, 4 epochs on the LM text (README: its top-1 accuracy on the dev transcripts).
teacher_args="--epochs 4 --lr 1e-3 --batch_size 64 --vocab_size 3000 --hidden_size 192 --num_layers 4 --num_heads 4"
asr_args=""
lm_args=""
if [ "${smoke}" = true ]; then
    size=smoke
    corpus=${smoke_corpus}
    teacher_args="--epochs 1 --batch_size 64 --vocab_size 500 --hidden_size 64 --num_layers 2 --num_heads 2"
    asr_args="--max_epoch 2"
    lm_args="--max_epoch 2"
fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) Stage 0: generate the ${size} corpus -> ${corpus}"
    # One generator at a time (it removes temporaries it did not finish): another run's stage 0 is waited for
    mkdir -p "$(dirname "${corpus}")"
    exec {corpus_lock}>>"${corpus}.lock"
    python3 -m espnet_bertkd.recipe.bin.lock --fd "${corpus_lock}" --file "${corpus}.lock" --pid $$ --wait \
        --prog run.sh --what "another run is generating the corpus"
    python3 local/make_corpus.py --output_dir "${corpus}" --size "${size}" --seed "${corpus_seed}" --nj "${nj}" \
        --no_progress
    exec {corpus_lock}>&-
fi
# The corpus' homophone groups and LM-only words, for the reports by kind of word (teacher accuracy, errors)
[ -f "${corpus}/corpus_info.json" ] && local/word_lists.py "${corpus}/corpus_info.json" data/local

[ "${stop_stage}" -ge 1 ] || exit 0  # stage 0 alone
exec ../../TEMPLATE/asr1/asr.sh \
    --stage "$(( stage > 1 ? stage : 1 ))" --stop_stage "${stop_stage}" --seed "${seed}" \
    --nj "${nj}" --train_nj "${nj}" --inference_nj "${nj}" \
    --corpus_root "${corpus}" --corpus_sets "train-clean dev-clean test-clean" \
    --lm_text "${corpus}/lm_text.txt" \
    --train_set "${train_set}" --valid_set "${valid_set}" --test_sets "${test_sets}" \
    --token_type "${token_type}" \
    --train_teacher true --teacher_args "${teacher_args}" \
    --teacher_subsets "homophones=data/local/homophones.txt" \
    --systems "${systems}" --sf_systems ctc --sf_decodings "beam_lm beam_ngram" \
    --asr_args "${asr_args}" --lm_args "${lm_args}" \
    "${passthrough[@]}"
