#!/usr/bin/env bash
# The shared stage driver of the espnet-bertkd recipes (ESPnet's egs2/TEMPLATE/asr1/asr.sh, for a pip install), with
# ESPnet's stage numbers; the teacher and its soft labels take stages 3 and 4, where ESPnet formats and filters the
# audio (this driver reads the data directories' audio as it is). Every stage prints what it runs, logs to
# exp/.../*.log, and calls a Python entry point; a stage whose outputs exist is skipped (remove them, or the
# stage's directory, to redo it). Run from a recipe directory. The heavy stages run their jobs through cmd.sh's
# train_cmd / cuda_cmd / decode_cmd (local processes or Slurm arrays), never on the node that runs this script.
#
#   1. data preparation (LibriSpeech layout -> data/<set>/{wav.scp,text,utt2spk,spk2utt}, data/lm_train.txt)
#   2. speed perturbation (--speed_perturb_factors "0.9 1.0 1.1": data/<train>_sp, ESPnet's sp0.9- prefixes)
#   3. teacher: with --train_teacher true, a small BERT trained on the LM text into the KD configs' teacher.model
#   4. teacher soft labels for the training and validation sets (--nj jobs, on GPUs with --ngpu > 0), as the
#      configs in cached teacher mode ask for them; speed-perturbed copies share their source's soft labels
#   5. token list (sentencepiece with its Python API, or characters)
#   6. LM collect stats (--nj jobs, merged)      7. LM training (Transformer LM for beam_lm)
#   8. LM perplexity on the first test set       9. word n-gram + lexicon for beam_ngram (KenLM's lmplz if found)
#  10. ASR collect stats (--nj jobs, merged)
#  11. ASR training of each system in --systems (--ngpu N: ESPnet's DDP, one process per GPU)
#  12. decoding: greedy CTC for every system, ESPnet beam search + LM shallow fusion for --sf_systems (beam_lm),
#      and/or flashlight's lexicon CTC beam search with the word n-gram (beam_ngram); --gpu_inference true: one
#      GPU per decoding job
#  13. scoring (jiwer) and RESULTS.md / results.png
#  14. pack: each system's deployed CTC model as ESPnet's packed zip (plain ESPnet loads it, no plugin needed)
#  15. upload the packed model to the Hugging Face hub (--skip_upload_hf false --hf_repo USER/NAME)
#
# One run at a time per --expdir (${expdir}/.lock, refused naming the pid that holds it); the stages that write what
# runs with different --expdir share (1-9: data/, dump/, the teacher, the LMs; 10: the ASR stats) wait for each
# other (${datadir}/.shared_stages.lock). Option values are split into words (asr_args, ...), never evaluated by a
# shell.
set -euo pipefail
set -f  # no globbing: the options split into words (--systems, --asr_args, ...) are never file patterns

stage=1
stop_stage=100
skip_stages=             # stages to skip inside the range, e.g. "8 14"
nj=2                     # CPU jobs of the stages that split their input (speed perturbation, soft labels, collect stats)
inference_nj=2           # decoding jobs per system and set (stage 12)
train_nj=1               # systems trained at once in stage 11 (locally each gets cores/train_nj threads)
ngpu=0                   # GPUs per training (stages 3, 7, 11; N > 1: ESPnet's DDP, one process per GPU) and 1 per
                         # soft-label job (stage 4) when > 0
num_nodes=1              # nodes per training (> 1: Slurm only, srun starts one process per node, as ESPnet's launch)
gpu_inference=false      # true: every decoding job (stage 12) gets one GPU (--ngpu 1)
use_lightning=false      # ESPnet's option: true trains (stage 11) with ESPnet's Lightning trainer, lightning_train
cmd_backend=             # local | slurm (default: cmd.sh's, local)
slurm_conf=              # the Slurm config (ESPnet's conf/slurm.conf format; default: conf/slurm.conf, else the
                         # template's)
corpus_root=             # a LibriSpeech-layout directory
corpus_sets=             # its sets to prepare, e.g. "train-clean-100 dev-clean test-clean"
combine_sets=            # sets to merge after preparation, TARGET=SOURCE,SOURCE... e.g. "dev=dev_clean,dev_other"
lm_text=                 # extra LM text (one sentence per line, .gz allowed), e.g. librispeech-lm-norm.txt.gz
train_set=
valid_set=
test_sets=
speed_perturb_factors=   # e.g. "0.9 1.0 1.1": stage 2 makes <train_set>_sp, which the later stages train on
token_type=bpe           # bpe or char
nbpe=300
bpemode=unigram
teacher=                 # replaces the KD configs' model_conf.teacher.model in stages 3, 4 and 11 alike (recorded
                         # in each system's config.yaml): e.g. a local copy of bert-base-uncased. Default: the configs'
train_teacher=false      # stage 3 trains a small BERT on the LM text into the teacher's location (unless it holds one)
teacher_init=            # stage 3 fine-tunes this masked LM (hub id or directory) instead of training from scratch
teacher_args=""          # options of espnet_bertkd.bin.train_teacher (with --train_teacher true)
teacher_device=auto      # stages 3-4: auto (cuda when --ngpu > 0, else cpu), cpu or cuda
kd_dtype=                # stage 4's teacher dtype (float32, bfloat16, float16; default: the configs' teacher.dtype)
kd_args=""               # other options of extract_soft_labels (e.g. --max_tokens_per_batch 16384)
teacher_subsets=""       # NAME=FILE word lists whose teacher accuracy stage 4 reports apart (e.g. homophones)
systems="ctc aed final_aed_kd inter_aed_kd"
sf_systems="ctc"         # systems also decoded with beam search + LM shallow fusion
sf_decodings="beam_lm"   # their decodings: beam_lm (ESPnet beam search + Transformer LM; stages 6-8 train it),
                         # beam_ngram (flashlight lexicon CTC beam search + word n-gram of stage 9; [lm] extra)
