# Where the corpora are (or will be downloaded to by local/data.sh).
LIBRISPEECH=${LIBRISPEECH:-downloads}
