#!/usr/bin/env bash
# The paper's Tables 1-2 from the decoded systems, by espnet_allinone.bin.report: WER per
# test set and their average, encoder parameters, compression ratio, MAPSSWE marks against
# the baseline (Sys. 0) and against the separately trained twin, training time (from the
# training logs: local/train_times.py), RTF (asr.sh's calculate_rtf.log).
# WER as the paper scores Switchboard: ESPnet swbd's Hub5 path (espnet_allinone.scoring.hub5:
# hypotheses to ctm, noise/<unk>/hesitations/partial words dropped, NIST hubscr.pl -h hub5
# with the set's glm against its stm) for every set with data/<set>/stm and glm, plain
# sclite on data/<set>/text for the others.
# Writes exp/results/table{1_depth,1_width,1_prec,2}/. Systems not trained (no
# exp/asr_<system>/config.yaml) are left out of the tables; a table without its main model is
# skipped.
# Usage: local/results.sh [--table 1|2|all] [--test_sets "eval2000_swbd ..."]
set -euo pipefail
table=all
test_sets="eval2000_swbd eval2000_callhm rt02_swbd1 rt02_swbd2 rt02_swbd3 rt03_swbd rt03_fsh"
while [ $# -gt 0 ]; do
    case "$1" in
        --table|--test_sets) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done
. ./path.sh

data_dirs=()
scoring=hub5
for t in ${test_sets}; do
    data_dirs+=("data/${t}")
    { [ -f "data/${t}/stm" ] && [ -f "data/${t}/glm" ]; } || scoring=text
done
[ "${scoring}" = hub5 ] || echo "$0: not every test set has stm and glm: scoring data/<set>/text with sclite" >&2
python local/train_times.py exp > exp/train_times.json

report() {  # report OUT KL_SYSTEM NO_KL_SYSTEM
    local out=$1 kl=$2 nokl=$3
    if [ ! -f "exp/asr_${kl}/config.yaml" ]; then
        echo "$0: exp/asr_${kl} is not trained: no exp/results/${out}" >&2
        return 0
    fi
    local model opts=()
    model=$(python local/subnets.py "exp/asr_${kl}/config.yaml" model)
    if [ -f "exp/asr_${nokl}/config.yaml" ]; then
        opts+=(--other_allinone "${nokl}:exp/asr_${nokl}/config.yaml:exp/asr_${nokl}/decode_subnets")
    fi
    [ -d exp/separate_decode ] && opts+=(--separate_decode_dir exp/separate_decode)
    if [ -d exp/asr_baseline/decode_asr ]; then
        # the baseline's architecture from its own config (12-2048-32bit in the paper)
        opts+=(--baseline_decode_dir exp/asr_baseline/decode_asr
               --baseline_name "$(python local/subnets.py exp/asr_baseline/config.yaml arch)")
    fi
    python -m espnet_allinone.bin.report \
        --asr_train_config "exp/asr_${kl}/config.yaml" --asr_model_file "exp/asr_${kl}/${model}" \
        --decode_dir "exp/asr_${kl}/decode_subnets" --data_dir "${data_dirs[@]}" \
        --out_dir "exp/results/${out}" --label "${kl}" --scoring "${scoring}" \
        ${opts[@]+"${opts[@]}"} --train_times exp/train_times.json
}

if [ "${table}" = 1 ] || [ "${table}" = all ]; then
    for attr in depth width prec; do
        report "table1_${attr}" "${attr}_kl" "${attr}"
    done
fi
if [ "${table}" = 2 ] || [ "${table}" = all ]; then
    report table2 K A
fi
echo "tables: exp/results/*/RESULTS.md"