sf_test_sets=            # sets decoded with shallow fusion (default: --test_sets)
sf_batch_size=auto       # utterances per beam search: auto = batched on a GPU where ESPnet can (202611), else 1
asr_config_dir=conf      # holds train_asr_<system>.yaml
asr_args=""
lm_config=conf/train_lm.yaml
lm_args=""
inference_config=conf/decode_sf.yaml
ngram_config=conf/decode_ngram.yaml  # beam_ngram's search settings (lm_weight, word_score, beam_size ...): required
ngram_args="--batch_seconds 200"  # other options of ctc_lm_inference (beam_ngram)
ngram_order=3            # the word n-gram of beam_ngram, estimated in stage 9 on the LM text
ngram_train_args=""      # options of train_ngram (stage 9): KenLM's lmplz is used when on the PATH (as ESPnet), else
                         # the Python estimator (<= 10M words); e.g. "--kenlm_bin /opt/kenlm/bin --kenlm_memory 8G"
greedy_args="--batch_seconds 200"
asr_model=valid.cer_ctc.ave.pth
skip_upload_hf=true      # stage 15 uploads only with false
hf_repo=                 # stage 15's Hugging Face repository, USER/NAME (a system's name is appended with several)
seed=0
expdir=exp
asr_stats_dir=           # default: ${expdir}/asr_stats_${token_type}
lm_exp=                  # default: ${expdir}/lm (point several runs at one LM)
ngram_exp=               # default: ${lm_exp}_ngram (the n-gram ARPA and its lexicon)
results_dir=.            # where RESULTS.md and results.png go
datadir=data
dumpdir=dump
python=python3

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${here}/parse_options.sh"
# cmd.sh (the recipe's, else the template's) defines train_cmd, cuda_cmd and decode_cmd for cmd_backend
if [ -f cmd.sh ]; then . ./cmd.sh; else . "${here}/cmd.sh"; fi

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (asr.sh) $*"; }
run() { log "$*"; "$@"; }
all_stages="1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"
stage_on() {
    [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ] && [[ " ${skip_stages} " != *" $1 "* ]]
}

[ -n "${train_set}" ] && [ -n "${valid_set}" ] && [ -n "${test_sets}" ] \
    || { echo "$0: --train_set, --valid_set and --test_sets are required" >&2; exit 1; }
# A stage range that selects no stage is an error, not a silent "Finished"
_selected=""; for _s in ${all_stages}; do stage_on "${_s}" && _selected+=" ${_s}"; done
[ -n "${_selected}" ] || { echo "$0: --stage ${stage} --stop_stage ${stop_stage}${skip_stages:+ --skip_stages '${skip_stages}'}" \
    "selects no stage (stages are 1-15; see --help)" >&2; exit 1; }
# Paths and names that are split into words or joined into ESPnet's PATH,NAME,TYPE specs: refused up front rather
# than broken into pieces later (--teacher, --corpus_root and --lm_text are quoted throughout: any path works).
for _name in datadir dumpdir expdir lm_exp asr_stats_dir results_dir asr_config_dir lm_config inference_config \
        ngram_exp ngram_config asr_model train_set valid_set test_sets sf_test_sets slurm_conf; do
    _value=${!_name}
    case "${_name}" in test_sets|sf_test_sets) _value=${_value//[ ]/} ;; esac  # lists: one space between names
    case "${_value}" in
        *[[:space:]]*) echo "$0: --${_name} '${!_name}': paths with whitespace are not supported; choose one" \
            "without spaces, tabs or newlines" >&2; exit 1 ;;
        *,*) echo "$0: --${_name} '${!_name}': commas are not supported (ESPnet reads PATH,NAME,TYPE)" >&2; exit 1 ;;
        *JOB*) echo "$0: --${_name} '${!_name}': 'JOB' is not supported in paths (the job launcher replaces it with" \
            "the job number)" >&2; exit 1 ;;
    esac
done
case "${teacher}" in *JOB*) echo "$0: --teacher '${teacher}': 'JOB' is not supported in paths (the job launcher" \
    "replaces it with the job number)" >&2; exit 1 ;; esac
unset _name _value
mkdir -p "${expdir}"

# lock FILE [lock.py options]: an exclusive lock on FILE for the life of this run (its descriptor in lock_fd)
lock() {
    local rc
    while :; do
        exec {lock_fd}>>"$1"
        rc=0; ${python} -m espnet_bertkd.recipe.bin.lock --fd "${lock_fd}" --file "$1" --pid $$ "${@:2}" || rc=$?
        [ "${rc}" = 3 ] || break
        exec {lock_fd}>&-  # the run that held it removed the file on release: open it afresh
    done
    [ "${rc}" = 0 ] || exit 1
}
lock "${expdir}/.lock" --what "two runs in one --expdir would overwrite each other's outputs and logs"
# The shared stages' lock: ${datadir}/.shared_stages.lock (its own name: --datadir may equal --expdir), removed on
# release (data/ holds only the data sets otherwise)
shared_lock_fd=
lock_shared() {
    mkdir -p "${datadir}"
    lock "${datadir}/.shared_stages.lock" --wait \
        --what "another run is writing the data, soft labels, teacher, LM or ASR stats"
    shared_lock_fd=${lock_fd}
}
unlock_shared() {
    [ -n "${shared_lock_fd}" ] || return 0
    rm -f "${datadir}/.shared_stages.lock"; exec {shared_lock_fd}>&-; shared_lock_fd=
}
trap unlock_shared EXIT
# require WHAT FILE...: a stage that did not write its outputs fails, naming them
require() {
    local what=$1 f; shift
    for f in "$@"; do
        [ -f "${f}" ] || { echo "$0: ${what} did not produce ${f}" >&2; exit 1; }
    done
}
if [ "${token_type}" = bpe ]; then
    token_dir=${datadir}/token_list/bpe_${bpemode}${nbpe}
    token_opts="--token_type bpe --bpemodel ${token_dir}/bpe.model"
