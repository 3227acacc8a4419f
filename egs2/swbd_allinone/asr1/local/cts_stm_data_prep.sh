#!/usr/bin/env bash
# Kaldi data dir of a conversational-telephone-speech test set from its .sph audio and NIST
# .stm reference (Hub5'00, RT02, RT03), the way ESPnet's swbd recipe prepares eval2000/rt03:
# one "speaker" per conversation side, utterances = STM segments (IGNORE_TIME_SEGMENT and
# inter_segment_gap dropped), stm/glm kept for sclite.
# Usage: local/cts_stm_data_prep.sh NAME SPH_DIR STM_DIR      -> data/NAME
# Also writes data/NAME/utt2subset: the name of the directory holding each utterance's .sph.
set -euo pipefail
[ $# -eq 3 ] || { echo "Usage: $0 NAME SPH_DIR STM_DIR" >&2; exit 1; }
name=$1 sph_dir=$2 stm_dir=$3
command -v sph2pipe >/dev/null || { echo "$0: sph2pipe not on PATH" >&2; exit 1; }
dir=data/local/${name}
dest=data/${name}
mkdir -p "${dir}" "${dest}"

find -L "${sph_dir}" -iname '*.sph' | sort > "${dir}/sph.flist"
[ -s "${dir}/sph.flist" ] || { echo "$0: no .sph files under ${sph_dir}" >&2; exit 1; }
find -L "${stm_dir}" -iname '*.stm' | sort > "${dir}/stm.flist"
[ -s "${dir}/stm.flist" ] || { echo "$0: no .stm files under ${stm_dir}" >&2; exit 1; }

# recording id = file name without .sph; side A = channel 1, side B = channel 2
awk '{ n = split($1, p, "/"); id = p[n]; sub(/\.sph$/, "", id); sub(/\.SPH$/, "", id);
       printf("%s-A sph2pipe -f wav -p -c 1 %s |\n", id, $1);
       printf("%s-B sph2pipe -f wav -p -c 2 %s |\n", id, $1); }' "${dir}/sph.flist" \
    | sort > "${dest}/wav.scp"
awk '{ n = split($1, p, "/"); id = p[n]; sub(/\.sph$/, "", id); sub(/\.SPH$/, "", id);
       print id, p[n - 1] }' "${dir}/sph.flist" | sort > "${dir}/reco2subset"

# stm lines: FILE CHANNEL SPEAKER START END [<LABELS>] WORDS...   (channel A|B or 1|2)
xargs cat < "${dir}/stm.flist" | grep -v '^;;' | grep -v inter_segment_gap \
    | awk '{ side = ($2 == "1" || $2 == "A") ? "A" : "B"; spk = $1 "-" side;
             utt = sprintf("%s_%06d-%06d", spk, $4 * 100, $5 * 100);
             first = ($6 ~ /^</) ? 7 : 6;
             printf("%s %s %s %s", utt, spk, $4, $5);
             for (n = first; n <= NF; n++) printf(" %s", $n); print "" }' \
    | sort -u -k1,1 > "${dir}/segments_text"
grep -v IGNORE_TIME_SEGMENT "${dir}/segments_text" > "${dir}/segments_text.keep" || true
awk '{ print $1, $2, $3, $4 }' "${dir}/segments_text.keep" > "${dest}/segments"
awk '{ printf("%s", $1); for (n = 5; n <= NF; n++) printf(" %s", $n); print "" }' \
    "${dir}/segments_text.keep" > "${dest}/text"
awk '{ print $1, $2 }' "${dest}/segments" > "${dest}/utt2spk"
utils/utt2spk_to_spk2utt.pl "${dest}/utt2spk" > "${dest}/spk2utt"
awk 'NR == FNR { sub_[$1] = $2; next } { r = $2; sub(/-[AB]$/, "", r); print $1, sub_[r] }' \
    "${dir}/reco2subset" "${dest}/segments" > "${dest}/utt2subset"
xargs cat < "${dir}/stm.flist" | sed -e 's:((:(:' -e 's:<B_ASIDE>::g' -e 's:<E_ASIDE>::g' \
    | grep -v inter_segment_gap > "${dest}/stm"
glm=$(find -L "${stm_dir}/.." -iname '*.glm' 2>/dev/null | head -1 || true)
[ -n "${glm}" ] && cp "${glm}" "${dest}/glm"
utils/validate_data_dir.sh --no-feats "${dest}"
echo "$0: ${dest}: $(wc -l < "${dest}/text") utterances"
