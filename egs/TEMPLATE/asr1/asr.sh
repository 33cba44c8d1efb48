#!/usr/bin/env bash
# The shared stage driver of the espnet-bertkd recipes (ESPnet's egs2/TEMPLATE/asr1/asr.sh, for a pip install).
# Every stage prints what it runs, logs to exp/.../*.log, and calls a Python entry point; a stage whose outputs
# exist is skipped (remove them, or the stage's directory, to redo it). Run from a recipe directory.
#
#  1. data preparation (LibriSpeech layout -> data/<set>/{wav.scp,text,utt2spk,spk2utt}, data/lm_train.txt)
#  2. token list (sentencepiece with its Python API, or characters)
#  3. teacher: with --train_teacher true, a small BERT trained on the LM text into the KD configs' teacher.model
#  4. teacher soft labels for the training and validation sets (parallel jobs), as the configs in cached teacher
#     mode ask for them (extract_soft_labels --asr_config: their model_conf.teacher is the one source of truth)
#  5. external Transformer LM (ESPnet's LM task) on the same text as the teacher, for shallow fusion
#  6. ASR collect-stats, then training of each system in --systems
#  7. decoding: greedy CTC for every system, ESPnet beam search + LM shallow fusion for --sf_systems (beam_lm), and/or
#     flashlight's lexicon CTC beam search with the word n-gram of stage 5 (beam_ngram; --sf_decodings)
#  8. scoring (jiwer) and RESULTS.md / results.png
#
# One run at a time per --expdir (${expdir}/.lock, refused naming the pid that holds it); the stages that write what
# runs with different --expdir share (1-5: data/, dump/, the teacher, the LM; 6a: the ASR stats) wait for each other
# (${datadir}/.shared_stages.lock). Option values are split into words (asr_args, ...), never evaluated by a shell.
set -euo pipefail
set -f  # no globbing: the options split into words (--systems, --asr_args, ...) are never file patterns

stage=1
stop_stage=100
nj=2                     # parallel jobs of stage 4 (teacher soft labels)
inference_nj=2           # parallel jobs of stage 7 (decoding)
train_nj=1               # systems trained at once in stage 6 (each gets cores/train_nj threads)
ngpu=0
corpus_root=             # a LibriSpeech-layout directory
corpus_sets=             # its sets to prepare, e.g. "train-clean-100 dev-clean test-clean"
combine_sets=            # sets to merge after preparation, TARGET=SOURCE,SOURCE... e.g. "dev=dev_clean,dev_other"
lm_text=                 # extra LM text (one sentence per line, .gz allowed), e.g. librispeech-lm-norm.txt.gz
train_set=
valid_set=
test_sets=
token_type=bpe           # bpe or char
nbpe=300
bpemode=unigram
teacher=                 # replaces the KD configs' model_conf.teacher.model in stages 3, 4 and 6 alike (recorded
                         # in each system's config.yaml): e.g. a local copy of bert-base-uncased. Default: the configs'
train_teacher=false      # stage 3 trains a small BERT on the LM text into the teacher's location (unless it holds one)
teacher_init=            # stage 3 fine-tunes this masked LM (hub id or directory) instead of training from scratch
teacher_args=""          # options of espnet_bertkd.bin.train_teacher (with --train_teacher true)
teacher_subsets=""       # NAME=FILE word lists whose teacher accuracy stage 4 reports apart (e.g. homophones)
systems="ctc aed final_aed_kd inter_aed_kd"
sf_systems="ctc"         # systems also decoded with beam search + LM shallow fusion
sf_decodings="beam_lm"   # their decodings: beam_lm (ESPnet beam search + Transformer LM), beam_ngram (flashlight
                         # lexicon CTC beam search + word n-gram via torchaudio's ctc_decoder; [lm] extra)
