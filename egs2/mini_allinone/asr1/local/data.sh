#!/usr/bin/env bash
# Stage 1 of run.sh: render the embedded synthetic corpus into data/{train,dev,test,test_unseen}.
# Usage: local/data.sh [--num_train N] [--num_dev N] [--num_test N] [--num_test_unseen N] [--seed S] [--nj J]
set -euo pipefail
python -m espnet_allinone.data.synth --out_dir data "$@"
