#!/usr/bin/env bash
# The body of both LibriSpeech recipes, sourced by egs/librispeech/asr1/run.sh (960 h) and
# egs/librispeech_100/asr1/run.sh (100 h) after they set their sets:
#   corpus_sets   LibriSpeech set directories to prepare (stage 1)
#   combine_sets  prepared sets to merge, TARGET=SOURCE,SOURCE ... (always "dev=dev_clean,dev_other", as ESPnet)
#   train_set     the training set
# It runs the shared stage driver (../../TEMPLATE/asr1/asr.sh) in the recipe's own directory, with that
# directory's conf/ (ESPnet's LibriSpeech Conformer configs, one file per system).
set -euo pipefail

librispeech_root=  # a directory holding LibriSpeech's set directories (train-clean-100/ ... test-other/, or
                   # LibriSpeech/<set>/ as the archives unpack); needed by stage 1 only
lm_text=           # optional extra LM text, one sentence a line (.gz allowed): librispeech-lm-norm.txt.gz
                   # (openslr.org/11). Without it the shallow-fusion LM sees only the training transcripts.
teacher=           # where the masked LM the KD configs name (model_conf.teacher.model: bert-base-uncased) is;
                   # default: the configs' teacher.model, that hub id. Machines without internet cannot reach
                   # the hub: save AutoModelForMaskedLM + AutoTokenizer with save_pretrained elsewhere, copy the
                   # directory, and pass its path (used for extraction and training alike, and recorded in each
                   # system's config.yaml).
stage=1
stop_stage=100
datadir=data       # relative --datadir/--expdir/--dumpdir are relative to the recipe directory, as in ESPnet
python=python3
passthrough=()     # every other option goes to asr.sh: --ngpu, --nj, --expdir, ...
_body_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_driver="${_body_dir}/../../../TEMPLATE/asr1/asr.sh"
_help_driver="${_driver}"
. "${_body_dir}/../../../TEMPLATE/asr1/parse_options.sh"

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

args=(
    --corpus_root "${librispeech_root}"
    --corpus_sets "${corpus_sets}"
    --combine_sets "${combine_sets}"
    --train_set "${train_set}"
    --speed_perturb_factors "0.9 1.0 1.1"
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

exec "${_driver}" "${args[@]}" --stage "${stage}" --stop_stage "${stop_stage}" "${passthrough[@]}"
