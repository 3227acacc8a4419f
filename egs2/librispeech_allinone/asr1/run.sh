#!/usr/bin/env bash
# All-in-one fine-tuning of wav2vec2-base-100h on LibriSpeech train-clean-100 (paper Sec. 4.3,
# Tables 3-4), with ESPnet's egs2/TEMPLATE/asr1/asr.sh.
#   local/setup_espnet.sh /path/to/espnet   # once: links asr.sh, utils/ ... of an ESPnet checkout
#   ./run.sh                                                        # Table 4 system K
#   ./run.sh --asr_config conf/tuning/train_asr_wav2vec2_table4_A.yaml
#   ./run.sh --asr_config conf/tuning/train_asr_wav2vec2_single_11-2560-6bit.yaml --decode_subnets 11-2560-6bit
# Stages: (1) asr.sh stages 1-4 (data), (2) the token list and CTC head from the checkpoint's
# vocabulary (so ESPnet's CTC layer starts as its lm_head), (3) asr.sh stages 10-11 (stats,
# training), (4) asr.sh stages 12-13 (decoding, scoring) once per subnet, each with
# conf/decode/decode_ctc_<subnet>.yaml
# (a subnet without one: conf/decode_ctc.yaml + --subnet <subnet>); greedy CTC by default,
# --ctc_decoding beam: CTC prefix beam search (exp/asr_*/decode_ctc_beam_<subnet>/).
# Options: --stage/--stop_stage (1-4), --hf_model, --asr_config, --decode_subnets, --ngpu, --nj,
#   --inference_nj, --ctc_decoding greedy|beam, --skip_local_data true (data/ already holds the
#   Kaldi data dirs train_clean_100, dev, dev_clean, ...: stage 1 starts asr.sh at its stage 2
#   instead of running local/data.sh), --test_sets, --asr_args / --inference_args (added to
#   the recipe's own).
# The decoded checkpoint: valid.loss.ave.pth (these configs' best_model_criterion); the
# experiment: exp/asr_<config name>, e.g. exp/asr_train_asr_wav2vec2_table4_K.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=4
hf_model=facebook/wav2vec2-base-100h       # or a local directory with the same files
asr_config=conf/tuning/train_asr_wav2vec2_table4_K.yaml
decode_subnets="12-3072-8bit 12-3072-6bit 12-2560-8bit 12-2560-6bit 11-3072-8bit 11-3072-6bit 11-2560-8bit 11-2560-6bit"
ngpu=1
nj=16
inference_nj=16
ctc_decoding=greedy
skip_local_data=false
test_sets="dev_clean dev_other test_clean test_other"
asr_args=
inference_args=
[ -x asr.sh ] || { echo "run local/setup_espnet.sh first (links ESPnet's asr.sh)" >&2; exit 1; }
. utils/parse_options.sh
. ./path.sh
case "${ctc_decoding}" in
    greedy) tag_prefix=decode_ctc ;;
    beam) tag_prefix=decode_ctc_beam; inference_args="--ctc_greedy false ${inference_args}" ;;
    *) echo "--ctc_decoding must be greedy or beam: ${ctc_decoding}" >&2; exit 1 ;;
esac
case "${skip_local_data}" in true|false) ;; *) echo "--skip_local_data must be true or false" >&2; exit 1 ;; esac

token_dir=data/en_token_list/char
asr_opts=(
    --lang en --ngpu "${ngpu}" --nj "${nj}" --inference_nj "${inference_nj}"
    --feats_type raw --audio_format flac --fs 16k --max_wav_duration 20
    --token_type char --feats_normalize none --use_lm false
    --train_set train_clean_100 --valid_set dev --test_sets "${test_sets}"
    --asr_config "${asr_config}" --asr_tag "$(basename "${asr_config}" .yaml)" --asr_args "--encoder_conf hf_model=${hf_model} ${asr_args}"
    --pretrained_model "${token_dir}/ctc_head.pth"
    --inference_asr_model valid.loss.ave.pth
)

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    first=1
    "${skip_local_data}" && first=2  # data/ prepared already: no local/data.sh
    ./asr.sh "${asr_opts[@]}" --stage "${first}" --stop_stage 4
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    # instead of asr.sh stage 5: the checkpoint's own vocabulary, <blank> first
    python -m espnet_allinone.bin.hf_token_list --hf_model "${hf_model}" --output_dir "${token_dir}"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    ./asr.sh "${asr_opts[@]}" --stage 10 --stop_stage 11
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    for subnet in ${decode_subnets}; do
        config=conf/decode/decode_ctc_${subnet}.yaml args=${inference_args}
        if [ ! -f "${config}" ]; then  # a subnet without its own config: the base + --subnet
            config=conf/decode_ctc.yaml args="${inference_args} --subnet ${subnet}"
        fi
        ./asr.sh "${asr_opts[@]}" --stage 12 --stop_stage 13 --inference_config "${config}" \
            --inference_tag "${tag_prefix}_${subnet}" --inference_args "${args}"
    done
fi
