#!/usr/bin/env bash
# Mini all-in-one recipe on the embedded synthetic corpus, in ESPnet's egs2 layout.
#
# It runs WITHOUT an ESPnet checkout or Kaldi (which egs2/TEMPLATE/asr1/asr.sh needs):
# every stage calls ESPnet's (or this plugin's) Python CLIs directly, the same ones
# asr.sh calls.
#   1 data       synthesize data/{train,dev,test,test_unseen,dev_unseen}  (local/data.sh)
#   2 tokens     token list (char, or bpe with --token_type bpe); for char also the lexicon
#                and word 3-gram LM of the training text (data/lang_char) the default decoder uses
#   3 stats      ESPnet collect_stats: feature statistics and shapes
#   4 train      espnet2.bin.asr_train --encoder allinone_conformer --model allinone (resumable)
#   5 decode     every subnet on dev/dev_unseen/test/test_unseen (espnet_allinone.bin.decode_subnets)
#                into ${expdir}/decode (default config) or ${expdir}/<config name> (another)
#   6 report     WER, size, compression and RTF per subnet; RESULTS.md + wer_vs_size.png
# Usage: ./run.sh [--stage N] [--stop_stage N] [--num_train N] [--num_dev_unseen N] [--max_epoch N] [--nj N] [--ngpu 0|1]
#                 [--token_type char|bpe] [--nbpe N] [--train_config FILE] [--decode_config FILE]
#                 [--expdir DIR] [--stats_dir DIR] [--speed_perturb_factors "0.9 1.0 1.1"]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=1
stop_stage=6
num_train=3000
num_dev=100
num_test=200
num_test_unseen=100
num_dev_unseen=100
speed_perturb_factors=  # e.g. "0.9 1.0 1.1": train on data/train_sp (asr.sh's option)
seed=0
nj=2
ngpu=0
token_type=char
nbpe=150
max_epoch=
train_config=conf/train_asr_allinone_conformer.yaml
decode_config=conf/decode_asr.yaml
expdir=exp/asr_allinone
stats_dir=  # default: exp/asr_stats_<char|bpe_unigramN>
. local/parse_options.sh

log() { echo "[$(date +%H:%M:%S)] $*"; }
token_dir=data/token_list/${token_type}
[ "${token_type}" = bpe ] && token_dir=data/token_list/bpe_unigram${nbpe}  # as asr.sh names it
token_list=${token_dir}/tokens.txt
[ -n "${speed_perturb_factors}" ] && [ -z "${stats_dir}" ] && stats_dir=exp/asr_stats_$(basename "${token_dir}")_sp
stats_dir=${stats_dir:-exp/asr_stats_$(basename "${token_dir}")}
bpe_opts=()
[ "${token_type}" = bpe ] && bpe_opts=(--bpemodel "${token_dir}/bpe.model")
train_set=train
[ -n "${speed_perturb_factors}" ] && train_set=train_sp
data_opts=(
    --train_data_path_and_name_and_type data/${train_set}/wav.scp,speech,sound
    --train_data_path_and_name_and_type data/${train_set}/text,text,text
    --valid_data_path_and_name_and_type data/dev/wav.scp,speech,sound
    --valid_data_path_and_name_and_type data/dev/text,text,text
)
SECONDS=0

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "stage 1: synthesize the corpus (${num_train} training utterances)"
    local/data.sh --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" \
        --num_test_unseen "${num_test_unseen}" --num_dev_unseen "${num_dev_unseen}" --seed "${seed}" --nj "${nj}"
fi
if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ] && [ -n "${speed_perturb_factors}" ]; then
    log "stage 1: speed perturbation of data/train (${speed_perturb_factors}) -> data/train_sp"
    python -m espnet_allinone.data.perturb --src data/train --dst data/train_sp \
        --factors ${speed_perturb_factors} --nj "${nj}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "stage 2: ${token_type} token list"
    mkdir -p "${token_dir}"
    if [ "${token_type}" = bpe ]; then
        cut -d' ' -f2- data/train/text > "${token_dir}/train.txt"
        python - "${token_dir}" "${nbpe}" <<'PY'
import sys, sentencepiece as spm
d, n = sys.argv[1], int(sys.argv[2])
spm.SentencePieceTrainer.train(input=f"{d}/train.txt", model_prefix=f"{d}/bpe", vocab_size=n,
    model_type="unigram", character_coverage=1.0, input_sentence_size=100000000,
    minloglevel=2)
