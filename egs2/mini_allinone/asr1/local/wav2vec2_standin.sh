#!/usr/bin/env bash
# Small-scale proof of the all-in-one wav2vec2 path (egs2/librispeech_allinone), on the
# embedded synthetic corpus (run ./run.sh --stop_stage 1 first for data/{train,dev,test,test_unseen}).
#   1 subsets    the first --num_train / --num_eval utterances    -> ${dir}/data
#   2 standin    a small random-init HF Wav2Vec2ForCTC trained with CTC, save_pretrained
#                (stands in for facebook/wav2vec2-base-100h)      -> ${dir}/pretrained
#   3 tokens     ESPnet token list + CTC head from its vocabulary  -> ${dir}/token_list
#   4 finetune   ONE all-in-one fine-tune with stock espnet2.bin.asr_train (allinone_wav2vec2)
#   5 decode     every subnet (espnet_allinone.bin.decode_subnets, greedy CTC), the stand-in
#                itself (HF, greedy) -> ${dir}/standin_decode, and the subnets sliced from the
#                stand-in without the fine-tune (ablation)       -> .../decode_no_finetune
#   6 report     RESULTS.md / results.csv / wer_vs_size.png in ${dir}/asr_allinone, the
#                stand-in as the float baseline (6-576-32bit)
# Usage: local/wav2vec2_standin.sh [--stage N] [--stop_stage N] [--num_train N] [--num_eval N]
#            [--standin_epochs N] [--standin_budget SECONDS] [--finetune_epochs N]
#            [--batch_seconds S] [--finetune_batch_seconds S] [--ngpu 0|1] [--nj N] [--dir DIR]
# Tiny check (minutes): --num_train 60 --num_eval 10 --standin_epochs 1 --finetune_epochs 1
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh

stage=1
stop_stage=6
num_train=3000
num_eval=0                 # utterances per evaluation set (0 = all)
standin_epochs=12
standin_budget=0           # > 0: cut the stand-in's epochs to what fits into this many seconds
finetune_epochs=3
batch_seconds=40           # audio per batch of the stand-in training
finetune_batch_seconds=200 # audio per batch of the fine-tune (the paper: ~202 s)
ngpu=0                     # 1: both trainings and decoding on the GPU
nj=2
dir=exp/wav2vec2_standin
train_config=conf/tuning/train_asr_allinone_wav2vec2_standin.yaml
decode_config=conf/tuning/decode_ctc_wav2vec2.yaml
. local/parse_options.sh
device=cpu; [ "${ngpu}" -gt 0 ] && device=cuda
log() { echo "[$(date +%H:%M:%S)] $*"; }
sets="dev test test_unseen"
eval_dirs=(); for s in ${sets}; do eval_dirs+=("${dir}/data/${s}"); done
expdir=${dir}/asr_allinone
SECONDS=0

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "stage 1: data subsets -> ${dir}/data"
    for s in train ${sets}; do
        [ -f "data/${s}/wav.scp" ] || { echo "data/${s} missing: run ./run.sh --stop_stage 1" >&2; exit 1; }
        n=${num_eval}; [ "${s}" = train ] && n=${num_train}
        [ "${n}" -gt 0 ] || n=$(wc -l < "data/${s}/wav.scp")
        mkdir -p "${dir}/data/${s}"
        for f in wav.scp text utt2num_samples; do head -n "${n}" "data/${s}/${f}" > "${dir}/data/${s}/${f}"; done
    done
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "stage 2: train the stand-in wav2vec2 CTC model -> ${dir}/pretrained (log: ${dir}/standin.log)"
    python local/wav2vec2_standin.py --train_dir "${dir}/data/train" --valid_dir "${dir}/data/dev" \
        --out_dir "${dir}/pretrained" --epochs "${standin_epochs}" --batch_seconds "${batch_seconds}" \
        --time_budget "${standin_budget}" --device "${device}" \
        2>&1 | tee "${dir}/standin.log" | grep --line-buffered -E "parameters|epoch|saved" || true
    [ -f "${dir}/pretrained/config.json" ] || { tail -20 "${dir}/standin.log"; exit 1; }
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    log "stage 3: ESPnet token list and CTC head from the checkpoint's vocabulary"
    python -m espnet_allinone.bin.hf_token_list --hf_model "${dir}/pretrained" --output_dir "${dir}/token_list"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    # the paper's schedule: linear warm-up over the first 10% of the steps, linear decay to 0
    bins=$((finetune_batch_seconds * 16000))
    samples=$(awk '{ s += $2 } END { print s }' "${dir}/data/train/utt2num_samples")
    steps=$(( (samples + bins - 1) / bins * finetune_epochs ))
    warmup=$(( steps / 10 > 0 ? steps / 10 : 1 ))
    lr=$(python -c "import yaml; print(yaml.safe_load(open('${train_config}'))['optim_conf']['lr'])")
    log "stage 4: all-in-one fine-tune -> ${expdir} (${steps} steps, log: ${expdir}/train.log)"
    mkdir -p "${expdir}"
    python -m espnet2.bin.asr_train --config "${train_config}" --max_epoch "${finetune_epochs}" \
        --encoder_conf hf_model="${dir}/pretrained" --init_param "${dir}/token_list/ctc_head.pth" \
        --batch_bins "${bins}" \
        --scheduler_conf warmup_steps_list="[0,${warmup},${steps}]" \
        --scheduler_conf warmup_lr_list="[0.0,${lr},0.0]" \
        --use_preprocessor true --token_type char --token_list "${dir}/token_list/tokens.txt" \
        --train_data_path_and_name_and_type "${dir}/data/train/wav.scp,speech,sound" \
        --train_data_path_and_name_and_type "${dir}/data/train/text,text,text" \
        --valid_data_path_and_name_and_type "${dir}/data/dev/wav.scp,speech,sound" \
        --valid_data_path_and_name_and_type "${dir}/data/dev/text,text,text" \
        --train_shape_file "${dir}/data/train/utt2num_samples" \
        --valid_shape_file "${dir}/data/dev/utt2num_samples" \
        --resume true --output_dir "${expdir}" --ngpu "${ngpu}" >> "${expdir}/train.log" 2>&1 \
        || { tail -20 "${expdir}/train.log"; exit 1; }
    grep -E "[0-9]+epoch results" "${expdir}/train.log" | sed -E 's/^.*INFO: //; s/(.{240}).*/\1 .../' || true