sf_test_sets=            # sets decoded with shallow fusion (default: --test_sets)
sf_batch_size=auto       # utterances per beam search: auto = batched on a GPU where ESPnet can (202611), else 1
asr_config_dir=conf      # holds train_asr_<system>.yaml
asr_args=""
lm_config=conf/train_lm.yaml
lm_args=""
inference_config=conf/decode_sf.yaml
ngram_config=conf/decode_ngram.yaml  # beam_ngram's search settings (lm_weight, word_score, beam_size ...): required
ngram_args="--batch_seconds 200"  # other options of ctc_lm_inference (beam_ngram)
ngram_order=3            # the word n-gram of beam_ngram, estimated in stage 5 on the LM text
greedy_args="--batch_seconds 200"
asr_model=valid.cer_ctc.ave.pth
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
[ -f cmd.sh ] && . ./cmd.sh || . "${here}/cmd.sh"
. "${here}/parse_options.sh"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (asr.sh) $*"; }
run() { log "$*"; "$@"; }
stage_on() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
run_jobs() { ${python} -m espnet_bertkd.recipe.bin.run_jobs --backend "${cmd_backend}" --slurm_opts "${slurm_opts}" "$@"; }

[ -n "${train_set}" ] && [ -n "${valid_set}" ] && [ -n "${test_sets}" ] \
    || { echo "$0: --train_set, --valid_set and --test_sets are required" >&2; exit 1; }
# Paths and names that are split into words or joined into ESPnet's PATH,NAME,TYPE specs: refused up front rather
# than broken into pieces later (--teacher, --corpus_root and --lm_text are quoted throughout: any path works).
for _name in datadir dumpdir expdir lm_exp asr_stats_dir results_dir asr_config_dir lm_config inference_config \
        ngram_exp ngram_config asr_model train_set valid_set test_sets sf_test_sets; do
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

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 1 ]; then lock_shared; fi
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
            --text "${datadir}/${train_set}/text" "${lm_opts[@]}"
        require "Stage 1" "${datadir}/lm_train.txt"
    else
        log "skip: ${datadir}/lm_train.txt exists"
    fi
fi

if stage_on 2; then
    log "Stage 2: ${token_type} token list -> ${token_list}"
    if [ ! -f "${token_list}" ]; then
        run ${python} -m espnet_bertkd.recipe.bin.train_bpe --token_type "${token_type}" --text "${datadir}/${train_set}/text" \
            --output_dir "${token_dir}" --vocab_size "${nbpe}" --model_type "${bpemode}"
        require "Stage 2" "${token_list}"
    else
        log "skip: ${token_list} exists"
    fi
fi

if stage_on 3; then
    if [ "${train_teacher}" = true ]; then
        teacher_dir=$(kd_requirements "${asr_configs[@]}" --get teacher)
        log "Stage 3: teacher (the KD configs' teacher.model) -> ${teacher_dir:-none}"
        if [ -z "${teacher_dir}" ]; then
            log "skip: no system of --systems trains KD decoders"
        elif [ -f "${teacher_dir}/training.json" ]; then
            log "skip: ${teacher_dir}/training.json exists"
        else
            init_opts=(); [ -n "${teacher_init}" ] && init_opts=(--init "${teacher_init}")
            cut -d' ' -f2- "${datadir}/lm_train.txt" > "${expdir}/teacher_text.txt"
            run ${python} -m espnet_bertkd.bin.train_teacher --text "${expdir}/teacher_text.txt" \
                --output_dir "${teacher_dir}" --seed "${seed}" "${init_opts[@]}" ${teacher_args} 2>&1 \
                | tee "${expdir}/teacher.log"
            require "Stage 3" "${teacher_dir}/training.json"
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
        teacher_opts=(); [ -n "${teacher}" ] && teacher_opts=(--teacher "${teacher}")
        for dset in "${train_set}" "${valid_set}"; do
            out=${dumpdir}/kd/${dset}
            log "Stage 4: teacher soft labels for ${dset} as ${kd_config} asks -> ${out} (${nj} jobs)"
            # Always run: on finished soft labels it recomputes only the utterances whose transcript changed (or
            # whose arks are gone) and is a quick no-op when everything matches their kd_text.hash
            run_jobs --nj "${nj}" --log "${out}/log/extract.JOB.log" -- ${python} -m espnet_bertkd.bin.extract_soft_labels \
                --asr_config "${kd_config}" "${teacher_opts[@]}" --text "${datadir}/${dset}/text" \
                --output_dir "${out}" --nj "${nj}" --job JOB
            require "Stage 4" "${out}/kd_token.scp" "${out}/kd_prob.scp" "${out}/kd_text.hash"
        done
        # How well the teacher predicts the held-out transcripts it labelled (top-1 of its soft labels)
        subset_opts=(); for s in ${teacher_subsets}; do subset_opts+=(--subset "${s}"); done
        run ${python} -m espnet_bertkd.bin.teacher_accuracy --soft_labels "${dumpdir}/kd/${valid_set}" \
            --text "${datadir}/${valid_set}/text" "${subset_opts[@]}" --output "${expdir}/teacher_accuracy.json"
    fi
