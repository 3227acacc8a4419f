"""Kaldi-style data-dir files (``wav.scp``, ``text``, ``utt2spk``, ``segments``, ...): the
one reader of the package, the benchmarks and the recipes' Python.

A table file has one ``<key> <value>`` line per entry (the value may be empty or hold
spaces); empty lines are skipped and a repeated key is an error naming the file and line.
"""

from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

PathLike = Union[str, Path]


def read_table(path: PathLike, keys: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """``<key> <value>`` lines -> {key: value} in file order (only ``keys`` when given).

    Raises:
        FileNotFoundError: no such file; ValueError: a key appears twice (file:line).
    """
    wanted = None if keys is None else set(keys)
    table: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            key, _, value = line.strip().partition(" ")
            if not key or (wanted is not None and key not in wanted):
                continue
            if key in table:
                raise ValueError(f"{path}:{number}: key {key!r} repeated (first on line {lines[key]})")
            table[key], lines[key] = value.strip(), number
    return table


def read_text(path: PathLike) -> Dict[str, str]:
    """A ``text`` file: {utt: transcript}, words separated by single spaces (empty kept)."""
    return {utt: " ".join(words.split()) for utt, words in read_table(path).items()}


def read_segments(path: PathLike) -> Dict[str, Tuple[str, float, float]]:
    """A ``segments`` file: {utt: (recording, start, end)} (seconds; end -1 = to the end).

    Raises ValueError naming the file and utterance for a malformed line.
    """
    out = {}
    for utt, value in read_table(path).items():
        fields = value.split()
        try:
            reco, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise ValueError(
                f"{path}: bad line for {utt}: {value!r} (expected '<utt> <recording> <start> <end>')"
            ) from None
        out[utt] = (reco, start, end)
    return out


def write_table(path: PathLike, table: Dict[str, str]) -> None:
    """Write {key: value} as a table file (``<key> <value>`` lines, in dict order)."""
    Path(path).write_text("".join(f"{k} {v}".rstrip() + "\n" for k, v in table.items()), encoding="utf-8")
