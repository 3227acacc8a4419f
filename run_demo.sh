#!/usr/bin/env bash
# The README's first command. On a fresh Debian machine with Python 3.11 it installs
# everything (tools/setup.sh: apt packages, .venv, this project), then runs the mini
# recipe end to end: synthesize the embedded corpus, train ONE all-in-one Conformer,
# decode every one of its 8 subnets, and print the results table.
# Options go to egs2/mini_allinone/asr1/run.sh (e.g. --stage 5 to decode again).
set -euo pipefail
cd "$(dirname "$0")"
bash tools/setup.sh
exec egs2/mini_allinone/asr1/run.sh "$@"
