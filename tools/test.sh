#!/usr/bin/env bash
# The test command of the README: set up (idempotent), then run the test suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
