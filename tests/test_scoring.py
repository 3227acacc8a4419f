"""WER by NIST sclite and by jiwer on the same ESPnet ``text`` files."""

import random
from pathlib import Path
from typing import Dict, Tuple

import pytest

from espnet_allinone.scoring.sclite import find_sctk
from espnet_allinone.scoring.wer import WER, read_text, score, score_files, score_sclite

needs_sclite = pytest.mark.skipif(find_sctk("sclite") is None, reason="sclite (sctk) not installed")


def corrupt(words, rate: float, rng: random.Random, vocab) -> str:
    """Drop, replace or follow by an inserted word each of ``words`` with prob. ``rate``."""
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue
        if r < 2 * rate / 3:
            out.append(rng.choice(vocab))
        elif r < rate:
            out += [w, rng.choice(vocab)]
        else:
            out.append(w)
    return " ".join(out)


def generate(seed: int, rates=(0.1, 0.3), n: int = 60) -> Tuple[Dict[str, str], ...]:
    """References (0-15 words, some empty) and one hypothesis set per error rate."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30)] + ["ÜBER", "über"]  # non-ASCII, case-distinct
    refs = {
        f"spk{i % 3}-utt{i:03d}": " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 15)))
        for i in range(n)
    }
    return (refs,) + tuple({k: corrupt(v.split(), r, rng, vocab) for k, v in refs.items()} for r in rates)


def write_text(path: Path, texts: Dict[str, str]) -> Path:
    path.write_text("".join(f"{k} {v}\n" for k, v in texts.items()), encoding="utf-8")
    return path


def test_read_text_keeps_empty_transcripts(tmp_path):
    f = tmp_path / "text"
    f.write_text("u1 a  b\nu2\n\nu3 c\n", encoding="utf-8")
    assert read_text(f) == {"u1": "a b", "u2": "", "u3": "c"}


def test_jiwer_counts():
    got = score({"u1": "a b c d", "u2": "e f g", "u3": ""}, {"u1": "a x c d e", "u2": "e g", "u3": "z"})
    assert got == WER(errors=4, words=7, sentences=3, substitutions=1, deletions=1, insertions=2)
    assert got.wer == pytest.approx(400 / 7)
    assert score({"u1": "a b"}, {}).deletions == 2  # a missing hypothesis is empty


@needs_sclite
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_sclite_and_jiwer_agree_on_files(tmp_path, seed, rate):
    refs, hyps = generate(seed, rates=(rate,))
    del hyps[sorted(hyps)[0]]  # a missing hypothesis: empty for both
    ref_f, hyp_f = write_text(tmp_path / "ref", refs), write_text(tmp_path / "hyp", hyps)
    by_sclite = score_files(ref_f, hyp_f, backend="sclite")
    by_jiwer = score_files(ref_f, hyp_f, backend="jiwer")
    assert by_sclite.errors > 0
    assert (by_sclite.errors, by_sclite.words, by_sclite.sentences) == (
        by_jiwer.errors, by_jiwer.words, by_jiwer.sentences
    )
    assert by_sclite.wer == by_jiwer.wer


@needs_sclite
def test_auto_backend_uses_sclite(tmp_path):
    refs, hyps = generate(7, rates=(0.2,))
    f = write_text(tmp_path / "ref", refs), write_text(tmp_path / "hyp", hyps)
    assert score_files(*f) == score_files(*f, backend="sclite")


def test_auto_backend_falls_back_to_jiwer(tmp_path, monkeypatch):
    import espnet_allinone.scoring.wer as wer

    monkeypatch.setattr(wer, "find_sctk", lambda tool="sclite": None)
    refs, hyps = generate(8, rates=(0.2,))
    f = write_text(tmp_path / "ref", refs), write_text(tmp_path / "hyp", hyps)
    assert score_files(*f) == score_files(*f, backend="jiwer")


def test_unknown_backend_names_the_choices(tmp_path):
    f = write_text(tmp_path / "ref", {"u": "a"})
    with pytest.raises(ValueError, match="auto, sclite, jiwer"):
        score_files(f, f, backend="kaldi")


@needs_sclite
def test_known_difference_on_pathological_pairs():
    """sclite minimises 4 S + 3 (D + I), jiwer the error count: on rare strings they
    differ (here 7 vs 6 errors). Random hypotheses of ASR-like error rates (above)
    never hit it; found by searching 20000 random 3-word-vocabulary pairs (14 hits)."""
    ref, hyp = {"u": "b b b a a a a"}, {"u": "a c c c b b a"}
    assert (score_sclite(ref, hyp).errors, score(ref, hyp).errors) == (7, 6)


@needs_sclite
def test_both_backends_are_case_sensitive():
    """sclite folds ASCII case by default (ESPnet's asr.sh); here it runs with -s so that
    it counts exactly what jiwer counts, non-ASCII words included."""
    ref, hyp = {"u": "ÜBER a b"}, {"u": "über A b"}
    assert score_sclite(ref, hyp).errors == score(ref, hyp).errors == 2