else
    token_dir=${datadir}/token_list/${token_type}
    token_opts="--token_type ${token_type}"
fi
token_list=${token_dir}/tokens.txt
[ "${teacher}" != train ] || { echo "$0: --teacher train is gone: the KD configs' model_conf.teacher.model names" \
    "the teacher, and --train_teacher true trains one there" >&2; exit 1; }
# What each system's config needs (KD or not, teacher mode, teacher) is asked of Python, with --teacher applied.
declare -a asr_configs=()
for system in ${systems}; do asr_configs+=(--asr_config "${asr_config_dir}/train_asr_${system}.yaml"); done
kd_requirements() { ${python} -m espnet_bertkd.bin.kd_requirements --teacher "${teacher}" "$@"; }
# set_kd_opts CONFIG: kd_mode (none, cached, online) and kd_opts, the --teacher override of a KD config's
# model_conf.teacher.model for ESPnet (which writes it into the system's config.yaml). ESPnet reads a --model_conf
# value as YAML: single-quoted (quotes doubled), any path stays a string.
set_kd_opts() {
    kd_mode=$(kd_requirements --asr_config "$1" --get mode)
    kd_opts=()
    if [ "${kd_mode}" != none ] && [ -n "${teacher}" ]; then kd_opts=(--model_conf "teacher.model='${teacher//\'/\'\'}'"); fi
}
asr_stats_dir=${asr_stats_dir:-${expdir}/asr_stats_${token_type}}
lm_exp=${lm_exp:-${expdir}/lm}
ngram_exp=${ngram_exp:-${lm_exp%/}_ngram}
read -ra _decodings <<< "${sf_decodings}"; sf_decodings="${_decodings[*]}"  # one space between names
for _decoding in ${sf_decodings}; do
    case "${_decoding}" in beam_lm|beam_ngram) ;; *) echo "$0: --sf_decodings: unknown decoding '${_decoding}'" \
        "(beam_lm, beam_ngram)" >&2; exit 1 ;; esac
done
if [[ " ${sf_decodings} " == *" beam_ngram "* ]] && [ ! -f "${ngram_config}" ]; then
    echo "$0: --ngram_config ${ngram_config}: no such file (beam_ngram's search settings: lm_weight, word_score," \
        "beam_size ...; see egs/homophones/asr1/conf/decode_ngram.yaml)" >&2
    exit 1
fi

for _name in ngpu num_nodes nj inference_nj train_nj; do
    [[ "${!_name}" =~ ^[0-9]+$ ]] || { echo "$0: --${_name} '${!_name}': a whole number, please" >&2; exit 1; }
done
[ "${nj}" -ge 1 ] && [ "${inference_nj}" -ge 1 ] && [ "${train_nj}" -ge 1 ] \
    || { echo "$0: --nj, --inference_nj and --train_nj must be at least 1" >&2; exit 1; }
case "${teacher_device}" in auto) teacher_device=cpu; [ "${ngpu}" -gt 0 ] && teacher_device=cuda ;; cpu|cuda) ;;
    *) echo "$0: --teacher_device '${teacher_device}': auto, cpu or cuda" >&2; exit 1 ;; esac
if [ "${num_nodes}" -gt 1 ] && [ "${cmd_backend}" != slurm ]; then
    echo "$0: --num_nodes ${num_nodes} needs cmd_backend=slurm (srun starts one process per node)" >&2; exit 1
fi
# GPUs asked for on a machine without them: one line, before any stage (on Slurm the jobs' nodes have them)
_gpus=${ngpu}; [ "${gpu_inference}" = true ] && [ "${_gpus}" -lt 1 ] && _gpus=1
[ "${teacher_device}" = cuda ] && [ "${_gpus}" -lt 1 ] && _gpus=1
if [ "${_gpus}" -gt 0 ] && [ "${cmd_backend}" = local ]; then
    ${python} -m espnet_bertkd.recipe.bin.run_jobs --check_gpu "${_gpus}" > /dev/null || exit 1
fi
case "${use_lightning}" in true|false) ;; *) echo "$0: --use_lightning '${use_lightning}': true or false" >&2; exit 1 ;; esac
if [ "${use_lightning}" = true ]; then  # the installed ESPnet must have its Lightning trainer (and lightning)
    _why=$(${python} -c 'import espnet_bertkd.compat as c; print(c.lightning_trainer_missing() or "")') || exit 1
    [ -z "${_why}" ] || { echo "$0: --use_lightning true: ${_why}" >&2; exit 1; }
    if [ "${num_nodes}" -gt 1 ] && [ "${ngpu}" -gt 1 ]; then  # srun starts one process per node here
        echo "$0: --use_lightning true with --num_nodes ${num_nodes}: one GPU per node (--ngpu 1) only" >&2; exit 1
    fi
fi
# The training set the stages after speed perturbation use
src_train_set=${train_set}
[ -n "${speed_perturb_factors}" ] && train_set=${train_set}_sp
# GPUs of each job: the teacher's stages take one when they run on cuda
teacher_gpus=0; [ "${teacher_device}" = cuda ] && teacher_gpus=1

