#!/usr/bin/env bash
# LibriSpeech 960 h: the systems of method.md (ctc, interctc, aed, final_aed_kd, inter_aed_kd; the ctc baseline also
# with beam search + Transformer-LM shallow fusion) trained on train_960, validated on dev (dev-clean + dev-other,
# as ESPnet), decoded and scored on dev/test clean/other. The stages are the shared driver's
# (../../TEMPLATE/asr1/asr.sh); this script names the data, the sets and the configs (conf/).
#
#   ./run.sh --librispeech_root /data/LibriSpeech --lm_text /data/librispeech-lm-norm.txt.gz --ngpu 4
#   ./run.sh --librispeech_root /data/LibriSpeech --teacher /models/bert-base-uncased   # offline: a local copy
#   ./run.sh --stage 6 --stop_stage 8 --systems "ctc inter_aed_kd"
#
# --librispeech_root  a directory holding LibriSpeech's set directories (train-clean-100/ ... test-other/, or
#                     LibriSpeech/<set>/ as the archives unpack); needed by stage 1 only
# --lm_text           optional extra LM text, one sentence a line (.gz allowed): librispeech-lm-norm.txt.gz
#                     (openslr.org/11). Without it the shallow-fusion LM sees only the training transcripts.
# --teacher           hub id or local directory of the masked LM (default bert-base-uncased). Machines without
#                     internet cannot reach the hub: save AutoModelForMaskedLM + AutoTokenizer with save_pretrained
#                     elsewhere, copy the directory, and pass its path.
# Every other option goes to asr.sh (its options and defaults: ./run.sh --help): --ngpu, --nj, --expdir, ...
# Relative --datadir/--expdir/--dumpdir are relative to this directory, as in ESPnet.
set -euo pipefail

librispeech_root=
lm_text=
teacher=bert-base-uncased
stage=1
stop_stage=100
datadir=data
python=python3
extra=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }
while [ $# -gt 0 ]; do
    case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
    case "$1" in
        -h|--help) usage; exec "$(dirname "$0")/../../TEMPLATE/asr1/asr.sh" --help ;;
        --librispeech_root|--lm_text|--teacher|--stage|--stop_stage|--datadir|--python)
            [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) extra+=("$1"); shift ;;
    esac
done

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    [ -n "${librispeech_root}" ] || { echo "$0: --librispeech_root DIR is required for stage 1 (a directory holding" \
        "LibriSpeech's set directories, e.g. train-clean-100/ dev-clean/ ...)" >&2; exit 1; }
    [ -d "${librispeech_root}" ] \
        || { echo "$0: --librispeech_root ${librispeech_root}: no such directory" >&2; exit 1; }
    [ -z "${lm_text}" ] || [ -f "${lm_text}" ] || { echo "$0: --lm_text ${lm_text}: no such file" >&2; exit 1; }
    [ -n "${lm_text}" ] || echo "$0: no --lm_text: the shallow-fusion LM learns from the training transcripts only" >&2
fi
# The recipe runs in its own directory: paths given relative to the caller's directory are made absolute first.
abspath() { if [ -e "$1" ]; then realpath "$1"; else echo "$1"; fi; }
librispeech_root=$(abspath "${librispeech_root}")
lm_text=$(abspath "${lm_text}")
teacher=$(abspath "${teacher}")
cd "$(dirname "$0")"

driver=../../TEMPLATE/asr1/asr.sh
args=(
    --corpus_root "${librispeech_root}"
    --corpus_sets "train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"
    --combine_sets "train_960=train_clean_100,train_clean_360,train_other_500 dev=dev_clean,dev_other"
    --train_set train_960
    --valid_set dev --test_sets "dev_clean dev_other test_clean test_other"
    --lm_text "${lm_text}"
    --token_type bpe --nbpe 5000 --bpemode unigram
    --teacher "${teacher}"
    --systems "ctc interctc aed final_aed_kd inter_aed_kd" --sf_systems ctc
    --asr_config_dir conf
    --lm_config conf/train_lm_transformer.yaml
    --inference_config conf/decode_sf.yaml
    --datadir "${datadir}" --python "${python}"
)

exec "${driver}" "${args[@]}" --stage "${stage}" --stop_stage "${stop_stage}" "${extra[@]}"
