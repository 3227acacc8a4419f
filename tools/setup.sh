#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: system packages, a
# virtualenv in .venv, and this project installed in it (editable, with test extras).
# Usage: bash tools/setup.sh        (env: VENV=.venv PYTHON=python3)
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
# pip<25: newer pip rejects a dependency of espnet 202511 (ci_sdr's direct-URL extra).
"$VENV/bin/python" -m pip install -q "pip<25"
constraints=()
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  constraints=(-c requirements-py311.txt)  # known-good pins for Python 3.11
fi
echo "[setup] pip install -e .[test,wav2vec2,recipe,deploy] (first run downloads torch: a few minutes)"
"$VENV/bin/python" -m pip install -q "${constraints[@]}" -e ".[test,wav2vec2,recipe,deploy]"
"$VENV/bin/python" -c "import espnet2.tasks.asr as a; assert 'allinone_conformer' in a.encoder_choices.choices()" \
  2>/dev/null && echo "[setup] ok: espnet_allinone registered in ESPnet"
