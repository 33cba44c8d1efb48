#!/usr/bin/env bash
# Checks that ESPnet's OWN recipe driver, egs2/TEMPLATE/asr1/asr.sh of an ESPnet checkout, drives the plugin through
# `--python "PY -m espnet_bertkd.launch"`: stages 10-13 (collect stats, training, decoding, sclite scoring) for
#   ctc        model: bertkd with kd_layers [] and ctc_weight 1.0 (a plain ESPnet CTC model)
#   kd_online  KD decoders at blocks 1 and 2, teacher mode online
#   kd_cached  the same with cached soft labels (extract_soft_labels), passed as data through --asr_args
# on a tiny offline corpus (egs/homophones/asr1/local/make_corpus.py) with a tiny teacher (espnet_bertkd.bin.train_teacher).
#
#   tools/check_espnet_asr_sh.sh --espnet_root ~/espnet [--workdir DIR] [--python PY] [--fresh true]
#
# PY is the interpreter with ESPnet and the plugin installed (default: python3 on PATH); its directory is put first
# on PATH, since asr.sh also runs bare `python3` and pyscripts. Needs `sclite` (Debian: apt-get install sctk).
# Re-running skips the finished steps (systems with a RESULTS.md); --fresh true starts from an empty workdir.
# Exits non-zero if any system lacks its model file, test hypotheses or RESULTS.md, or a KD system's logs contain
# ESPnet's misleading "Set decoder to none as ctc_weight==1.0".
set -euo pipefail

espnet_root=
workdir="${TMPDIR:-/tmp}/check_espnet_asr_sh"
python=python3
fresh=false
systems="ctc kd_online kd_cached"
nj=1
inference_nj=2
usage="usage: $0 --espnet_root DIR [--workdir DIR] [--python PY] [--fresh true|false] [--systems \"${systems}\"]"
while [ $# -gt 0 ]; do
    case "$1" in
        --espnet_root) espnet_root=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --fresh) fresh=$2; shift 2 ;;
        --systems) systems=$2; shift 2 ;;
        *) echo "${usage}" >&2; exit 2 ;;
    esac
done
[ -n "${espnet_root}" ] || { echo "${usage}" >&2; exit 2; }

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (check_espnet_asr_sh) $*"; }
die() { echo "check_espnet_asr_sh: $*" >&2; exit 1; }

tools_dir="$(cd "$(dirname "$0")" && pwd)"
helper="${tools_dir}/check_espnet_asr_sh_data.py"
template="$(cd "${espnet_root}" && pwd)/egs2/TEMPLATE/asr1"
[ -x "${template}/asr.sh" ] || die "${template}/asr.sh not found: --espnet_root must be an ESPnet checkout"
python="$(command -v "${python}")" || die "--python: no such interpreter"
case "${python}" in *" "*) die "--python ${python}: asr.sh splits --python on spaces; use a path without them" ;; esac
"${python}" -c "import espnet2, espnet_bertkd" || die "${python} cannot import espnet2 and espnet_bertkd"
python_bin="$(dirname "${python}")"  # not resolved: a venv's python3 is a symlink out of the venv
export PATH="${python_bin}:${PATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

sclite_dir=
for d in "$(dirname "$(command -v sclite 2>/dev/null || echo /nonexistent/x)")" "${espnet_root}/tools/sctk/bin" \
        /usr/lib/sctk/bin; do
    if [ -x "${d}/sclite" ]; then sclite_dir="$(cd "${d}" && pwd)"; break; fi
done
[ -n "${sclite_dir}" ] || die "sclite not found (asr.sh stage 13): apt-get install sctk, or ESPnet's tools/installers/install_sctk.sh"

checkout_commit="$(git -C "${espnet_root}" rev-parse HEAD 2>/dev/null || echo unknown)"
checkout_version="$({ cat "${espnet_root}/version.txt" || cat "${espnet_root}/espnet/version.txt" ||
    git -C "${espnet_root}" show HEAD:version.txt || git -C "${espnet_root}" show HEAD:espnet/version.txt; } 2>/dev/null |
    head -n 1 || true)"  # espnet/version.txt up to 202511
installed_version="$("${python}" -c 'from importlib.metadata import version; print(version("espnet"))')"
log "ESPnet checkout ${espnet_root} (commit ${checkout_commit}, version.txt ${checkout_version:-?});" \
    "installed espnet ${installed_version} (${python})"
if [ "${checkout_version}" != "${installed_version}" ]; then
    log "WARNING: the checkout's version differs from the installed espnet; its pyscripts may not match"
fi

# ---- 1. a recipe directory, as egs2/TEMPLATE/asr1/setup.sh makes one (absolute links: the workdir can be anywhere)
if [ "${fresh}" = true ]; then rm -rf "${workdir}"; fi
recipe="${workdir}/asr1"
mkdir -p "${recipe}/logs"
workdir="$(cd "${workdir}" && pwd)"
recipe="${workdir}/asr1"
for f in asr.sh db.sh scripts pyscripts steps utils; do
    ln -sfn "${template}/${f}" "${recipe}/${f}"