# split_keys SRC N OUT: SRC split into N key files OUT with JOB = 1..N
split_keys() { ${python} -m espnet_bertkd.recipe.bin.split_scp --nj "$2" "$1" "$3"; }
min() { local m=$1; for x in "$@"; do [ "${x}" -lt "${m}" ] && m=${x}; done; echo "${m}"; }
lines() { wc -l < "$1"; }

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 1 ]; then lock_shared; fi
if stage_on 1; then
    log "Stage 1: data preparation from ${corpus_root}"
    if [ ! -f "${datadir}/lm_train.txt" ]; then
        run ${python} -m espnet_bertkd.recipe.bin.prepare_librispeech --root "${corpus_root}" --data_dir "${datadir}" ${corpus_sets}
        for spec in ${combine_sets}; do
            sources=(); IFS=, read -ra names <<< "${spec#*=}"
            for name in "${names[@]}"; do sources+=("${datadir}/${name}"); done
            run ${python} -m espnet_bertkd.recipe.bin.combine_data_dirs "${datadir}/${spec%%=*}" "${sources[@]}"
        done
        lm_opts=(); [ -n "${lm_text}" ] && lm_opts=(--lm_text "${lm_text}")
        run ${python} -m espnet_bertkd.recipe.bin.prepare_lm_text --output "${datadir}/lm_train.txt" \
            --text "${datadir}/${src_train_set}/text" "${lm_opts[@]}"
        require "Stage 1" "${datadir}/lm_train.txt"
    else
        log "skip: ${datadir}/lm_train.txt exists"
    fi
fi

if stage_on 2; then
    if [ -z "${speed_perturb_factors}" ]; then
        log "Stage 2: skip: no --speed_perturb_factors"
    elif [ -f "${datadir}/${train_set}/wav.scp" ]; then
        log "Stage 2: skip: ${datadir}/${train_set}/wav.scp exists"
    else
        log "Stage 2: speed perturbation (${speed_perturb_factors}) ${src_train_set} -> ${train_set} (${nj} jobs)"
        sp_opts=(--src "${datadir}/${src_train_set}" --dst "${datadir}/${train_set}"
                 --audio_dir "${dumpdir}/audio/${train_set}" --factors "${speed_perturb_factors}")
        ${train_cmd} JOB=1:"${nj}" "${datadir}/${train_set}.log/perturb.JOB.log" \
            ${python} -m espnet_bertkd.recipe.bin.perturb_speed "${sp_opts[@]}" --nj "${nj}" --job JOB
        run ${python} -m espnet_bertkd.recipe.bin.perturb_speed "${sp_opts[@]}" --nj "${nj}" --finalise
        require "Stage 2" "${datadir}/${train_set}/wav.scp" "${datadir}/${train_set}/text"
    fi
fi

if stage_on 3; then
    if [ "${train_teacher}" = true ]; then
        teacher_dir=$(kd_requirements "${asr_configs[@]}" --get teacher)
        log "Stage 3: teacher (the KD configs' teacher.model) -> ${teacher_dir:-none} on ${teacher_device}"
        if [ -z "${teacher_dir}" ]; then
            log "skip: no system of --systems trains KD decoders"
        elif [ -f "${teacher_dir}/training.json" ]; then
            log "skip: ${teacher_dir}/training.json exists"
        else
            init_opts=(); [ -n "${teacher_init}" ] && init_opts=(--init "${teacher_init}")
            cut -d' ' -f2- "${datadir}/lm_train.txt" > "${expdir}/teacher_text.txt"
            log "log: ${expdir}/teacher.log"
            ${cuda_cmd} --gpu "${teacher_gpus}" "${expdir}/teacher.log" \
                ${python} -m espnet_bertkd.bin.train_teacher --text "${expdir}/teacher_text.txt" \
                --output_dir "${teacher_dir}" --seed "${seed}" --device "${teacher_device}" "${init_opts[@]}" \
                ${teacher_args}
            require "Stage 3 (log ${expdir}/teacher.log)" "${teacher_dir}/training.json"
        fi
    else
        log "Stage 3: skip: the KD configs' teacher is used as it is (--train_teacher true trains one)"
    fi
fi

if stage_on 4; then
    # The soft labels every cached-mode system reads (an error names the configs if they need different ones)
    kd_config=$(kd_requirements "${asr_configs[@]}" --get soft_labels_config)
    if [ -z "${kd_config}" ]; then
        log "Stage 4: skip: no system of --systems reads cached soft labels (model_conf.teacher.mode: cached)"
    else
        extract_opts=(--asr_config "${kd_config}" --device "${teacher_device}")
        [ -n "${teacher}" ] && extract_opts+=(--teacher "${teacher}")
        [ -n "${kd_dtype}" ] && extract_opts+=(--dtype "${kd_dtype}")
        for dset in "${src_train_set}" "${valid_set}"; do
            out=${dumpdir}/kd/${dset}
            log "Stage 4: teacher soft labels for ${dset} as ${kd_config} asks -> ${out} (${nj} jobs on ${teacher_device})"
            # Always run: on finished soft labels it recomputes only the utterances whose transcript changed (or
            # whose arks are gone) and is a quick no-op when everything matches their kd_text.hash
            ${cuda_cmd} --gpu "${teacher_gpus}" JOB=1:"${nj}" "${out}/log/extract.JOB.log" \
                ${python} -m espnet_bertkd.bin.extract_soft_labels "${extract_opts[@]}" --text "${datadir}/${dset}/text" \
                --output_dir "${out}" --nj "${nj}" --job JOB ${kd_args}
            require "Stage 4" "${out}/kd_token.scp" "${out}/kd_prob.scp" "${out}/kd_text.hash"
        done
        if [ "${train_set}" != "${src_train_set}" ]; then
            # the speed-perturbed copies have their source's text: they point at its soft labels
            run ${python} -m espnet_bertkd.bin.share_soft_labels --src_dir "${dumpdir}/kd/${src_train_set}" \
                --text "${datadir}/${train_set}/text" --output_dir "${dumpdir}/kd/${train_set}"
            require "Stage 4" "${dumpdir}/kd/${train_set}/kd_token.scp" "${dumpdir}/kd/${train_set}/kd_text.hash"
        fi
        # How well the teacher predicts the held-out transcripts it labelled (top-1 of its soft labels)
        subset_opts=(); for s in ${teacher_subsets}; do subset_opts+=(--subset "${s}"); done
        run ${python} -m espnet_bertkd.bin.teacher_accuracy --soft_labels "${dumpdir}/kd/${valid_set}" \
            --text "${datadir}/${valid_set}/text" "${subset_opts[@]}" --output "${expdir}/teacher_accuracy.json"
    fi
