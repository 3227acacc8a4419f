"""Word error rate of Kaldi-style ``text`` files (``utt_id words...``).

:func:`score_files` scores with NIST ``sclite`` (what ESPnet's recipes use) when it
is installed, else with ``jiwer``. Both count the same errors except in rare cases where
sclite's weighted alignment (4 per substitution, 3 per insertion/deletion) is not an
error-count minimum (see tests/test_scoring.py).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Union

import jiwer

from espnet_allinone.data.kaldi import read_text
from espnet_allinone.scoring.sclite import find_sctk, parse_dtl, run_sclite

__all__ = ["BACKENDS", "WER", "read_text", "resolve_backend", "score", "score_files"]

BACKENDS = ("auto", "sclite", "jiwer")


@dataclass(frozen=True)
class WER:
    """Error counts over the utterances of a reference (``words``: reference words)."""

    errors: int
    words: int
    sentences: int
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def wer(self) -> float:
        """Percent."""
        return 100.0 * self.errors / max(self.words, 1)


def score(ref: Dict[str, str], hyp: Dict[str, str]) -> WER:
    """WER over the utterances of ``ref`` with jiwer; a missing hypothesis counts as empty."""
    keys = sorted(ref)
    sub = dele = ins = 0
    for k in keys:
        r, h = ref[k], hyp.get(k, "")
        if not r:
            ins += len(h.split())
            continue
        out = jiwer.process_words(r, h)
        sub, dele, ins = sub + out.substitutions, dele + out.deletions, ins + out.insertions
    return WER(
        errors=sub + dele + ins,
        words=sum(len(ref[k].split()) for k in keys),
        sentences=len(keys),
        substitutions=sub,
        deletions=dele,
        insertions=ins,
    )


def score_sclite(ref: Dict[str, str], hyp: Dict[str, str]) -> WER:
    """As :func:`score`, counted by NIST sclite (FileNotFoundError if not installed)."""
    return WER(**parse_dtl(run_sclite(ref, hyp, report="dtl")))


def resolve_backend(backend: str = "auto") -> str:
    """``sclite`` or ``jiwer``: ``auto`` is sclite if installed, else jiwer."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown WER backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "sclite" if find_sctk("sclite") else "jiwer"
    return backend


def score_files(
    ref_text: Union[str, Path], hyp_text: Union[str, Path], backend: str = "auto"
) -> WER:
    """WER of the ``hyp_text`` file against the ``ref_text`` file (ESPnet ``text`` format).

    Args:
        backend: ``sclite``, ``jiwer``, or ``auto`` (sclite if installed, else jiwer).
    """
    ref, hyp = read_text(ref_text), read_text(hyp_text)
    return score_sclite(ref, hyp) if resolve_backend(backend) == "sclite" else score(ref, hyp)