fi

if stage_on 5; then
    log "Stage 5: Transformer LM for shallow fusion -> ${lm_exp}"
    if [ ! -f "${lm_exp}/valid.loss.ave.pth" ]; then
        lm_stats=${expdir}/lm_stats_${token_type}
        data_opts="--train_data_path_and_name_and_type ${datadir}/lm_train.txt,text,text
                   --valid_data_path_and_name_and_type ${datadir}/${valid_set}/text,text,text"
        run ${python} -m espnet2.bin.lm_train --collect_stats true --use_preprocessor true ${token_opts} \
            --token_list "${token_list}" --non_linguistic_symbols none --cleaner none --g2p none ${data_opts} \
            --train_shape_file "${datadir}/lm_train.txt" --valid_shape_file "${datadir}/${valid_set}/text" \
            --output_dir "${lm_stats}" --config "${lm_config}" ${lm_args} > "${expdir}/lm_stats.log" 2>&1
        run ${python} -m espnet2.bin.lm_train --ngpu "${ngpu}" --use_preprocessor true ${token_opts} \
            --token_list "${token_list}" --non_linguistic_symbols none --cleaner none --g2p none ${data_opts} \
            --train_shape_file "${lm_stats}/train/text_shape" --valid_shape_file "${lm_stats}/valid/text_shape" \
            --fold_length 150 --resume true --output_dir "${lm_exp}" --seed "${seed}" --config "${lm_config}" \
            ${lm_args} > "${expdir}/lm_train.log" 2>&1
        require "Stage 5 (log ${expdir}/lm_train.log)" "${lm_exp}/config.yaml" "${lm_exp}/valid.loss.ave.pth"
    else
        log "skip: ${lm_exp}/valid.loss.ave.pth exists"
    fi
    if [[ " ${sf_decodings} " == *" beam_ngram "* ]]; then
        log "Stage 5: word ${ngram_order}-gram LM and lexicon for beam_ngram -> ${ngram_exp}"
        if [ ! -f "${ngram_exp}/ngram.json" ]; then
            run ${python} -m espnet_bertkd.recipe.bin.train_ngram --text "${datadir}/lm_train.txt" \
                --output_dir "${ngram_exp}" --order "${ngram_order}" --token_list "${token_list}" ${token_opts}
            require "Stage 5 (n-gram)" "${ngram_exp}/lm.arpa" "${ngram_exp}/lexicon.txt" "${ngram_exp}/ngram.json"
        else
            log "skip: ${ngram_exp}/ngram.json exists"
        fi
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
                 --cleaner none --g2p none --ngpu ${ngpu}"

