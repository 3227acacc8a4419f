#!/usr/bin/env bash
# All-in-one fine-tuning of wav2vec2-base-100h on LibriSpeech train-clean-100 (paper Sec. 4.3,
# Tables 3-4), with ESPnet's egs2/TEMPLATE/asr1/asr.sh.
#   local/setup_espnet.sh /path/to/espnet   # once: links asr.sh, utils/ ... of an ESPnet checkout
#   ./run.sh                                                        # Table 4 system K
#   ./run.sh --asr_config conf/tuning/train_asr_wav2vec2_table4_A.yaml
#   ./run.sh --asr_config conf/tuning/train_asr_wav2vec2_single_11-2560-6bit.yaml --decode_subnets 11-2560-6bit
# Steps: asr.sh stages 1-4 (data), the token list and CTC head from the checkpoint's vocabulary
# (so ESPnet's CTC layer starts as its lm_head), asr.sh stages 10-11 (stats, training), then
# stages 12-13 (decoding, scoring) once per subnet, each with conf/decode/decode_ctc_<subnet>.yaml.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=3
hf_model=facebook/wav2vec2-base-100h       # or a local directory with the same files
asr_config=conf/tuning/train_asr_wav2vec2_table4_K.yaml
decode_subnets="12-3072-8bit 12-3072-6bit 12-2560-8bit 12-2560-6bit 11-3072-8bit 11-3072-6bit 11-2560-8bit 11-2560-6bit"
ngpu=1
nj=16
inference_nj=16
[ -x asr.sh ] || { echo "run local/setup_espnet.sh first (links ESPnet's asr.sh)" >&2; exit 1; }
. utils/parse_options.sh
. ./path.sh

token_dir=data/en_token_list/char
asr_opts=(
    --lang en --ngpu "${ngpu}" --nj "${nj}" --inference_nj "${inference_nj}"
    --feats_type raw --audio_format flac --fs 16k --max_wav_duration 20
    --token_type char --feats_normalize none --use_lm false
    --train_set train_clean_100 --valid_set dev --test_sets "dev_clean dev_other test_clean test_other"
    --asr_config "${asr_config}" --asr_args "--encoder_conf hf_model=${hf_model}"
    --pretrained_model "${token_dir}/ctc_head.pth"
    --inference_asr_model valid.loss.ave.pth
)

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    ./asr.sh "${asr_opts[@]}" --stage 1 --stop_stage 4
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    # instead of asr.sh stage 5: the checkpoint's own vocabulary, <blank> first
    python -m espnet_allinone.bin.hf_token_list --hf_model "${hf_model}" --output_dir "${token_dir}"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    ./asr.sh "${asr_opts[@]}" --stage 10 --stop_stage 11
    for subnet in ${decode_subnets}; do
        ./asr.sh "${asr_opts[@]}" --stage 12 --stop_stage 13 \
            --inference_config "conf/decode/decode_ctc_${subnet}.yaml"
    done
fi
