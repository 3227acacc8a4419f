#!/usr/bin/env bash
# Stage 1 of asr.sh: LibriSpeech train-clean-100, dev-{clean,other}, test-{clean,other} -> data/,
# downloaded into ${LIBRISPEECH} (db.sh) when missing, with the librispeech recipe's scripts
# (linked by local/setup_espnet.sh); dev = dev-clean + dev-other for validation.
set -euo pipefail
. ./path.sh
. ./db.sh
data_url=www.openslr.org/resources/12
mkdir -p "${LIBRISPEECH}"
for part in train-clean-100 dev-clean dev-other test-clean test-other; do
    if [ ! -f "${LIBRISPEECH}/LibriSpeech/${part}/.complete" ]; then
        local/download_and_untar.sh "${LIBRISPEECH}" "${data_url}" "${part}"
    fi
    local/data_prep.sh "${LIBRISPEECH}/LibriSpeech/${part}" "data/${part//-/_}"
done
utils/combine_data.sh data/dev data/dev_clean data/dev_other