fi

model_file=${expdir}/valid.loss.best.pth
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    log "stage 5: decode the stand-in (baseline) and every subnet on ${sets} (${nj} jobs)"
    python local/wav2vec2_standin.py --out_dir "${dir}/pretrained" --device "${device}" \
        --decode_dirs "${eval_dirs[@]}" --decode_out "${dir}/standin_decode" \
        2> "${dir}/standin_decode.log" || { tail -20 "${dir}/standin_decode.log"; exit 1; }
    grep "decoded" "${dir}/standin_decode.log" | sed -E 's/^.*INFO:? ?//' || true
    python -m espnet_allinone.bin.decode_subnets --asr_train_config "${expdir}/config.yaml" \
        --asr_model_file "${model_file}" --data_dir "${eval_dirs[@]}" \
        --subnets all --config "${decode_config}" --output_dir "${expdir}/decode" --nj "${nj}" --device "${device}" \
        2> "${expdir}/decode.log" || { tail -20 "${expdir}/decode.log"; exit 1; }
    # ablation: the subnets sliced from the stand-in without the all-in-one fine-tune
    python local/wav2vec2_init_checkpoint.py --asr_train_config "${expdir}/config.yaml" \
        --ctc_head "${dir}/token_list/ctc_head.pth" --out "${expdir}/init_no_finetune.pth" \
        2>> "${expdir}/decode.log" || { tail -20 "${expdir}/decode.log"; exit 1; }
    python -m espnet_allinone.bin.decode_subnets --asr_train_config "${expdir}/config.yaml" \
        --asr_model_file "${expdir}/init_no_finetune.pth" --data_dir "${eval_dirs[@]}" \
        --subnets all --config "${decode_config}" --output_dir "${expdir}/decode_no_finetune" \
        --nj "${nj}" --device "${device}" \
        2>> "${expdir}/decode.log" || { tail -20 "${expdir}/decode.log"; exit 1; }
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    log "stage 6: report"
    python -m espnet_allinone.bin.report --asr_train_config "${expdir}/config.yaml" \
        --asr_model_file "${model_file}" --decode_dir "${expdir}/decode" \
        --data_dir "${eval_dirs[@]}" --baseline_decode_dir "${dir}/standin_decode" \
        --baseline_name "$(python -c "import json; c = json.load(open('${dir}/pretrained/config.json')); \
print(f\"{c['num_hidden_layers']}-{c['intermediate_size']}-32bit\")")" \
        --out_dir "${expdir}" 2> "${expdir}/report.log" || { tail -20 "${expdir}/report.log"; exit 1; }
    cat "${expdir}/RESULTS.md" 2>/dev/null || true
    log "pooled WER [%] of each subnet: all-in-one fine-tune vs sliced from the stand-in without it"
    if ! python - "${expdir}" "${eval_dirs[@]}" 2>/dev/null <<'PY'
import sys
from pathlib import Path
from espnet_allinone.scoring.wer import score_files
exp, sets = Path(sys.argv[1]), [Path(d) for d in sys.argv[2:]]
for sub in sorted(p.name for p in (exp / "decode").iterdir() if p.is_dir()):
    row = []
    for dec in ("decode", "decode_no_finetune"):
        w = [score_files(d / "text", exp / dec / sub / d.name / "text") for d in sets]
        row.append(100 * sum(x.errors for x in w) / sum(x.words for x in w))
    print(f"{sub}: fine-tuned {row[0]:.1f}, without fine-tune {row[1]:.1f}")
PY
    then
        log "comparison skipped (no ${expdir}/decode_no_finetune: run stage 5)"
    fi
fi
log "done in ${SECONDS}s"
