# ESPnet checkout (for asr.sh, utils/, steps/, scripts/, pyscripts/, and the librispeech recipe's
# local/ scripts this recipe reuses): set ESPNET_ROOT or keep it as ../../../espnet.
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
ESPNET_ROOT=${ESPNET_ROOT:-${MAIN_ROOT}/../espnet}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "${MAIN_ROOT}/.venv/bin/python" ]; then
    export PATH="${MAIN_ROOT}/.venv/bin:${PATH}"
fi
export PATH="${PWD}/utils:${PATH}"
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=1
