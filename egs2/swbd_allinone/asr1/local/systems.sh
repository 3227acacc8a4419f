# shellcheck shell=bash disable=SC2034
# The systems of the paper's Tables 1-2: name -> training config (conf/tuning/train_asr_<config>.yaml).
# Sourced by run.sh and local/results.sh.
# Table 1: single-attribute all-in-one models (without / with KL) and their separate twins.
table1_systems="baseline depth depth_kl width width_kl prec prec_kl
    sep_8-2048-32bit sep_12-1024-32bit sep_12-2048-4bit sep_12-2048-8bit"
# Table 2: multi-attribute all-in-one A (no KL) and K (KL), and the 8 separate systems.
table2_systems="baseline A K sep_12-2048-8bit sep_12-2048-4bit sep_12-1024-8bit sep_12-1024-4bit
    sep_8-2048-8bit sep_8-2048-4bit sep_8-1024-8bit sep_8-1024-4bit"

system_config() {  # system name -> training config
    case "$1" in
        baseline) echo conf/tuning/train_asr_conformer_baseline.yaml ;;
        sep_*) echo "conf/tuning/train_asr_separate_${1#sep_}.yaml" ;;
        *) echo "conf/tuning/train_asr_allinone_$1.yaml" ;;
    esac
}
