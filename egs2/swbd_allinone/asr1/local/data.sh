#!/usr/bin/env bash
# Data preparation for the paper's Switchboard setup (Tables 1-2):
#   train_nodup (Switchboard-1, ~286 h after removing duplicates), train_dev (first 4000
#   utterances), and the seven test sets of the tables:
#   eval2000_swbd eval2000_callhm (Hub5'00), rt02_swbd1 rt02_swbd2 rt02_swbd3 (RT02),
#   rt03_swbd rt03_fsh (RT03).
# Follows ESPnet's egs2/swbd/asr1/local/data.sh: Switchboard-1 is prepared by that recipe's
# own scripts (linked by local/setup_espnet.sh); the test sets by local/cts_stm_data_prep.sh
# from their NIST STM references; audio is upsampled 8k -> 16k; test references are
# lowercased with ESPnet's eval2000 clean-up (no %hesitation, <tags>, parentheses).
# Usage: local/data.sh [--stage N] [--stop_stage N]
set -euo pipefail
log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) $*"; }

stage=1
stop_stage=4
. utils/parse_options.sh
. ./db.sh
. ./path.sh
. ./cmd.sh

upsample() {  # 8 kHz telephone audio -> 16 kHz, in the wav.scp pipe (as ESPnet's swbd)
    sed -i.bak -e "s/$/ sox -R -t wav - -t wav - rate 16000 dither | /" "$1/wav.scp"
}

clean_ref() {  # ESPnet swbd's clean-up of eval2000 references, for every test set
    local d=$1
    cp "${d}/text" "${d}/text.org"
    paste -d "" <(cut -f 1 -d" " "${d}/text.org") \
        <(awk '{$1=""; print tolower($0)}' "${d}/text.org" \
          | perl -pe 's| \(\%.*?\)||g' | perl -pe 's| \<.*?\>||g' | sed -e "s/(//g" -e "s/)//g") \
        | sed -e 's/\s\+/ /g' | awk '{ if (NF > 1) print }' > "${d}/text"
    utils/fix_data_dir.sh "${d}"
}

split_by_prefix() {  # split_by_prefix SRC DEST PATTERN: utterances whose id matches PATTERN
    local src=$1 dst=$2 pattern=$3
    mkdir -p data/local
    awk '{print $1}' "${src}/text" | grep -E "${pattern}" > "data/local/$(basename "${dst}").list"
    utils/subset_data_dir.sh --utt-list "data/local/$(basename "${dst}").list" "${src}" "${dst}"
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "stage 1: Switchboard-1 training data (ESPnet's swbd scripts)"
    [ -n "${SWBD}" ] || { log "fill SWBD in db.sh"; exit 1; }
    local/swbd1_data_download.sh "${SWBD}"
    local/swbd1_prepare_dict.sh
    local/swbd1_data_prep.sh "${SWBD}"
    upsample data/train
    utils/fix_data_dir.sh data/train
    utils/subset_data_dir.sh --first data/train 4000 data/train_dev
    n=$(($(wc -l < data/train/segments) - 4000))
    utils/subset_data_dir.sh --last data/train ${n} data/train_nodev
    utils/data/remove_dup_utts.sh 300 data/train_nodev data/train_nodup
    for x in train_nodup train_dev; do  # remove ._ . _1 symbols from the text (ESPnet swbd)
        cp "data/${x}/text" "data/${x}/text.backup"
        sed -i 's/\._/ /g; s/\.//g; s/them_1/them/g' "data/${x}/text"
    done
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "stage 2: Hub5'00, RT02, RT03 from their STM references"
    for v in EVAL2000_SPEECH EVAL2000_TRANS RT02 RT03; do
        [ -n "${!v}" ] || { log "fill ${v} in db.sh"; exit 1; }
    done
    local/cts_stm_data_prep.sh eval2000 "${EVAL2000_SPEECH}/english" "${EVAL2000_TRANS}/reference"
    local/cts_stm_data_prep.sh rt02 "${RT02}" "${RT02}"
    local/cts_stm_data_prep.sh rt03 "${RT03}/data/audio/eval03/english/cts" \
        "${RT03}/data/references/eval03/english/cts"
    for x in eval2000 rt02 rt03; do
        upsample "data/${x}"
        clean_ref "data/${x}"
    done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    log "stage 3: the tables' test subsets"
    split_by_prefix data/eval2000 data/eval2000_swbd '^sw_'      # Switchboard-2 part
    split_by_prefix data/eval2000 data/eval2000_callhm '^en_'    # CallHome English part
    split_by_prefix data/rt03 data/rt03_swbd '^sw'               # Switchboard cellular part
    split_by_prefix data/rt03 data/rt03_fsh '^fsh'               # Fisher part
    # RT02's parts are Switchboard-1 (swbd1), Switchboard-2 (swbd2) and Switchboard
    # cellular (swbd3) conversations; cts_stm_data_prep.sh keeps the name of the directory
    # each .sph file lies in (utt2subset), which is how LDC's release groups them.
    for part in swbd1 swbd2 swbd3; do
        awk -v p=${part} '$2 == p {print $1}' data/rt02/utt2subset > "data/local/rt02_${part}.list"
        utils/subset_data_dir.sh --utt-list "data/local/rt02_${part}.list" data/rt02 "data/rt02_${part}"
    done
    for x in eval2000_swbd eval2000_callhm rt02_swbd1 rt02_swbd2 rt02_swbd3 rt03_swbd rt03_fsh; do
        [ -s "data/${x}/text" ] || { log "data/${x} is empty: check the corpus layout"; exit 1; }
        # the Hub5 scoring's references (local/score.sh restricts the stm to the subset's recordings)
        for f in stm glm; do
            if [ -f "data/${x%_*}/${f}" ]; then cp "data/${x%_*}/${f}" "data/${x}/${f}"; fi
        done
        log "data/${x}: $(wc -l < data/${x}/text) utterances"
    done
fi
log "done"