if stage_on 6; then
    first=$(echo ${systems} | cut -d' ' -f1)
    log "Stage 6a: ASR collect-stats -> ${asr_stats_dir}"
    if [ ! -f "${asr_stats_dir}/train/feats_stats.npz" ]; then lock_shared; fi  # another run may be writing them
    if [ ! -f "${asr_stats_dir}/train/feats_stats.npz" ]; then
        run ${python} -m espnet_bertkd.bin.asr_train --collect_stats true ${common_asr_opts} \
            --config "${asr_config_dir}/train_asr_${first}.yaml" --normalize none \
            $(asr_data_opts train "${train_set}" false) $(asr_data_opts valid "${valid_set}" false) \
            --train_shape_file "${datadir}/${train_set}/wav.scp" --valid_shape_file "${datadir}/${valid_set}/wav.scp" \
            --output_dir "${asr_stats_dir}" > "${expdir}/asr_stats.log" 2>&1
        require "Stage 6a (log ${expdir}/asr_stats.log)" "${asr_stats_dir}/train/feats_stats.npz"
    fi
    unlock_shared
    # Each system's training command goes into ${expdir}/<system>/train.sh (re-run it by hand to retrain one
    # system); --train_nj of them run at once, sharing the cores.
    todo=()
    for system in ${systems}; do
        config=${asr_config_dir}/train_asr_${system}.yaml
        log "Stage 6b: training ${system} (${config}) -> ${expdir}/${system}, log ${expdir}/${system}.train.log"
        if [ -f "${expdir}/${system}/${asr_model}" ]; then log "skip: ${expdir}/${system}/${asr_model} exists"; continue; fi
        # KD systems in cached teacher mode read the soft labels of stage 4; online ones run the teacher themselves
        mode=$(kd_requirements --asr_config "${config}" --get mode)
        soft_labels=false; [ "${mode}" = cached ] && soft_labels=true
        kd_opts=()  # --teacher: ESPnet writes it into the system's config.yaml
        # ESPnet reads a --model_conf value as YAML: single-quoted (quotes doubled), any path stays a string
        [ "${mode}" != none ] && [ -n "${teacher}" ] && kd_opts=(--model_conf "teacher.model='${teacher//\'/\'\'}'")
        mkdir -p "${expdir}/${system}"
        # The command as words (the options' strings split at whitespace, nothing else: set -f, no evaluation), each
        # word quoted into train.sh, so that every value reaches asr_train verbatim
        cmd=(${python} -m espnet_bertkd.bin.asr_train ${common_asr_opts} --config "${config}"
             --normalize global_mvn --normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz"
             $(asr_data_opts train "${train_set}" "${soft_labels}") $(asr_data_opts valid "${valid_set}" "${soft_labels}")
             --train_shape_file "${asr_stats_dir}/train/speech_shape"
             --valid_shape_file "${asr_stats_dir}/valid/speech_shape"
             --fold_length 80000 --resume true --seed "${seed}" --output_dir "${expdir}/${system}" "${kd_opts[@]}"
             ${asr_args})
        { echo "#!/usr/bin/env bash"; echo "# Written by asr.sh stage 6 (run it by hand to retrain ${system})."
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
        log "${#todo[@]} training job(s), ${train_nj} at a time: ${todo[*]}"
        run_jobs --nj ${#todo[@]} --max_parallel "${train_nj}" --log "${expdir}/train_jobs/train.JOB.log" -- \
            bash "${expdir}/train_jobs/job.JOB.sh"
        for system in "${todo[@]}"; do
            require "Stage 6 (training ${system}, log ${expdir}/${system}.train.log)" \
                "${expdir}/${system}/config.yaml" "${expdir}/${system}/${asr_model}"
        done
    fi
fi

decode_set() {  # $1 = output dir, $2 = data set, then the decoder's command (without --key_file/--output_dir)
    local out=$1 dset=$2; shift 2
    [ -f "${out}/speed.json" ] && { log "skip: ${out}/speed.json exists"; return; }
    local split=${out}/split${inference_nj}
    mkdir -p "${split}"
    ${python} -m espnet_bertkd.recipe.bin.split_scp --nj "${inference_nj}" "${datadir}/${dset}/wav.scp" "${split}/keys.JOB.scp"
    log "${inference_nj} jobs, logs in ${split}/decode.*.log: $*"
    run_jobs --nj "${inference_nj}" --log "${split}/decode.JOB.log" -- "$@" \
        --key_file "${split}/keys.JOB.scp" --output_dir "${split}/output.JOB"
    run ${python} -m espnet_bertkd.recipe.bin.merge_decode --nj "${inference_nj}" "${split}/output.JOB" "${out}"
    require "Stage 7 (logs ${split}/decode.*.log)" "${out}/1best_recog/text"
}

if stage_on 7; then
    for system in ${systems} ${sf_systems}; do
        for f in "${expdir}/${system}/config.yaml" "${expdir}/${system}/${asr_model}"; do
            [ -f "${f}" ] || { echo "$0: Stage 7: ${f} is missing (stage 6 trains ${system})" >&2; exit 1; }
        done
    done
    for system in ${systems}; do
        for dset in ${test_sets}; do
            out=${expdir}/${system}/decode_greedy/${dset}
            log "Stage 7: greedy CTC ${system} ${dset} -> ${out}"
            decode_set "${out}" "${dset}" ${python} -m espnet_bertkd.bin.ctc_greedy_inference \
                --asr_train_config "${expdir}/${system}/config.yaml" \
                --asr_model_file "${expdir}/${system}/${asr_model}" --ngpu "${ngpu}" \
                --data_path_and_name_and_type "${datadir}/${dset}/wav.scp,speech,sound" ${greedy_args}
        done
    done
    for system in ${sf_systems}; do
        [[ " ${sf_decodings} " == *" beam_lm "* ]] || continue
        for dset in ${sf_test_sets:-${test_sets}}; do
            out=${expdir}/${system}/decode_beam_lm/${dset}
            log "Stage 7: beam search + LM shallow fusion ${system} ${dset} -> ${out}"
            decode_set "${out}" "${dset}" ${python} -m espnet_bertkd.bin.asr_inference \
                --config "${inference_config}" --ngpu "${ngpu}" --batch_size "${sf_batch_size}" \
                --asr_train_config "${expdir}/${system}/config.yaml" \
                --asr_model_file "${expdir}/${system}/${asr_model}" \
                --lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/valid.loss.ave.pth" \
                --data_path_and_name_and_type "${datadir}/${dset}/wav.scp,speech,sound"
        done
    done
    for system in ${sf_systems}; do
        [[ " ${sf_decodings} " == *" beam_ngram "* ]] || continue
        require "Stage 7 (stage 5 builds the n-gram)" "${ngram_exp}/lm.arpa" "${ngram_exp}/lexicon.txt"
        for dset in ${sf_test_sets:-${test_sets}}; do
            out=${expdir}/${system}/decode_beam_ngram/${dset}
            log "Stage 7: lexicon CTC beam search + word n-gram ${system} ${dset} -> ${out}"
            decode_set "${out}" "${dset}" ${python} -m espnet_bertkd.bin.ctc_lm_inference \
                --asr_train_config "${expdir}/${system}/config.yaml" \
                --asr_model_file "${expdir}/${system}/${asr_model}" --ngpu "${ngpu}" \
                --lm "${ngram_exp}/lm.arpa" --lexicon "${ngram_exp}/lexicon.txt" --decode_config "${ngram_config}" \
                --data_path_and_name_and_type "${datadir}/${dset}/wav.scp,speech,sound" ${ngram_args}
        done
    done
fi

if stage_on 8; then
    log "Stage 8: scoring and RESULTS.md"
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
log "Finished stages ${stage}..${stop_stage}"
