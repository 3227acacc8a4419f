#!/usr/bin/env bash
# All-in-one compression on Switchboard-300h: the paper's Tables 1-2 with ESPnet's asr.sh.
#   stage 1  data + token list + feature shapes: asr.sh stages 1-10, once (baseline config)
#   stage 2  train every system of --systems: asr.sh stage 11, exp/asr_<system>
#   stage 3  decode every subnet of every system: local/decode_subnets.sh (asr.sh 12-13)
#   stage 4  tables: local/results.sh (report CLI: WER per set, average, size, ratio,
#            MAPSSWE marks, training time from the logs)
# Usage: ./run.sh [--stage N] [--stop_stage N] [--table 1|2|all] [--systems "K A ..."]
#                 [--ngpu N] [--nj N] [--inference_nj N] [--skip_local_data true]
#                 [--test_sets "eval2000_swbd ..."] [--speed_perturb_factors "1.1 0.9 1.0"]
#                 [--decode_subnets "12-2048-8bit ..."]  (stage 3: these subnets only; default all)
#                 [asr.sh options, e.g. --num_nodes 2, --asr_args "...", --inference_args "..."]
#   --skip_local_data true: data/ already holds the Kaldi data dirs (train_nodup, train_dev and
#       the test sets, e.g. prepared at another site): stage 1 starts asr.sh at its stage 2
#       instead of running local/data.sh (asr.sh stage 1).
# asr.sh options after run.sh's own go to every asr.sh call (the last value wins), e.g. a
# smaller --nbpe or another --asr_config for a quick check.
# Multi-GPU / multi-node training is ESPnet's own (--ngpu N [--num_nodes M], DDP); the
# all-in-one configs set `unused_parameters: true` where a step can leave parameters unused.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=4
table=all
systems=
ngpu=1
nj=32
inference_nj=32
skip_local_data=false
test_sets="eval2000_swbd eval2000_callhm rt02_swbd1 rt02_swbd2 rt02_swbd3 rt03_swbd rt03_fsh"
speed_perturb_factors="1.1 0.9 1.0"
decode_subnets=
. ./path.sh
. ./cmd.sh
. local/systems.sh
asr_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --stage|--stop_stage|--table|--systems|--ngpu|--nj|--inference_nj|--skip_local_data|--test_sets|--speed_perturb_factors|--decode_subnets)
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) asr_args+=("$1"); shift ;;
    esac
done
# shellcheck disable=SC2086
case "${table}" in
    1) default_systems=${table1_systems} ;;
    2) default_systems=${table2_systems} ;;
    all) default_systems=$(echo ${table1_systems} ${table2_systems} | tr ' ' '\n' | awk '!seen[$0]++') ;;
    *) echo "--table must be 1, 2 or all: ${table}" >&2; exit 1 ;;
esac
systems=${systems:-${default_systems}}

case "${skip_local_data}" in true|false) ;; *) echo "--skip_local_data must be true or false" >&2; exit 1 ;; esac

train_set=train_nodup
valid_set=train_dev
sp=${speed_perturb_factors:+_sp}  # asr.sh trains on ${train_set}_sp when it perturbs
stats_dir=exp/asr_stats_raw_en_bpe2000${sp}
# --bpe_train_text and --lm_train_text name the speed-perturbed set, as ESPnet's swbd run.sh
# does: asr.sh fixes their defaults before it appends _sp to train_set and reads
# lm_train_text in stage 4 even with --use_lm false.
common=(
    --lang en --ngpu "${ngpu}" --nj "${nj}" --inference_nj "${inference_nj}"
    --token_type bpe --nbpe 2000 --feats_type raw --use_lm false
    --speed_perturb_factors "${speed_perturb_factors}"
    --bpe_train_text "dump/raw/${train_set}${sp}/text" --lm_train_text "dump/raw/${train_set}${sp}/text"
    --train_set "${train_set}" --valid_set "${valid_set}" --test_sets "${test_sets}"
    --asr_stats_dir "${stats_dir}" --local_data_opts "" --score_opts "-s"
)

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    [ -x asr.sh ] || { echo "run local/setup_espnet.sh first (links ESPnet's asr.sh)" >&2; exit 1; }
    first=1
    "${skip_local_data}" && first=2  # data/ prepared already: no local/data.sh
    # Feature statistics depend only on the front-end, which every system shares.
    ./asr.sh "${common[@]}" --stage "${first}" --stop_stage 10 \
        --asr_config "$(system_config baseline)" "${asr_args[@]}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    for s in ${systems}; do
        ./asr.sh "${common[@]}" --stage 11 --stop_stage 11 \
            --asr_config "$(system_config "${s}")" --asr_exp "exp/asr_${s}" "${asr_args[@]}"
    done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    for s in ${systems}; do
        local/decode_subnets.sh --asr_exp "exp/asr_${s}" --subnets "${decode_subnets}" \
            -- "${common[@]}" "${asr_args[@]}"
    done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    local/results.sh --table "${table}" --test_sets "${test_sets}"
fi
