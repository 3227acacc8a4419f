#!/usr/bin/env bash
# Link an ESPnet checkout's egs2 template (asr.sh, utils/, steps/, scripts/, pyscripts/) and
# the swbd recipe's data-preparation helpers into this recipe, as egs2/TEMPLATE/asr1/setup.sh
# does for a new recipe. Fails, linking nothing, when the checkout lacks one of them.
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
# Switchboard-1 training data as ESPnet's swbd recipe prepares it (local/data.sh stage 1):
# swbd1_prepare_dict.sh applies local/dict.patch and runs format_acronyms_dict.py (with
# MSU_single_letter.txt); swbd1_data_prep.sh runs swbd1_map_words.pl and
# map_acronyms_transcripts.py. They call each other as local/<name>, so they are linked into
# local/. egs2/swbd/asr1/local holds most of them (some as links into egs/swbd/asr1/local);
# dict.patch and map_acronyms_transcripts.py live only in egs/swbd/asr1/local.
swbd=(swbd1_data_download.sh swbd1_prepare_dict.sh swbd1_data_prep.sh swbd1_map_words.pl
      swbd1_fix_speakerid.pl format_acronyms_dict.py MSU_single_letter.txt dict.patch
      map_acronyms_transcripts.py)
"${template_only}" && swbd=()
missing=()
for f in "${template[@]}"; do
    [ -e "${root}/egs2/TEMPLATE/asr1/${f}" ] || missing+=("egs2/TEMPLATE/asr1/${f}")
done
declare -A src=()
for f in ${swbd[@]+"${swbd[@]}"}; do
    for d in egs2/swbd/asr1/local egs/swbd/asr1/local; do
        if [ -e "${root}/${d}/${f}" ]; then src[${f}]=${root}/${d}/${f}; break; fi
    done
    [ -n "${src[${f}]:-}" ] || missing+=("egs2/swbd/asr1/local/${f} (or egs/swbd/asr1/local/${f})")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "$0: the ESPnet checkout ${root} lacks what this recipe links:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "(asr.sh stages 2- run without the swbd files: local/setup_espnet.sh --template_only and run.sh --skip_local_data true)" >&2
    exit 1
fi
for f in "${template[@]}"; do
    ln -sfn "${root}/egs2/TEMPLATE/asr1/${f}" "${f}"
done
for f in ${swbd[@]+"${swbd[@]}"}; do
    ln -sfn "${src[${f}]}" "local/${f}"
done
echo "linked ESPnet (${root}) into $(pwd)"
