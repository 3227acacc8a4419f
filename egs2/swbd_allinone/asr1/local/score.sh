#!/usr/bin/env bash
# Switchboard scoring as ESPnet's egs2/swbd recipe does it (its local/score.sh, which asr.sh
# stage 13 calls after sclite): for every decoded set of an experiment whose data dir has a
# NIST stm and glm, the hypotheses go to a ctm, noise marks, <unk>, hesitations and partial
# words are dropped, and hubscr.pl -h hub5 -g glm scores them against the stm of the set's
# recordings (so eval2000_swbd / eval2000_callhm / rt03_swbd / rt03_fsh are the subsets).
# Writes <decode dir>/<set>/score_hub5/ (hubscr.pl's reports, result.txt).
# Usage: local/score.sh <asr_exp>
set -euo pipefail
[ $# -eq 1 ] || { echo "Usage: $0 <asr_exp>" >&2; exit 1; }
asr_exp=$1
[ -f ./path.sh ] && . ./path.sh
for dir in "${asr_exp}"/decode_*/*/; do
    dir=${dir%/}
    set_name=$(basename "${dir}")
    data=data/${set_name}
    [ -f "${dir}/text" ] && [ -f "${data}/stm" ] && [ -f "${data}/glm" ] || continue
    out=${dir}/score_hub5
    [ -f "${out}/result.txt" ] && [ "${out}/result.txt" -nt "${dir}/text" ] && continue
    python -m espnet_allinone.scoring.hub5 --data_dir "${data}" --hyp_text "${dir}/text" \
        --out_dir "${out}"
done