PY
    fi
    python -m espnet2.bin.tokenize_text --token_type "${token_type}" "${bpe_opts[@]}" \
        --input data/train/text --output "${token_list}" -f 2- --write_vocabulary true \
        --add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'
    log "$(wc -l < "${token_list}") tokens in ${token_list}"
    if [ "${token_type}" = char ]; then  # lexicon + word LM of conf/decode_asr.yaml
        python -m espnet_allinone.lang --text data/train/text --token_list "${token_list}" \
            --order 3 --out_dir data/lang_char
    fi
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    log "stage 3: collect feature statistics and shapes"
    mkdir -p exp
    python -m espnet2.bin.asr_train --collect_stats true --config "${train_config}" \
        --use_preprocessor true --token_type "${token_type}" --token_list "${token_list}" "${bpe_opts[@]}" \
        "${data_opts[@]}" --train_shape_file data/${train_set}/wav.scp --valid_shape_file data/dev/wav.scp \
        --batch_type unsorted --batch_size 16 --output_dir "${stats_dir}" --ngpu 0 \
        > "${stats_dir}.log" 2>&1 || { tail -20 "${stats_dir}.log"; exit 1; }
    for split in train valid; do
        # numel batching needs the vocabulary size after each text shape (as asr.sh does)
        awk -v N="$(wc -l < "${token_list}")" '{ print $0 "," N }' \
            "${stats_dir}/${split}/text_shape" > "${stats_dir}/${split}/text_shape.${token_type}"
    done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    log "stage 4: train the all-in-one model -> ${expdir} (log: ${expdir}/train.log)"
    mkdir -p "${expdir}"
    epoch_opts=()
    [ -n "${max_epoch}" ] && epoch_opts=(--max_epoch "${max_epoch}")
    # global_mvn on the command line, not in the YAML: it would break --collect_stats
    if ! python -m espnet2.bin.asr_train --config "${train_config}" "${epoch_opts[@]}" \
        --use_preprocessor true --token_type "${token_type}" --token_list "${token_list}" "${bpe_opts[@]}" \
        --normalize global_mvn --normalize_conf "stats_file=${stats_dir}/train/feats_stats.npz" \
        "${data_opts[@]}" \
        --train_shape_file "${stats_dir}/train/speech_shape" \
        --train_shape_file "${stats_dir}/train/text_shape.${token_type}" \
        --valid_shape_file "${stats_dir}/valid/speech_shape" \
        --valid_shape_file "${stats_dir}/valid/text_shape.${token_type}" \
        --resume true --output_dir "${expdir}" --ngpu "${ngpu}" 2>&1 \
        | tee -a "${expdir}/train.log" \
        | { grep --line-buffered -E "epoch results|[0-9]+epoch:train:" || true; } \
        | sed -u -E 's/^.*\) INFO: //; s/(.{200}).*/\1 .../'; then
        tail -20 "${expdir}/train.log"; echo "training failed (log: ${expdir}/train.log)" >&2; exit 1
    fi
fi

model_file=${expdir}/valid.acc_mean.ave.pth
if [ "${decode_config}" = conf/decode_asr.yaml ] && [ ${stop_stage} -ge 5 ] \
    && ! python -c "import flashlight.lib.text.decoder" 2>/dev/null; then
    # setup.py installs flashlight-text only where wheels exist (Python < 3.13)
    log "flashlight-text is not installed: decoding with greedy CTC (conf/decode_asr_greedy.yaml)" \
        "instead of the lexicon + word-LM decoder of conf/decode_asr.yaml"
    decode_config=conf/decode_asr_greedy.yaml
fi
eval_sets="dev dev_unseen test test_unseen"  # dev_unseen: a voice of neither training nor test_unseen
eval_dirs=()
for s in ${eval_sets}; do [ -s "data/${s}/wav.scp" ] && eval_dirs+=("data/${s}"); done
decode_dir=${expdir}/decode report_dir=${expdir}
if [ "${decode_config}" != conf/decode_asr.yaml ]; then  # another config: its own dir, as asr.sh
    decode_dir=${expdir}/$(basename "${decode_config}" .yaml) report_dir=${decode_dir}
fi
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    log "stage 5: decode every subnet on ${eval_dirs[*]#data/} (${nj} jobs)"
    python -m espnet_allinone.bin.decode_subnets --asr_train_config "${expdir}/config.yaml" \
        --asr_model_file "${model_file}" --data_dir "${eval_dirs[@]}" \
        --subnets all --config "${decode_config}" --output_dir "${decode_dir}" --nj "${nj}" \
        --device "$([ "${ngpu}" -gt 0 ] && echo cuda || echo cpu)" \
        2> "${expdir}/decode.log" || { tail -20 "${expdir}/decode.log"; exit 1; }
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    log "stage 6: report"
    python -m espnet_allinone.bin.report --asr_train_config "${expdir}/config.yaml" \
        --asr_model_file "${model_file}" --decode_dir "${decode_dir}" \
        --data_dir "${eval_dirs[@]}" --out_dir "${report_dir}" 2> "${expdir}/report.log"
    log "logs: ${expdir}/train.log, ${expdir}/decode.log"
fi
log "done in ${SECONDS}s"
