#!/usr/bin/env bash
# Link an ESPnet checkout's egs2 template (asr.sh, utils/, steps/, scripts/, pyscripts/) and the
# librispeech recipe's download/data-preparation scripts into this recipe, as
# egs2/TEMPLATE/asr1/setup.sh does for a new recipe. Fails, linking nothing, when the checkout
# lacks one of them.
# Usage: local/setup_espnet.sh [--template_only] [ESPNET_ROOT]
#   --template_only: only the template (for data dirs prepared elsewhere: run.sh --skip_local_data true)
set -euo pipefail
cd "$(dirname "$0")/.."
template_only=false
if [ "${1:-}" = --template_only ]; then template_only=true; shift; fi
root=${1:-${ESPNET_ROOT:-$(cd ../../.. && pwd)/../espnet}}
[ -f "${root}/egs2/TEMPLATE/asr1/asr.sh" ] || {
    echo "$0: no ESPnet checkout at ${root} (no egs2/TEMPLATE/asr1/asr.sh)" >&2; exit 1; }
root=$(cd "${root}" && pwd)
template=(asr.sh scripts pyscripts utils steps)
libri=(download_and_untar.sh data_prep.sh)
"${template_only}" && libri=()
missing=()
for f in "${template[@]}"; do
    [ -e "${root}/egs2/TEMPLATE/asr1/${f}" ] || missing+=("egs2/TEMPLATE/asr1/${f}")
done
for f in ${libri[@]+"${libri[@]}"}; do
    [ -e "${root}/egs2/librispeech/asr1/local/${f}" ] || missing+=("egs2/librispeech/asr1/local/${f}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "$0: the ESPnet checkout ${root} lacks what this recipe links:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "(with data dirs prepared elsewhere: local/setup_espnet.sh --template_only and run.sh --skip_local_data true)" >&2
    exit 1
fi
for f in "${template[@]}"; do
    ln -sfn "${root}/egs2/TEMPLATE/asr1/${f}" "${f}"
done
for f in ${libri[@]+"${libri[@]}"}; do
    ln -sfn "${root}/egs2/librispeech/asr1/local/${f}" "local/${f}"
done
echo "linked ESPnet (${root}) into $(pwd)"
