"""MAPSSWE in Python against NIST sc_stats on generated hypothesis sets."""

import re

import pytest

from espnet_allinone.scoring.mapsswe import align, mapsswe, segments
from espnet_allinone.scoring.sclite import find_sctk, run_sc_stats_mapsswe, run_sclite
from tests.test_scoring import generate

needs_sctk = pytest.mark.skipif(
    find_sctk("sclite") is None or find_sctk("sc_stats") is None, reason="sctk not installed"
)


@needs_sctk
@pytest.mark.parametrize(
    "seed,rates",
    [(0, (0.1, 0.3)), (1, (0.2, 0.2)), (2, (0.3, 0.1)), (3, (0.15, 0.2)), (4, (0.05, 0.5)), (5, (0.25, 0.3))],
)
def test_same_statistic_and_verdict_as_sc_stats(seed, rates):
    refs, a, b = generate(seed, rates=rates, n=80)
    want = run_sc_stats_mapsswe(refs, a, b)
    got = mapsswe(refs, a, b)
    assert got.num_segments == want["num_segments"] > 0
    assert got.statistic == pytest.approx(want["statistic"], abs=5e-4)  # sc_stats prints 3 decimals
    assert got.significant == want["significant"]


@needs_sctk
@pytest.mark.parametrize("seed", range(3))
def test_alignment_is_sclites(seed):
    refs, hyps = generate(seed, rates=(0.3,))
    sgml = run_sclite(refs, hyps, report="sgml")
    for m in re.finditer(r'<PATH id="\(spk-(.*?)\)"[^>]*>\n(.*?)</PATH>', sgml, re.S):
        body = m.group(2).strip()
        want = [t.split(",")[0] for t in body.split(":")] if body else []
        assert align(refs[m.group(1)].split(), hyps[m.group(1)].split()) == want


def test_segments_of_a_small_example():
    """sc_stats on the same files gives: 3 segments, Z = 2.000 (A: 3 errors, B: 1)."""
    refs = {"u1": "a b c d", "u2": "e f g"}
    a, b = {"u1": "a x c d e", "u2": "e g"}, {"u1": "a b c d", "u2": "e x g"}
    assert segments(align("a b c d".split(), "a x c d e".split()), align("a b c d".split(), "a b c d".split())) == [
        (1, 0),
        (1, 0),
    ]
    got = mapsswe(refs, a, b)
    assert (got.num_segments, round(got.statistic, 3), got.errors_a, got.errors_b) == (3, 2.0, 3, 1)
    assert got.significant and got.better == "b" and got.p_value < 0.05


def test_identical_systems_do_not_differ():
    refs, a = generate(0, rates=(0.2,))
    got = mapsswe(refs, a, dict(a))
    assert got.statistic == 0.0 and got.p_value == 1.0
    assert not got.significant and got.better is None


def test_clearly_better_system_wins_and_swapping_flips_the_sign():
    refs, good, bad = generate(1, rates=(0.05, 0.4), n=100)
    ab, ba = mapsswe(refs, good, bad), mapsswe(refs, bad, good)
    assert ab.significant and ab.better == "a" and ab.statistic < 0
    assert ba.better == "b" and ba.statistic == pytest.approx(-ab.statistic)
    assert ab.p_value == pytest.approx(ba.p_value)


def test_alpha_decides_the_verdict():
    refs, a, b = generate(3, rates=(0.15, 0.2), n=80)
    got = mapsswe(refs, a, b)
    assert mapsswe(refs, a, b, alpha=got.p_value * 1.01).significant
    assert not mapsswe(refs, a, b, alpha=got.p_value * 0.99).significant
    with pytest.raises(ValueError, match="alpha"):
        mapsswe(refs, a, b, alpha=1.5)
