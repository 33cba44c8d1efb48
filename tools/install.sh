#!/usr/bin/env bash
# Creates (or updates) a virtual environment with espnet-bertkd, its test and recipe dependencies, at the versions
# pinned for one supported ESPnet release (tools/constraints/espnet<RELEASE>.txt):
#
#   tools/install.sh                         # ESPnet 202611 on Python 3.12 (or 3.13), in .venv
#   tools/install.sh --espnet 202511         # ESPnet 202511 on Python 3.11
#   tools/install.sh --venv DIR --python PY  # another place, another interpreter
#
# Then `. .venv/bin/activate` (the recipes call `python3`) or call .venv/bin/python directly.
set -euo pipefail

espnet=202611
venv=
python=
usage="usage: $0 [--espnet 202611|202511] [--venv DIR] [--python INTERPRETER]"
while [ $# -gt 0 ]; do
    case "$1" in
        --espnet) espnet=$2; shift 2 ;;
        --venv) venv=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        -h|--help) echo "${usage}"; exit 0 ;;
        *) echo "$0: unknown option $1" >&2; echo "${usage}" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
constraints=${top}/tools/constraints/espnet${espnet}.txt
[ -f "${constraints}" ] || { echo "$0: ESPnet ${espnet} is not a supported release (no ${constraints})" >&2; exit 2; }
case "${espnet}" in
    # ESPnet 202611 requires Python >= 3.12, < 3.14; its Lightning trainer's `lightning` comes with the extra
    202611) minors="3.12 3.13"; extras=recipe,test,lm,lightning ;;
    *) minors="3.11 3.10"; extras=recipe,test,lm ;;  # ESPnet 202511 installs on Python < 3.12 (and lightning itself)
esac
venv=${venv:-${top}/.venv}

# An interpreter of a fitting minor version: pythonX.Y on PATH, or one that pyenv has (its shims refuse to run a
# version that is not selected, so the version is selected for this command only).
runs() { "$@" -c 'import sys' >/dev/null 2>&1; }
if [ -z "${python}" ]; then
    for minor in ${minors}; do
        if runs "python${minor}"; then python=python${minor}; break; fi
        if command -v pyenv >/dev/null 2>&1; then
            version=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1 || true)
            if [ -n "${version}" ] && PYENV_VERSION=${version} runs "python${minor}"; then
                export PYENV_VERSION=${version}; python=python${minor}; break
            fi
        fi
    done
fi
[ -n "${python}" ] || { echo "$0: ESPnet ${espnet} needs Python ${minors// / or }; none found (pass --python)" >&2; exit 1; }

echo "$0: ESPnet ${espnet}, $(${python} --version 2>&1), virtual environment ${venv}"
[ -x "${venv}/bin/python" ] || "${python}" -m venv "${venv}"
"${venv}/bin/python" -m pip install -q --disable-pip-version-check -c "${constraints}" -e "${top}[${extras}]"
"${venv}/bin/python" -c 'import espnet2, espnet_bertkd.compat as c; print("installed: espnet", c.espnet_version())'