fi

if stage_on 5; then
    log "Stage 5: ${token_type} token list -> ${token_list}"
    if [ ! -f "${token_list}" ]; then
        run ${python} -m espnet_bertkd.recipe.bin.train_bpe --token_type "${token_type}" --text "${datadir}/${src_train_set}/text" \
            --output_dir "${token_dir}" --vocab_size "${nbpe}" --model_type "${bpemode}"
        require "Stage 5" "${token_list}"
    else
        log "skip: ${token_list} exists"
    fi
fi

# collect_stats TASK OUT_DIR TRAIN_KEYS VALID_KEYS LOG_PREFIX ARGS...: ESPnet's collect-stats split into --nj jobs
# (each reads the utterances of its key files) through train_cmd, then merged by espnet2.bin.aggregate_stats_dirs
collect_stats() {
    local task=$1 out=$2 train_keys=$3 valid_keys=$4; shift 4
    local logdir=${out}/logdir n
    local jobs; jobs=$(min "${nj}" "$(lines "${train_keys}")" "$(lines "${valid_keys}")")
    mkdir -p "${logdir}"
    split_keys "${train_keys}" "${jobs}" "${logdir}/train.JOB.scp"
    split_keys "${valid_keys}" "${jobs}" "${logdir}/valid.JOB.scp"
    log "${task} collect-stats: ${jobs} jobs, logs ${logdir}/stats.*.log"
    ${train_cmd} JOB=1:"${jobs}" "${logdir}/stats.JOB.log" ${python} -m "${task}" --collect_stats true "$@" \
        --train_shape_file "${logdir}/train.JOB.scp" --valid_shape_file "${logdir}/valid.JOB.scp" \
        --output_dir "${logdir}/stats.JOB"
    local inputs=(); for n in $(seq "${jobs}"); do inputs+=(--input_dir "${logdir}/stats.${n}"); done
    run ${python} -m espnet2.bin.aggregate_stats_dirs "${inputs[@]}" --output_dir "${out}"
}

# ESPnet's distributed options for a training on --ngpu GPUs (and --num_nodes nodes): DDP, one process per GPU,
# never DataParallel; multi-node runs start one process per node with srun
dist_opts=(--ngpu "${ngpu}" --multiprocessing_distributed true)
dist_prefix=()
if [ "${num_nodes}" -gt 1 ]; then
    dist_prefix=(srun --export=ALL)
    dist_opts+=(--dist_launcher slurm)
    [ "${ngpu}" -eq 0 ] && dist_opts+=(--dist_backend gloo)
fi
dist_init() { echo "--dist_init_method file://$(realpath -m "$1")/.dist_init_$(date +%s%N)"; }  # multi-node only

use_lm=false
[ -n "${sf_systems}" ] && [[ " ${sf_decodings} " == *" beam_lm "* ]] && use_lm=true
lm_stats=${expdir}/lm_stats_${token_type}
lm_data_opts=(--train_data_path_and_name_and_type "${datadir}/lm_train.txt,text,text"
              --valid_data_path_and_name_and_type "${datadir}/${valid_set}/text,text,text")
lm_common_opts=(--use_preprocessor true ${token_opts} --token_list "${token_list}" --non_linguistic_symbols none
                --cleaner none --g2p none --config "${lm_config}")
if stage_on 6; then
    if [ "${use_lm}" != true ]; then
        log "Stage 6: skip: no beam_lm decoding (--sf_decodings) needs the Transformer LM"
    elif [ -f "${lm_stats}/train/text_shape" ]; then
        log "Stage 6: skip: ${lm_stats}/train/text_shape exists"
    else
        log "Stage 6: LM collect stats -> ${lm_stats}"
        collect_stats espnet2.bin.lm_train "${lm_stats}" "${datadir}/lm_train.txt" "${datadir}/${valid_set}/text" \
            "${lm_common_opts[@]}" "${lm_data_opts[@]}" ${lm_args}
        require "Stage 6 (logs ${lm_stats}/logdir/stats.*.log)" "${lm_stats}/train/text_shape"
    fi
fi

if stage_on 7; then
    if [ "${use_lm}" != true ]; then
        log "Stage 7: skip: no beam_lm decoding (--sf_decodings) needs the Transformer LM"
    elif [ -f "${lm_exp}/valid.loss.ave.pth" ]; then
        log "Stage 7: skip: ${lm_exp}/valid.loss.ave.pth exists"
    else
        log "Stage 7: Transformer LM for shallow fusion -> ${lm_exp} (${ngpu} GPU(s)), log ${lm_exp}/train.log"
        mkdir -p "${lm_exp}"
        init=(); [ "${num_nodes}" -gt 1 ] && init=($(dist_init "${lm_exp}"))
        ${cuda_cmd} --gpu "${ngpu}" --num_nodes "${num_nodes}" "${lm_exp}/train.log" \
            "${dist_prefix[@]}" ${python} -m espnet2.bin.lm_train "${lm_common_opts[@]}" "${lm_data_opts[@]}" \
            --train_shape_file "${lm_stats}/train/text_shape" --valid_shape_file "${lm_stats}/valid/text_shape" \
            --fold_length 150 --resume true --output_dir "${lm_exp}" --seed "${seed}" "${dist_opts[@]}" \
            "${init[@]}" ${lm_args}
        require "Stage 7 (log ${lm_exp}/train.log)" "${lm_exp}/config.yaml" "${lm_exp}/valid.loss.ave.pth"
    fi
