#!/usr/bin/env bash
# LibriSpeech 960 h: the systems of docs/method.md (ctc, interctc, aed, final_aed_kd, inter_aed_kd; the ctc baseline
# also with beam search + Transformer-LM shallow fusion) trained on train_960, validated on dev (dev-clean +
# dev-other, as ESPnet), decoded and scored on dev/test clean/other. The stages are the shared driver's
# (../../TEMPLATE/asr1/asr.sh), run by local/librispeech.sh (shared with ../../librispeech_100/asr1); this script
# names the sets, and conf/ holds the configs.
#
#   ./run.sh --librispeech_root /data/LibriSpeech --lm_text /data/librispeech-lm-norm.txt.gz --ngpu 4
#   ./run.sh --librispeech_root /data/LibriSpeech --teacher /models/bert-base-uncased   # offline: a local copy
#   ./run.sh --stage 10 --stop_stage 13 --systems "ctc inter_aed_kd"
set -euo pipefail

corpus_sets="train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"
combine_sets="train_960=train_clean_100,train_clean_360,train_other_500 dev=dev_clean,dev_other"
train_set=train_960
. "$(dirname "$0")/local/librispeech.sh"