done
cp "${template}/cmd.sh" "${recipe}/cmd.sh"  # cmd_backend=local: run.pl
# TEMPLATE's path.sh sources ${MAIN_ROOT}/tools/* relative to the recipe; this one needs no Kaldi/tools install.
cat > "${recipe}/path.sh" <<EOF
# written by tools/check_espnet_asr_sh.sh: the environment of TEMPLATE's path.sh without Kaldi
export PATH="\${PWD}/utils:${sclite_dir}:${python_bin}:\${PATH}"
export LC_ALL=C
export OMP_NUM_THREADS=1
export PYTHONIOENCODING=UTF-8
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EOF
cd "${recipe}"

asr_sh=(./asr.sh --python "${python} -m espnet_bertkd.launch" --ngpu 0 --nj "${nj}" --inference_nj "${inference_nj}"
    --gpu_inference false --feats_type raw --audio_format flac --fs 16k --use_lm false --lang en --token_type char
    --train_set train_clean --valid_set dev_clean --test_sets test_clean)

step() {  # step NAME LOG CMD...: run CMD with its output in LOG; on failure show the log's end
    local name=$1 logfile=$2 start=${SECONDS}
    shift 2
    log "${name} (log: ${logfile})"
    if "$@" > "${logfile}" 2>&1; then
        log "${name}: done in $((SECONDS - start)) s"
    else
        tail -n 40 "${logfile}" >&2
        log "${name}: FAILED after $((SECONDS - start)) s"
        return 1
    fi
}

# ---- 2. data: a tiny synthetic corpus (eSpeak NG, 16 kHz FLAC), data/<set> and dump/raw/<set> (asr.sh stages 3-4)
step "corpus" logs/corpus.log "${python}" "${tools_dir}/../egs/homophones/asr1/local/make_corpus.py" --output_dir downloads/corpus \
    --size smoke --num_train 40 --num_dev 10 --num_test 10 --num_dev_other 0 --num_test_other 0 --lm_ratio 5 \
    --nj 2 --no_progress
[ -f dump/raw/lm_train.txt ] || step "data dirs" logs/dump.log "${python}" "${helper}" dump --corpus downloads/corpus \
    --recipe .
# asr.sh stage 5: data/en_token_list/char/tokens.txt from dump/raw/lm_train.txt
[ -f data/en_token_list/char/tokens.txt ] || step "asr.sh stage 5 (token list)" logs/asr_sh_stage5.log \
    "${asr_sh[@]}" --stage 5 --stop_stage 5

# ---- 3. the teacher, its cached soft labels, the configs
[ -f exp/teacher/training.json ] || step "teacher" logs/teacher.log "${python}" -m espnet_bertkd.bin.train_teacher \
    --text downloads/corpus/lm_text.txt --output_dir exp/teacher --epochs 1 --batch_size 32 --vocab_size 300 \
    --hidden_size 32 --num_layers 2 --num_heads 2 --seed 0 --device cpu
for dset in train_clean dev_clean; do
    [ -f "dump/kd/${dset}/kd_prob.scp" ] || step "soft labels ${dset}" "logs/soft_labels_${dset}.log" \
        "${python}" -m espnet_bertkd.bin.extract_soft_labels --teacher exp/teacher --text "dump/raw/${dset}/text" \
        --output_dir "dump/kd/${dset}" --topk 4 --device cpu
done
"${python}" "${helper}" configs --recipe . --teacher exp/teacher --topk 4

# ---- 4. asr.sh stages 10-13 per system
kd_data="--train_data_path_and_name_and_type dump/kd/train_clean/kd_token.scp,kd_token,kaldi_ark"
kd_data+=" --train_data_path_and_name_and_type dump/kd/train_clean/kd_prob.scp,kd_prob,kaldi_ark"
kd_data+=" --valid_data_path_and_name_and_type dump/kd/dev_clean/kd_token.scp,kd_token,kaldi_ark"
kd_data+=" --valid_data_path_and_name_and_type dump/kd/dev_clean/kd_prob.scp,kd_prob,kaldi_ark"
failed=
reused=
for system in ${systems}; do
    extra=()
    if [ "${system}" = kd_cached ]; then extra=(--asr_args "${kd_data}"); fi
    if [ -f "exp/asr_${system}/RESULTS.md" ]; then
        log "${system}: exp/asr_${system}/RESULTS.md exists, skipped (--fresh true to redo)"
        reused+=" ${system}"
        continue
    fi
    # --asr_tag: asr.sh would otherwise name the experiment after --asr_args ("File name too long");
    # --inference_asr_model: CTC-selected averages (asr.sh's default valid.acc.ave.pth needs an attention decoder)
    step "${system}: asr.sh stages 10-13" "logs/asr_sh_${system}.log" "${asr_sh[@]}" --stage 10 --stop_stage 13 \
        --asr_config "conf/train_${system}.yaml" --asr_tag "${system}" --asr_stats_dir "exp/asr_stats_${system}" \
        --inference_config conf/decode_ctc.yaml --inference_asr_model valid.cer_ctc.ave.pth "${extra[@]}" ||
        failed+=" ${system}"
done

# ---- 5. outcomes
log "total ${SECONDS} s; ESPnet ${espnet_root} commit ${checkout_commit}, espnet ${installed_version}, ${python}"
# shellcheck disable=SC2086  # systems is a word list
"${python}" "${helper}" check --recipe . --stages 10-13 --reused "${reused# }" ${systems}
if [ -n "${failed}" ]; then die "asr.sh failed for:${failed} (logs/asr_sh_<system>.log)"; fi