fi

lm_test_set=${test_sets%% *}
if stage_on 8; then
    if [ "${use_lm}" != true ]; then
        log "Stage 8: skip: no Transformer LM (no beam_lm decoding)"
    elif [ -f "${lm_exp}/perplexity_${lm_test_set}/ppl" ]; then
        log "Stage 8: skip: ${lm_exp}/perplexity_${lm_test_set}/ppl exists"
    else
        log "Stage 8: LM perplexity on ${lm_test_set} -> ${lm_exp}/perplexity_${lm_test_set}/ppl"
        _ngpu=0; [ "${gpu_inference}" = true ] && _ngpu=1
        ${cuda_cmd} --gpu "${_ngpu}" "${lm_exp}/perplexity_${lm_test_set}/calc_perplexity.log" \
            ${python} -m espnet2.bin.lm_calc_perplexity --ngpu "${_ngpu}" \
            --data_path_and_name_and_type "${datadir}/${lm_test_set}/text,text,text" \
            --train_config "${lm_exp}/config.yaml" --model_file "${lm_exp}/valid.loss.ave.pth" \
            --output_dir "${lm_exp}/perplexity_${lm_test_set}"
        require "Stage 8 (log ${lm_exp}/perplexity_${lm_test_set}/calc_perplexity.log)" \
            "${lm_exp}/perplexity_${lm_test_set}/ppl"
        log "perplexity: $(cat "${lm_exp}/perplexity_${lm_test_set}/ppl")"
    fi
fi

if stage_on 9; then
    if [ -z "${sf_systems}" ] || [[ " ${sf_decodings} " != *" beam_ngram "* ]]; then
        log "Stage 9: skip: no beam_ngram decoding (--sf_systems, --sf_decodings) needs the word n-gram"
    elif [ -f "${ngram_exp}/ngram.json" ]; then
        log "Stage 9: skip: ${ngram_exp}/ngram.json exists"
    else
        log "Stage 9: word ${ngram_order}-gram LM and lexicon for beam_ngram -> ${ngram_exp}, log ${ngram_exp}/train_ngram.log"
        mkdir -p "${ngram_exp}"
        ${train_cmd} "${ngram_exp}/train_ngram.log" ${python} -m espnet_bertkd.recipe.bin.train_ngram \
            --text "${datadir}/lm_train.txt" --output_dir "${ngram_exp}" --order "${ngram_order}" \
            --token_list "${token_list}" ${token_opts} ${ngram_train_args}
        require "Stage 9 (log ${ngram_exp}/train_ngram.log)" "${ngram_exp}/lm.arpa" "${ngram_exp}/lexicon.txt" \
            "${ngram_exp}/ngram.json"
    fi
fi
unlock_shared

asr_data_opts() {  # $1 = train|valid, $2 = data set, $3 = with soft labels (true|false)
    echo "--${1}_data_path_and_name_and_type ${datadir}/${2}/wav.scp,speech,sound"
    echo "--${1}_data_path_and_name_and_type ${datadir}/${2}/text,text,text"
    if [ "$3" = true ]; then
        echo "--${1}_data_path_and_name_and_type ${dumpdir}/kd/${2}/kd_token.scp,kd_token,kaldi_ark"
        echo "--${1}_data_path_and_name_and_type ${dumpdir}/kd/${2}/kd_prob.scp,kd_prob,kaldi_ark"
    fi
}
common_asr_opts="--use_preprocessor true ${token_opts} --token_list ${token_list} --non_linguistic_symbols none
                 --cleaner none --g2p none"

if stage_on 10; then
    first=$(echo ${systems} | cut -d' ' -f1)
    log "Stage 10: ASR collect-stats -> ${asr_stats_dir}"
    if [ ! -f "${asr_stats_dir}/train/feats_stats.npz" ]; then lock_shared; fi  # another run may be writing them
    if [ ! -f "${asr_stats_dir}/train/feats_stats.npz" ]; then
        set_kd_opts "${asr_config_dir}/train_asr_${first}.yaml"  # the model is built: its teacher must be found
        collect_stats espnet_bertkd.bin.asr_train "${asr_stats_dir}" "${datadir}/${train_set}/wav.scp" \
            "${datadir}/${valid_set}/wav.scp" ${common_asr_opts} --ngpu 0 \
            --config "${asr_config_dir}/train_asr_${first}.yaml" --normalize none \
            $(asr_data_opts train "${train_set}" false) $(asr_data_opts valid "${valid_set}" false) "${kd_opts[@]}"
        require "Stage 10 (logs ${asr_stats_dir}/logdir/stats.*.log)" "${asr_stats_dir}/train/feats_stats.npz" \
            "${asr_stats_dir}/train/speech_shape" "${asr_stats_dir}/valid/speech_shape"
    else
        log "skip: ${asr_stats_dir}/train/feats_stats.npz exists"
    fi
    unlock_shared
fi

