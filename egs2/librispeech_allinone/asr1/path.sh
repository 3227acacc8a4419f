# shellcheck shell=bash
# Environment of the recipe, as ESPnet's egs2/TEMPLATE/asr1/path.sh sets it up:
# the ESPnet checkout's Python (tools/activate_python.sh), its tools (tools/extra_path.sh:
# sctk, ...), spm_train, and the Kaldi-style utils/ asr.sh calls (linked or copied into
# the checkout's egs2/TEMPLATE/asr1).
# ESPnet checkout: $ESPNET_ROOT, else the one local/setup_espnet.sh linked asr.sh from,
# else ../../../../espnet (beside this project).
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAIN_ROOT=$(cd "${RECIPE_DIR}/../../.." && pwd)
if [ -z "${ESPNET_ROOT:-}" ]; then
    if [ -L "${RECIPE_DIR}/asr.sh" ]; then
        ESPNET_ROOT=$(cd "$(dirname "$(readlink -f "${RECIPE_DIR}/asr.sh")")/../../.." && pwd)
    else
        ESPNET_ROOT=${MAIN_ROOT}/../espnet
    fi
fi
export ESPNET_ROOT
if [ -f "${ESPNET_ROOT}/tools/activate_python.sh" ]; then
    # shellcheck disable=SC1091
    . "${ESPNET_ROOT}/tools/activate_python.sh"
elif [ -z "${VIRTUAL_ENV:-}" ] && [ -x "${MAIN_ROOT}/.venv/bin/python" ]; then
    export PATH="${MAIN_ROOT}/.venv/bin:${PATH}"   # this project's tools/setup.sh venv
fi
if [ -f "${ESPNET_ROOT}/tools/extra_path.sh" ]; then
    # shellcheck disable=SC1091
    . "${ESPNET_ROOT}/tools/extra_path.sh"
fi
# spm_train: utils/ in older checkouts, tools/sentencepiece_commands/ in those of 2023 and later
export PATH="${ESPNET_ROOT}/utils:${ESPNET_ROOT}/tools/sentencepiece_commands:${RECIPE_DIR}/utils:${PATH}"
# Debian's sctk package puts sclite in /usr/lib/sctk/bin, not on PATH
if ! command -v sclite >/dev/null 2>&1 && [ -x /usr/lib/sctk/bin/sclite ]; then
    export PATH="${PATH}:/usr/lib/sctk/bin"
fi
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=1
