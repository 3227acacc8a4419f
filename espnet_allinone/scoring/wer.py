"""Word error rate of Kaldi-style ``text`` files (``utt_id words...``)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Union

import jiwer


def read_text(path: Union[str, Path]) -> Dict[str, str]:
    """``utt_id transcript`` lines -> {utt_id: transcript} (empty transcripts kept)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, words = line.strip().partition(" ")
            out[key] = " ".join(words.split())
    return out


@dataclass(frozen=True)
class WER:
    errors: int
    words: int
    sentences: int

    @property
    def wer(self) -> float:
        """Percent."""
        return 100.0 * self.errors / max(self.words, 1)


def score(ref: Dict[str, str], hyp: Dict[str, str]) -> WER:
    """WER over the utterances of ``ref``; a missing hypothesis counts as empty."""
    keys = sorted(ref)
    refs = [ref[k] for k in keys]
    hyps = [hyp.get(k, "") for k in keys]
    errors = 0
    for r, h in zip(refs, hyps):
        if not r:
            errors += len(h.split())
            continue
        out = jiwer.process_words(r, h if h else "")
        errors += out.substitutions + out.deletions + out.insertions
    return WER(errors=errors, words=sum(len(r.split()) for r in refs), sentences=len(keys))
