#!/usr/bin/env bash
# The test command of the README: set up both ESPnet lines (idempotent), then run the test
# suite on each: ESPnet 202611 (what ESPnet users install today, 202609-202611) and 202511
# (the last release for Python < 3.12). The interpreter's own line lives in .venv, the other
# in .venv-espnet<line> (tools/setup.sh). Extra arguments go to pytest on both lines, e.g.
# `bash tools/test.sh -m "not slow"`; ESPNET_LINES="202611" runs one line. A skipped test fails
# the run (ALLINONE_NO_SKIPS=1, tests/conftest.py) unless it does not apply to the line.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
own=$("$PYTHON" -c 'import sys; print(202611 if sys.version_info >= (3, 12) else 202511)')
status=0
summary=()
for line in ${ESPNET_LINES:-202611 202511}; do
  venv=.venv; [ "$line" = "$own" ] || venv=".venv-espnet$line"
  echo "=== ESPnet $line line: $venv ==="
  VENV=$venv ESPNET=$line bash tools/setup.sh
  start=$(date +%s)
  rc=0
  ALLINONE_NO_SKIPS=1 VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
    "$venv/bin/python" -m pytest -p no:cacheprovider -rs --durations=15 "$@" || rc=$?
  summary+=("ESPnet $line line: pytest exit $rc in $(( $(date +%s) - start )) s")
  [ "$rc" -eq 0 ] || status=1
done
printf '%s\n' "${summary[@]}"
exit "$status"
