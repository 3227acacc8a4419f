#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: system packages, a virtualenv,
# and this project installed in it (editable, with every extra) beside one ESPnet line.
#
# Usage: bash tools/setup.sh
#   env VENV     the virtualenv (default .venv)
#       PYTHON   the interpreter that creates it (default python3)
#       ESPNET   the ESPnet line: 202511 or 202611 (default: the newest the interpreter
#                supports: 202511 on Python 3.10/3.11, 202611 on 3.12/3.13)
# Each line installs with its pins, constraints/espnet<line>.txt. ESPnet 202611 declares
# Python >= 3.12; ESPNET=202611 on Python 3.11 installs it anyway (its code runs on 3.11):
# espnet and espnet_model_zoo with --no-deps --ignore-requires-python, then their
# dependencies (core + the [train] extra) WITHOUT that flag, so that pip picks releases
# that support the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# espeak-ng/flite: speech synthesis for the embedded corpus; sctk: NIST sclite/sc_stats
# scoring; sox: audio tools; shellcheck: the recipe scripts' lint (tests). Installed only
# where missing.
pkgs=()
for p in espeak-ng flite sctk sox shellcheck; do
  dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[setup] apt-get install ${pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -z "${ESPNET:-}" ]; then
  if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then ESPNET=202611; else ESPNET=202511; fi
fi
constraints="constraints/espnet${ESPNET}.txt"
[ -f "$constraints" ] || { echo "[setup] ESPNET=$ESPNET: no $constraints (lines: 202511, 202611)" >&2; exit 2; }
echo "[setup] $VENV: Python $pyver, ESPnet $ESPNET line ($constraints)"

# pip<25: newer pip rejects a dependency of espnet 202511 (ci_sdr's direct-URL extra).
"$py" -m pip install -q "pip<25"
if [ "$ESPNET" != 202511 ] && ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  if [ "$("$py" -c 'from importlib.metadata import version as v; print(v("espnet"))' 2>/dev/null)" != "$ESPNET" ]; then
    echo "[setup] espnet==$ESPNET on Python $pyver: --ignore-requires-python for espnet and espnet_model_zoo only" \
      "(pip then lists their dependencies as missing: they are installed next)"
    "$py" -m pip install -q --no-deps --ignore-requires-python -c "$constraints" "espnet==$ESPNET" espnet_model_zoo
  fi
  # their declared dependencies (core + [train]), resolved for this interpreter
  "$py" -m pip install -q packaging
  deps_txt=$("$py" - <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement

for dist, extras in (("espnet", {"", "train"}), ("espnet_model_zoo", {""})):
    for line in requires(dist) or []:
        req = Requirement(line)
        if not req.marker or any(req.marker.evaluate({"extra": e}) for e in extras):
            req.marker = None
            print(req)
PY
)
  mapfile -t deps <<<"$deps_txt"
  "$py" -m pip install -q --prefer-binary -c "$constraints" "${deps[@]}"
fi
echo "[setup] pip install -e .[test,wav2vec2,recipe,deploy] (first run downloads torch: a few minutes)"
"$py" -m pip install -q --prefer-binary -c "$constraints" -e ".[test,wav2vec2,recipe,deploy]"
# registered for real (a failed registration leaves stand-ins that raise its message)
"$py" -c "import espnet2.tasks.asr, espnet_allinone._hook as h; assert h._failure is None, h._failure" \
  && echo "[setup] ok: espnet_allinone registered in ESPnet $("$py" -c 'from importlib.metadata import version; print(version("espnet"))')"
