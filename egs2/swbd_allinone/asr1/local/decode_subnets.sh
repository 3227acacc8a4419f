#!/usr/bin/env bash
# Decode every subnet of one trained system with asr.sh (stages 12-13: decoding + sclite),
# one decode config per subnet (conf/decode/decode_asr_<subnet>.yaml: `subnet:`), and lay
# the hypotheses out as the report CLI reads them:
#   all-in-one:  exp/asr_X/decode_subnets/<subnet>/<set>/text
#   separate:    exp/separate_decode/<subnet>/<set>/text   (its one subnet)
#   stock:       exp/asr_X/decode_asr/<set>/text           (the baseline)
# Usage: local/decode_subnets.sh --asr_exp exp/asr_K -- [asr.sh options]
set -euo pipefail
asr_exp=
while [ $# -gt 0 ]; do
    case "$1" in
        --asr_exp) asr_exp=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done
[ -f "${asr_exp}/config.yaml" ] || { echo "$0: ${asr_exp} is not trained" >&2; exit 1; }
subnets=$(python local/subnets.py "${asr_exp}/config.yaml" subnets)
model=$(python local/subnets.py "${asr_exp}/config.yaml" model)
name=$(basename "${asr_exp}")

decode() {  # decode TAG CONFIG [asr.sh options]
    local tag=$1 config=$2; shift 2
    ./asr.sh "$@" --stage 12 --stop_stage 13 --asr_exp "${asr_exp}" \
        --inference_asr_model "${model}" --inference_tag "${tag}" --inference_config "${config}"
}

if [ "$(echo ${subnets} | wc -w)" -le 1 ]; then
    # stock or separately trained: one system, decoded as it is (no `subnet:`)
    decode decode_asr conf/decode_asr.yaml "$@"
    if [ "${name}" != asr_baseline ]; then  # asr_sep_<subnet>
        mkdir -p exp/separate_decode
        ln -sfn "../${name}/decode_asr" "exp/separate_decode/${name#asr_sep_}"
    fi
else
    for s in ${subnets}; do
        decode "decode_${s}" "conf/decode/decode_asr_${s}.yaml" "$@"
        mkdir -p "${asr_exp}/decode_subnets"
        ln -sfn "../decode_${s}" "${asr_exp}/decode_subnets/${s}"
    done
fi
