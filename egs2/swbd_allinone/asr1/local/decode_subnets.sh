#!/usr/bin/env bash
# Decode every subnet of one trained system with asr.sh (stages 12-13: decoding + sclite,
# then local/score.sh: Hub5 scoring), and lay the hypotheses out as the report CLI reads them:
#   all-in-one:  exp/asr_X/decode_subnets/<subnet>/<set>/text
#   separate:    exp/separate_decode/<subnet>/<set>/text   (its one subnet)
#   stock:       exp/asr_X/decode_asr/<set>/text           (the baseline)
# A subnet is chosen by its decode config conf/decode/decode_asr_<subnet>.yaml (`subnet:`),
# or, for a subnet without one, by conf/decode_asr.yaml with --inference_args "--subnet <subnet>".
# The checkpoint is the one of the system's first best_model_criterion
# (--inference_asr_model valid.acc_mean.ave.pth for the all-in-one configs: asr.sh's default
# valid.acc.ave.pth does not exist for them).
# Usage: local/decode_subnets.sh --asr_exp exp/asr_K [--subnets "8-1024-4bit ..."] -- [asr.sh options]
#   --subnets: decode only these subnets of an all-in-one system (default: all of its space)
#   --inference_config / --inference_args among the asr.sh options replace the decode config
#   of every subnet / are added to the subnet's own.
set -euo pipefail
asr_exp=
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --asr_exp) asr_exp=$2; shift 2 ;;
        --subnets) only=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done
[ -f "${asr_exp}/config.yaml" ] || { echo "$0: ${asr_exp} is not trained" >&2; exit 1; }
inference_config=
inference_args=
asr_opts=()
while [ $# -gt 0 ]; do  # the decode options; the rest goes to asr.sh as given
    case "$1" in
        --inference_config|--inference_args) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) asr_opts+=("$1"); shift ;;
    esac
done
subnets=$(python local/subnets.py "${asr_exp}/config.yaml" subnets)
model=$(python local/subnets.py "${asr_exp}/config.yaml" model)
name=$(basename "${asr_exp}")

decode() {  # decode TAG CONFIG INFERENCE_ARGS
    ./asr.sh ${asr_opts[@]+"${asr_opts[@]}"} --stage 12 --stop_stage 13 --asr_exp "${asr_exp}" \
        --inference_asr_model "${model}" --inference_tag "$1" --inference_config "$2" \
        --inference_args "$3"
}

read -r -a subnet_list <<< "${subnets}"
if [ ${#subnet_list[@]} -le 1 ]; then
    # stock or separately trained: one system, decoded as it is (no `subnet:`)
    decode decode_asr "${inference_config:-conf/decode_asr.yaml}" "${inference_args}"
    if [ "${name}" != asr_baseline ]; then  # asr_sep_<subnet>
        mkdir -p exp/separate_decode
        ln -sfn "../${name}/decode_asr" "exp/separate_decode/${name#asr_sep_}"
    fi
else
    if [ -n "${only}" ]; then
        for s in ${only}; do
            [[ " ${subnets} " == *" ${s} "* ]] || {
                echo "$0: ${s} is not a subnet of ${asr_exp}: ${subnets}" >&2; exit 1; }
        done
        read -r -a subnet_list <<< "${only}"
    fi
    for s in "${subnet_list[@]}"; do
        config=${inference_config:-conf/decode/decode_asr_${s}.yaml}
        args=${inference_args}
        if [ ! -f "${config}" ] || [ -n "${inference_config}" ]; then
            config=${inference_config:-conf/decode_asr.yaml}
            args="${inference_args} --subnet ${s}"
        fi
        decode "decode_${s}" "${config}" "${args}"
        mkdir -p "${asr_exp}/decode_subnets"
        ln -sfn "../decode_${s}" "${asr_exp}/decode_subnets/${s}"
    done
fi