if stage_on 11; then
    # Each system's training command goes into ${expdir}/<system>/train.sh (re-run it by hand to retrain one
    # system); --train_nj of them run at once through cuda_cmd, each with --ngpu GPUs of its own.
    todo=()
    for system in ${systems}; do
        config=${asr_config_dir}/train_asr_${system}.yaml
        log "Stage 11: training ${system} (${config}) -> ${expdir}/${system}, log ${expdir}/${system}.train.log"
        if [ -f "${expdir}/${system}/${asr_model}" ]; then log "skip: ${expdir}/${system}/${asr_model} exists"; continue; fi
        # KD systems in cached teacher mode read the soft labels of stage 4; online ones run the teacher themselves
        set_kd_opts "${config}"
        soft_labels=false; [ "${kd_mode}" = cached ] && soft_labels=true
        mkdir -p "${expdir}/${system}"
        data_opts=(${common_asr_opts} --config "${config}"
                   --normalize global_mvn --normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz"
                   $(asr_data_opts train "${train_set}" "${soft_labels}")
                   $(asr_data_opts valid "${valid_set}" "${soft_labels}")
                   --train_shape_file "${asr_stats_dir}/train/speech_shape"
                   --valid_shape_file "${asr_stats_dir}/valid/speech_shape"
                   --fold_length 80000 --seed "${seed}" --output_dir "${expdir}/${system}" "${kd_opts[@]}")
        # The command as words (the options' strings split at whitespace, nothing else: set -f, no evaluation), each
        # word quoted into train.sh, so that every value reaches the trainer verbatim
        init=(); [ "${num_nodes}" -gt 1 ] && init=($(dist_init "${expdir}/${system}"))
        if [ "${use_lightning}" = true ]; then
            # ESPnet's Lightning trainer, through the plugin's launcher: lightning_conf as ESPnet's asr.sh sets it
            # (devices, num_nodes, default_root_dir), DDP, CPU processes when --ngpu 0; the config's lightning_conf
            # gives the rest (max_epochs, log_every_n_steps, best_model_criterion); Lightning resumes from last.ckpt
            _devices=${ngpu} _accelerator=gpu; [ "${ngpu}" -eq 0 ] && _devices=1 _accelerator=cpu
            cmd=("${dist_prefix[@]}" ${python} -m espnet_bertkd.launch -m espnet2.bin.lightning_train --task asr
                 "${data_opts[@]}" --lightning_conf "devices=${_devices}" --lightning_conf "num_nodes=${num_nodes}"
                 --lightning_conf "accelerator=${_accelerator}" --lightning_conf strategy=ddp
                 --lightning_conf "default_root_dir='${expdir//\'/\'\'}/${system}'" ${asr_args})
        else
            cmd=("${dist_prefix[@]}" ${python} -m espnet_bertkd.bin.asr_train "${data_opts[@]}" --resume true
                 "${dist_opts[@]}" "${init[@]}" ${asr_args})
        fi
        { echo "#!/usr/bin/env bash"; echo "# Written by asr.sh stage 11 (run it by hand to retrain ${system})."
          printf 'cd %q || exit 1\n' "$(pwd)"
          printf '%q ' exec "${cmd[@]}"; printf '> %q 2>&1\n' "${expdir}/${system}.train.log"
        } > "${expdir}/${system}/train.sh.tmp"
        mv "${expdir}/${system}/train.sh.tmp" "${expdir}/${system}/train.sh"
        todo+=("${system}")
    done
    if [ ${#todo[@]} -gt 0 ]; then
        # job N runs train_jobs/job.N.sh, which runs the Nth system's train.sh (scripts.txt lists them)
        mkdir -p "${expdir}/train_jobs"
        n=0
        for system in "${todo[@]}"; do
            n=$((n + 1))
            printf '#!/usr/bin/env bash\nexec bash %q\n' "${expdir}/${system}/train.sh" > "${expdir}/train_jobs/job.${n}.sh"
            echo "${expdir}/${system}/train.sh"
        done > "${expdir}/train_jobs/scripts.txt"
        log "${#todo[@]} training job(s), ${train_nj} at a time, ${ngpu} GPU(s) each: ${todo[*]}"
        ${cuda_cmd} --gpu "${ngpu}" --num_nodes "${num_nodes}" --max_jobs_run "${train_nj}" \
            JOB=1:${#todo[@]} "${expdir}/train_jobs/train.JOB.log" bash "${expdir}/train_jobs/job.JOB.sh"
        for system in "${todo[@]}"; do
            require "Stage 11 (training ${system}, log ${expdir}/${system}.train.log)" \
                "${expdir}/${system}/config.yaml" "${expdir}/${system}/${asr_model}"
        done
    fi
fi

# Decoding jobs: one GPU each with --gpu_inference true (ESPnet's asr_inference takes at most one), else CPU
if [ "${gpu_inference}" = true ]; then
    _decode_cmd="${cuda_cmd} --gpu 1"; _ngpu=1
else
    _decode_cmd="${decode_cmd}"; _ngpu=0
fi
decode_set() {  # $1 = output dir, $2 = data set, then the decoder's command (without --key_file/--output_dir)
    local out=$1 dset=$2; shift 2
    [ -f "${out}/speed.json" ] && { log "skip: ${out}/speed.json exists"; return; }
    local jobs; jobs=$(min "${inference_nj}" "$(lines "${datadir}/${dset}/wav.scp")")
    local split=${out}/split${jobs}
    mkdir -p "${split}"
    split_keys "${datadir}/${dset}/wav.scp" "${jobs}" "${split}/keys.JOB.scp"
    log "${jobs} jobs, logs in ${split}/decode.*.log: $*"
    ${_decode_cmd} JOB=1:"${jobs}" "${split}/decode.JOB.log" "$@" \
        --key_file "${split}/keys.JOB.scp" --output_dir "${split}/output.JOB"
    run ${python} -m espnet_bertkd.recipe.bin.merge_decode --nj "${jobs}" "${split}/output.JOB" "${out}"
    require "Stage 12 (logs ${split}/decode.*.log)" "${out}/1best_recog/text"
}

if stage_on 12; then
    for system in ${systems} ${sf_systems}; do
        for f in "${expdir}/${system}/config.yaml" "${expdir}/${system}/${asr_model}"; do
            [ -f "${f}" ] || { echo "$0: Stage 12: ${f} is missing (stage 11 trains ${system})" >&2; exit 1; }
        done
    done
    for system in ${systems}; do
        for dset in ${test_sets}; do
            out=${expdir}/${system}/decode_greedy/${dset}
            log "Stage 12: greedy CTC ${system} ${dset} -> ${out}"
            decode_set "${out}" "${dset}" ${python} -m espnet_bertkd.bin.ctc_greedy_inference \
                --asr_train_config "${expdir}/${system}/config.yaml" \
                --asr_model_file "${expdir}/${system}/${asr_model}" --ngpu "${_ngpu}" \
                --data_path_and_name_and_type "${datadir}/${dset}/wav.scp,speech,sound" ${greedy_args}
        done
    done
    for system in ${sf_systems}; do
        [[ " ${sf_decodings} " == *" beam_lm "* ]] || continue
        for dset in ${sf_test_sets:-${test_sets}}; do
            out=${expdir}/${system}/decode_beam_lm/${dset}
            log "Stage 12: beam search + LM shallow fusion ${system} ${dset} -> ${out}"
            decode_set "${out}" "${dset}" ${python} -m espnet_bertkd.bin.asr_inference \
                --config "${inference_config}" --ngpu "${_ngpu}" --batch_size "${sf_batch_size}" \
                --asr_train_config "${expdir}/${system}/config.yaml" \
                --asr_model_file "${expdir}/${system}/${asr_model}" \
                --lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/valid.loss.ave.pth" \
                --data_path_and_name_and_type "${datadir}/${dset}/wav.scp,speech,sound"
        done
    done
    for system in ${sf_systems}; do
        [[ " ${sf_decodings} " == *" beam_ngram "* ]] || continue
        require "Stage 12 (stage 9 builds the n-gram)" "${ngram_exp}/lm.arpa" "${ngram_exp}/lexicon.txt"
        _ngram_lm=${ngram_exp}/lm.arpa  # KenLM's binary when stage 9's build_binary made one: it loads faster
        [ -f "${ngram_exp}/lm.bin" ] && _ngram_lm=${ngram_exp}/lm.bin
        for dset in ${sf_test_sets:-${test_sets}}; do
            out=${expdir}/${system}/decode_beam_ngram/${dset}
            log "Stage 12: lexicon CTC beam search + word n-gram ${system} ${dset} -> ${out}"
            decode_set "${out}" "${dset}" ${python} -m espnet_bertkd.bin.ctc_lm_inference \
                --asr_train_config "${expdir}/${system}/config.yaml" \
                --asr_model_file "${expdir}/${system}/${asr_model}" --ngpu "${_ngpu}" \
                --lm "${_ngram_lm}" --lexicon "${ngram_exp}/lexicon.txt" --decode_config "${ngram_config}" \
                --data_path_and_name_and_type "${datadir}/${dset}/wav.scp,speech,sound" ${ngram_args}
        done
    done
fi

if stage_on 13; then
    log "Stage 13: scoring and RESULTS.md"
    decodings="greedy"; [ -n "${sf_systems}" ] && decodings="greedy ${sf_decodings}"
    for system in ${systems}; do
        for decoding in ${decodings}; do
            for dset in ${test_sets}; do
                out=${expdir}/${system}/decode_${decoding}/${dset}
                [ -f "${out}/1best_recog/text" ] || continue
                run ${python} -m espnet_bertkd.recipe.bin.score --ref "${datadir}/${dset}/text" --decode_dir "${out}"
            done
        done
    done
    teacher_opts=()
    [ -f "${expdir}/teacher_accuracy.json" ] && teacher_opts=(--teacher_accuracy "${expdir}/teacher_accuracy.json")
    run ${python} -m espnet_bertkd.recipe.bin.make_results --exp_dir "${expdir}" --output_dir "${results_dir}" \
        --systems ${systems} --decodings ${decodings} --test_sets ${test_sets} "${teacher_opts[@]}"
    cat "${results_dir}/RESULTS.md"
fi

if stage_on 14; then
    for system in ${systems}; do
        packed=${expdir}/${system}/packed/asr_model.zip
        log "Stage 14: pack ${system}'s deployed CTC model -> ${packed}"
        [ -f "${expdir}/${system}/${asr_model}" ] \
            || { echo "$0: Stage 14: ${expdir}/${system}/${asr_model} is missing (stage 11 trains ${system})" >&2; exit 1; }
        pack_opts=()
        [ -f "${results_dir}/RESULTS.md" ] && pack_opts+=(--readme_extra "${results_dir}/RESULTS.md")
        run ${python} -m espnet_bertkd.bin.pack_ctc --asr_train_config "${expdir}/${system}/config.yaml" \
            --asr_model_file "${expdir}/${system}/${asr_model}" --outpath "${packed}" "${pack_opts[@]}"
        require "Stage 14" "${packed}"
    done
fi

if stage_on 15; then
    if [ "${skip_upload_hf}" != false ]; then
        log "Stage 15: skip: uploading to the Hugging Face hub is off (--skip_upload_hf false --hf_repo USER/NAME)"
    else
        [ -n "${hf_repo}" ] || { echo "$0: Stage 15: --hf_repo USER/NAME is required to upload" >&2; exit 1; }
        n_systems=$(echo ${systems} | wc -w)
        for system in ${systems}; do
            repo=${hf_repo}; [ "${n_systems}" -gt 1 ] && repo=${hf_repo}_${system}
            log "Stage 15: upload ${expdir}/${system}/packed/asr_model.zip -> ${repo}"
            run ${python} -m espnet_bertkd.recipe.bin.upload_hf --packed_zip "${expdir}/${system}/packed/asr_model.zip" \
                --hf_repo "${repo}"
        done
    fi
fi
log "Finished stages ${stage}..${stop_stage}"
