#!/usr/bin/env python3
"""Training time of each system, read from ESPnet's training logs, as the report CLI's
``--train_times`` JSON: ``{"<system label | subnet | baseline>": seconds}``.

    local/train_times.py exp > exp/train_times.json

For every ``exp/asr_<system>`` it adds up ESPnet's per-epoch ``time=`` (train.log and the rotated train.N.log) of the
training and the validation phase of the "N epoch results" lines, the last line per epoch counting
(a resumed run repeats none). Keys: ``baseline``, the all-in-one labels (``K``, ``A``,
``depth_kl``, ...) and, for separately trained systems ``asr_sep_<subnet>``, the subnet.
"""

import json
import sys
from pathlib import Path
from typing import Dict

from espnet_allinone.train_log import train_seconds


def label(exp: Path) -> str:
    name = exp.name[len("asr_"):] if exp.name.startswith("asr_") else exp.name
    return name[len("sep_"):] if name.startswith("sep_") else name


def main(root: str) -> Dict[str, float]:
    times = {}
    for exp in sorted(Path(root).glob("asr_*")):
        seconds = train_seconds(exp)
        if seconds is not None:
            times[label(exp)] = seconds
    return times


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "exp"), indent=1))
