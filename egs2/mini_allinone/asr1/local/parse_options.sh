#!/usr/bin/env bash
# Source after the defaults: `--name value` sets the already-defined shell variable `name`
# (what ESPnet's utils/parse_options.sh does; this recipe runs without an ESPnet checkout).
while [ $# -gt 0 ]; do
    case "$1" in
        --*) name=${1#--}; [ $# -ge 2 ] || { echo "missing value for $1" >&2; exit 1; }
             declare -p "${name}" >/dev/null 2>&1 || { echo "unknown option $1" >&2; exit 1; }
             printf -v "${name}" '%s' "$2"; shift 2 ;;
        *) echo "unexpected argument $1" >&2; exit 1 ;;
    esac
done
