#!/usr/bin/env bash
# LibriSpeech 100 h: the systems of docs/method.md (ctc, interctc, aed, final_aed_kd, inter_aed_kd; the ctc baseline
# also with beam search + Transformer-LM shallow fusion) trained on train-clean-100, validated on dev (dev-clean +
# dev-other, as ESPnet's librispeech_100), decoded and scored on dev/test clean/other. The 960 h recipe's body
# (../../librispeech/asr1/local/librispeech.sh) runs the shared driver's stages (../../TEMPLATE/asr1/asr.sh); this
# script names the sets, and conf/ holds the configs.
#
#   ./run.sh --librispeech_root /data/LibriSpeech --lm_text /data/librispeech-lm-norm.txt.gz --ngpu 1
#   ./run.sh --librispeech_root /data/LibriSpeech --teacher /models/bert-base-uncased   # offline: a local copy
#   ./run.sh --stage 10 --stop_stage 13 --systems "ctc inter_aed_kd"
set -euo pipefail

corpus_sets="train-clean-100 dev-clean dev-other test-clean test-other"
combine_sets="dev=dev_clean,dev_other"
train_set=train_clean_100
. "$(dirname "$0")/../../librispeech/asr1/local/librispeech.sh"
