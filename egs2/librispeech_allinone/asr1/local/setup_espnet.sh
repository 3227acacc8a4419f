#!/usr/bin/env bash
# Link an ESPnet checkout's egs2 template (asr.sh, utils/, steps/, scripts/, pyscripts/) and the
# librispeech recipe's download/data-preparation scripts into this recipe, as
# egs2/TEMPLATE/asr1/setup.sh does for a new recipe. Usage: local/setup_espnet.sh [ESPNET_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
root=${1:-${ESPNET_ROOT}}
[ -f "${root}/egs2/TEMPLATE/asr1/asr.sh" ] || { echo "no ESPnet checkout at ${root}" >&2; exit 1; }
root=$(cd "${root}" && pwd)
for f in asr.sh scripts pyscripts utils steps; do
    ln -sfn "${root}/egs2/TEMPLATE/asr1/${f}" "${f}"
done
for f in download_and_untar.sh data_prep.sh; do
    ln -sfn "${root}/egs2/librispeech/asr1/local/${f}" "local/${f}"
done
echo "linked ESPnet (${root}) into $(pwd)"
