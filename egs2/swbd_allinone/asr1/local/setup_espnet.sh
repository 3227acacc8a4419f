#!/usr/bin/env bash
# Link an ESPnet checkout's egs2 template (asr.sh, utils/, steps/, scripts/, pyscripts/) and
# the swbd recipe's data-preparation helpers into this recipe, as egs2/TEMPLATE/asr1/setup.sh
# does for a new recipe. Usage: local/setup_espnet.sh [ESPNET_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
root=${1:-${ESPNET_ROOT}}
[ -f "${root}/egs2/TEMPLATE/asr1/asr.sh" ] || { echo "no ESPnet checkout at ${root}" >&2; exit 1; }
root=$(cd "${root}" && pwd)
for f in asr.sh scripts pyscripts utils steps; do
    ln -sfn "${root}/egs2/TEMPLATE/asr1/${f}" "${f}"
done
# Switchboard-1 training data as ESPnet's swbd recipe prepares it (dictionary, word map);
# linked into local/ because those scripts call each other as local/<name>.
for f in swbd1_data_download.sh swbd1_prepare_dict.sh swbd1_data_prep.sh swbd1_map_words.pl \
        swbd1_fix_speakerid.pl format_acronyms_dict.py MSU_single_letter.txt; do
    ln -sfn "${root}/egs2/swbd/asr1/local/${f}" "local/${f}"
done
echo "linked ESPnet (${root}) into $(pwd)"
