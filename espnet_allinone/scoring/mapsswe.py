"""Matched pairs sentence-segment word error test (MAPSSWE; Gillick & Cox, 1989).

The test of NIST ``sc_stats -t mapsswe``, which the paper uses for its significance
marks (alpha = 0.05). Both systems are aligned to the reference; the utterances are
cut into segments bounded by ``min_good`` (2) consecutive reference words that both
systems got right; per segment the difference of the two systems' error counts is
taken, and ``Z = mean / (std / sqrt(n))`` over the ``n`` segments with an error is
tested two-sided against the normal distribution. The segmentation is a port of
SCTK's ``mtchprs.c`` (``test_comp_sents``), quirks included, and the alignment uses
sclite's weights (substitution 4, insertion and deletion 3).
"""

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Dict, List, Optional, Sequence, Tuple

CORRECT, SUB, DEL, INS = "C", "S", "D", "I"
MIN_GOOD = 2


@dataclass(frozen=True)
class MapssweResult:
    """statistic: Z (positive when system ``a`` makes more errors); p_value: two-sided;
    significant: ``p_value < alpha``; better: ``"a"``/``"b"`` if significant, else None;
    num_segments: segments with an error; errors_a/errors_b: errors within them."""

    statistic: float
    p_value: float
    significant: bool
    better: Optional[str]
    num_segments: int
    errors_a: int
    errors_b: int
    alpha: float


def align(ref: Sequence[str], hyp: Sequence[str]) -> List[str]:
    """Minimum-cost alignment of word lists with sclite's weights.

    Returns:
        the operations in reference order: ``C`` (correct), ``S``, ``D`` (a reference
        word missing from ``hyp``), ``I`` (a ``hyp`` word not in ``ref``).
    """
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = 3 * i
    for j in range(1, m + 1):
        cost[0][j] = 3 * j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = cost[i - 1][j - 1] + (0 if ref[i - 1] == hyp[j - 1] else 4)
            cost[i][j] = min(diag, cost[i - 1][j] + 3, cost[i][j - 1] + 3)
    ops = []
    i, j = n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (0 if ref[i - 1] == hyp[j - 1] else 4):
            ops.append(CORRECT if ref[i - 1] == hyp[j - 1] else SUB)
            i, j = i - 1, j - 1
        elif j and cost[i][j] == cost[i][j - 1] + 3:
            ops.append(INS)
            j -= 1
        else:
            ops.append(DEL)
            i -= 1
    return ops[::-1]


@functools.lru_cache(maxsize=1 << 17)
def _align(ref: Tuple[str, ...], hyp: Tuple[str, ...]) -> List[str]:
    """:func:`align`, cached: a report compares each system with several others."""
    return align(ref, hyp)


def segments(
    path_a: Sequence[str], path_b: Sequence[str], min_good: int = MIN_GOOD
) -> List[Tuple[int, int]]:
    """(errors of a, errors of b) per segment of one utterance (segments without
    errors dropped), as ``sc_stats`` cuts it: a segment ends once both systems got
    ``min_good`` consecutive reference words right."""
    out = []
    n1, n2 = len(path_a), len(path_b)

    def count(b1, b2, e1, e2):
        e_a = sum(op != CORRECT for op in path_a[max(b1, 0): e1 + 1])
        e_b = sum(op != CORRECT for op in path_b[max(b2, 0): e2 + 1])
        if e_a or e_b:
            out.append((e_a, e_b))

    i1 = i2 = eog1 = eog2 = good = 0
    state = "b"  # b: no error yet; e: in an error region; g: counting good words
    while i1 < n1:
        while i1 < n1 and path_a[i1] == INS:
            i1, state = i1 + 1, "e"
        while i2 < n2 and path_b[i2] == INS:
            i2, state = i2 + 1, "e"
        both = i1 < n1 and path_a[i1] == CORRECT and i2 < n2 and path_b[i2] == CORRECT
        if state == "b":
            if both:
                eog1, eog2 = i1, i2
            else:
                state = "e"
        elif both:
            good = 1 if state == "e" else good + 1
            state = "g"
            if good == min_good:
                count(eog1 - (min_good - 1), eog2 - (min_good - 1), i1, i2)
                eog1, eog2, state = i1, i2, "b"
        else:
            state = "e"
        i1 += i1 < n1
        i2 += i2 < n2
    if state != "b" or i2 < n2:  # an open segment, or trailing insertions of b
        count(eog1 - (min_good - 1), eog2 - (min_good - 1), n1 - 1, n2 - 1)
    return out


def z_statistic(diffs: Sequence[int]) -> float:
    """``mean / (std / sqrt(n))`` with the n-1 variance; 0 when the variance is 0
    (as sc_stats)."""
    n = len(diffs)
    if n == 0:
        return 0.0
    mean = sum(diffs) / n
    ss = sum((d - mean) ** 2 for d in diffs)
    if ss == 0.0:
        return 0.0
    return mean / (math.sqrt(ss / (n - 1)) / math.sqrt(n))


def matched_segments(
    refs: Dict[str, str], hyps_a: Dict[str, str], hyps_b: Dict[str, str]
) -> List[Tuple[int, int]]:
    """(errors of a, errors of b) of every segment over the utterances of ``refs``
    (a missing hypothesis is empty). Segments of several test sets can be pooled."""
    out = []
    for key in sorted(refs):
        ref = tuple(refs[key].split())
        out += segments(
            _align(ref, tuple(hyps_a.get(key, "").split())),
            _align(ref, tuple(hyps_b.get(key, "").split())),
        )
    return out


def mapsswe_from_segments(segs: Sequence[Tuple[int, int]], alpha: float = 0.05) -> MapssweResult:
    """The two-sided test on the segments of :func:`matched_segments`."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1): {alpha}")
    z = z_statistic([a - b for a, b in segs])
    p = 2.0 * (1.0 - NormalDist().cdf(abs(z)))
    significant = p < alpha
    return MapssweResult(
        statistic=z,
        p_value=p,
        significant=significant,
        better=("b" if z > 0 else "a") if significant else None,
        num_segments=len(segs),
        errors_a=sum(a for a, _ in segs),
        errors_b=sum(b for _, b in segs),
        alpha=alpha,
    )


def mapsswe(
    refs: Dict[str, str],
    hyps_a: Dict[str, str],
    hyps_b: Dict[str, str],
    alpha: float = 0.05,
) -> MapssweResult:
    """MAPSSWE of systems ``a`` and ``b`` over the utterances of ``refs``.

    Args:
        refs, hyps_a, hyps_b: ``{utt_id: words}``; a missing hypothesis is empty.
        alpha: significance level of the two-sided test.
    """
    return mapsswe_from_segments(matched_segments(refs, hyps_a, hyps_b), alpha)
