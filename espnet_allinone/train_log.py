"""Read ESPnet's ``train.log``: the "N epoch results" line of every epoch.

    epochs = epoch_results("exp/asr_K/train.log")     # {1: {"train": {...}, "valid": {...}}, ...}
    epochs[3]["valid"]["acc_mean"]                      # '0.441'
    train_seconds("exp/asr_K")                          # training + validation time, all epochs
    step_times("exp/asr_K/train.log")                   # (total, mean) seconds of the iterations

One parser for the recipes, benchmarks and reports. Where an epoch appears in several
logs (a run resumed after its log was rotated), the newest line counts.
"""

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

_EPOCH = re.compile(r"(\d+)epoch results: (.*)")
_PHASE = re.compile(r"\[(\w+)\] (.*?)(?= \[\w+\] |$)")
_PAIR = re.compile(r"([\w.-]+)=(.*?)(?=, [\w.-]+=|$)")  # values may hold ", " (time=1 hour, 2 minutes)
_UNITS = {"week": 604800, "day": 86400, "hour": 3600, "minute": 60, "second": 1}
_AMOUNT = re.compile(r"([0-9.]+) (week|day|hour|minute|second)s?")

PathLike = Union[str, Path]


def timespan_seconds(text: str) -> float:
    """Seconds of a humanfriendly timespan such as '1 hour, 2 minutes and 3.5 seconds'."""
    return sum(float(n) * _UNITS[u] for n, u in _AMOUNT.findall(text))


def epoch_results(logs: Union[PathLike, Iterable[PathLike]]) -> Dict[int, Dict[str, Dict[str, str]]]:
    """{epoch: {phase ("train", "valid", ...): {key: value string}}} of one or more logs."""
    logs = [logs] if isinstance(logs, (str, Path)) else list(logs)
    epochs: Dict[int, Dict[str, Dict[str, str]]] = {}
    for log in logs:
        for epoch, line in _EPOCH.findall(Path(log).read_text(errors="replace")):
            epochs[int(epoch)] = {
                phase: dict(_PAIR.findall(body.rstrip(", "))) for phase, body in _PHASE.findall(line)
            }
    return dict(sorted(epochs.items()))


def train_logs(exp: PathLike) -> List[Path]:
    """``exp/train.log`` and the logs ESPnet's launcher rotated away on restarts
    (``train.1.log`` newest ... ``train.N.log`` oldest), oldest first."""
    exp = Path(exp)
    rotated = [(int(m.group(1)), p) for p in exp.glob("train.*.log")
               for m in [re.fullmatch(r"train\.(\d+)\.log", p.name)] if m]
    logs = [p for _, p in sorted(rotated, reverse=True)]
    return logs + ([exp / "train.log"] if (exp / "train.log").exists() else [])


def train_seconds(exp: PathLike) -> Optional[float]:
    """Training + validation time of every epoch in :func:`train_logs`; None if none ended."""
    epochs = epoch_results(train_logs(exp))
    if not epochs:
        return None
    return sum(
        timespan_seconds(stats.get("time", "")) for phases in epochs.values() for stats in phases.values()
    )


def step_times(train_log: PathLike) -> Optional[Tuple[float, float]]:
    """(total, mean) seconds of the training iterations: ESPnet's per-iteration
    ``train_time`` (forward + backward + update; no data loading, validation or start-up)
    weighted by each epoch's iterations (``total_count`` is cumulative)."""
    if not Path(train_log).exists():
        return None
    epochs = [p["train"] for p in epoch_results(train_log).values() if "total_count" in p.get("train", {})]
    if not epochs:
        return None
    counts = [int(e["total_count"]) for e in epochs]
    steps = [c - p for c, p in zip(counts, [0] + counts[:-1])]
    total = sum(float(e["train_time"]) * n for e, n in zip(epochs, steps))
    return total, total / max(sum(steps), 1)
