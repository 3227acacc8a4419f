#!/usr/bin/env bash
# One-pass all-in-one vs separately trained systems on this recipe's corpus (paper Table 2,
# small scale): trains the 8 subnet systems one by one, the stock baseline, all-in-one A
# (no KL) and K (KL) with the same data and epochs, times them, decodes every system on
# data/test and writes the table, P1 and the step-time ratio (benchmarks/one_pass_vs_separate.py).
# Needs data/ and the token list (./run.sh --stop_stage 2). Resumable: rerun to continue.
# Usage: local/one_pass_vs_separate.sh [--scale 0.02] [--ngpu 1] [--nj 2] [--max_epoch N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh
exec python "${MAIN_ROOT}/benchmarks/one_pass_vs_separate.py" --recipe_dir . "$@"
