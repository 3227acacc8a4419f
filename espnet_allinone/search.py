"""Budgeted search over layer-wise subnets of a trained all-in-one model.

The space: every depth of ``depths`` (default: the subnet space's), each block at one of the
(FFN width, bits) pairs the model has BatchNorm statistics and step sizes for (the space's
widths x bits). A candidate's cost is its encoder's packed size (``size``: bytes of the bit
bound, :meth:`subnet_size`), its compression ratio (``ratio``: the paper's counting) or its
latency (``latency``: :class:`LatencyModel`, fitted on the exported ONNX graphs of the uniform
subnets); its accuracy proxy is the greedy-CTC WER on a subset of the dev set (:class:`ProxyScorer`:
features computed once, the encoder batched, a step's candidates sharing prefixes).

The method (:func:`evolve`) is an evolutionary multi-objective search in the manner of
Once-for-All / HAT: a random population within the budget, then generations of children by
mutation (each block's (width, bits) redrawn with probability ``mutate``, the depth by one) and
crossover (blockwise) of parents drawn from the current Pareto front of (cost, proxy WER) and the
best by proxy; candidates over the budget are rejected before they are scored. The Pareto front
of everything scored is the result; :mod:`espnet_allinone.bin.search` decodes its points fully.

Candidates that compute with state training never set (step sizes of a bit-width never run through
a layer, BatchNorm statistics no batch updated: e.g. after ``num_random_subnets: 0``) are skipped and
logged, never scored with invented values; ``bin/recalibrate`` estimates missing statistics first if
they are wanted.
"""

import itertools
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_allinone.ctc_search import collapse_ctc
from espnet_allinone.elastic import NeverTrainedError
from espnet_allinone.subnet import LayerwiseSpec, Subnet, SubnetSpec

_BUDGET_RE = re.compile(r"^\s*(size|ratio|latency)\s*=\s*([0-9.]+)\s*(B|kB|KB|MB|x|ms|s)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "x": 1, "ms": 1e-3, "s": 1, None: 1}


@dataclass(frozen=True)
class Budget:
    """``size`` <= ``value`` bytes, ``ratio`` >= ``value`` (x), or ``latency`` <= ``value`` seconds."""

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``size=1.5MB`` (B, kB, MB), ``ratio=10x``, ``latency=20ms`` (ms, s)."""
        m = _BUDGET_RE.match(text)
        if m is None:
            raise ValueError(f"malformed budget {text!r}: use size=1.5MB, ratio=10x or latency=20ms")
        kind, unit = m.group(1).lower(), (m.group(3) or "").lower() or None
        allowed = {"size": ("b", "kb", "mb", None), "ratio": ("x", None), "latency": ("ms", "s")}[kind]
        if unit not in allowed:
            raise ValueError(f"budget {text!r}: {kind} takes {'/'.join(u or '(none)' for u in allowed)}")
        return cls(kind, float(m.group(2)) * _UNITS[unit])

    def cost(self, candidate: "Candidate") -> float:
        """The quantity the budget bounds, oriented so that lower is better (ratio: its inverse)."""
        return {"size": candidate.size_bytes, "ratio": 1.0 / candidate.ratio,
                "latency": candidate.latency_s}[self.kind]

    def admits(self, candidate: "Candidate") -> bool:
        if self.kind == "ratio":
            return candidate.ratio >= self.value
        return self.cost(candidate) <= self.value

    def __str__(self) -> str:
        unit = {"size": f"{self.value / 1e6:g}MB", "ratio": f"{self.value:g}x", "latency": f"{self.value * 1e3:g}ms"}
        return f"{self.kind}={unit[self.kind]}"


class Budgets:
    """Several budgets that must all hold; the first is the cost axis (``cost``, ``kind``)."""

    def __init__(self, budgets: Sequence[Budget]):
        if not budgets:
            raise ValueError("give at least one budget")
        self.budgets = list(budgets)
        self.kind, self.value = budgets[0].kind, budgets[0].value

    def cost(self, candidate: "Candidate") -> float:
        return self.budgets[0].cost(candidate)

    def admits(self, candidate: "Candidate") -> bool:
        return all(b.admits(candidate) for b in self.budgets)

    def __str__(self) -> str:
        return ", ".join(map(str, self.budgets))


@dataclass
class Candidate:
    """A scored subnet: its costs and its proxy (and, once decoded, full dev) WER."""

    spec: Subnet
    size_bytes: float
    ratio: float
    latency_s: float = float("nan")
    proxy_wer: float = float("nan")
    dev_wer: float = float("nan")
    uniform_grid: bool = False
    extra: Dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


def search_blocks(encoder, depths: Optional[Sequence[int]] = None) -> Tuple[List[int], List[Tuple[int, int]]]:
    """(depths, per-block (width, bits) choices) of the layer-wise space of ``encoder``."""
    space = encoder.subnet_space
    depths = sorted(set(depths or [s.depth for s in space]))
    choices = sorted({(s.width, s.bits) for s in space})
    return depths, choices


def canonical(encoder, blocks: Sequence[Tuple[int, int]]) -> Subnet:
    """The spec of ``blocks`` as the space names it (alike blocks in the space: the uniform name)."""
    return encoder.subnet_space.get(LayerwiseSpec(tuple(blocks)))


def pareto_front(points: Iterable[Candidate], cost: Callable[[Candidate], float]) -> List[Candidate]:
    """The candidates no other one beats on (cost, proxy WER) with at least one strictly; cost order."""
    ordered = sorted(points, key=lambda c: (cost(c), c.proxy_wer))
    front, best = [], math.inf
    for c in ordered:
        if c.proxy_wer < best:
            front.append(c)
            best = c.proxy_wer
    return front


def feature_batches(model, wavs: Sequence[Tuple[str, np.ndarray]], batch_size: int):
    """[(keys, (B, T, D) features, (B,) lengths)] of ``model``'s frontend + normalisation, ``batch_size``
    utterances of ``wavs`` (in the given order) per batch."""
    batches = []
    with torch.no_grad():
        for i in range(0, len(wavs), batch_size):
            chunk = wavs[i: i + batch_size]
            lengths = torch.tensor([len(w) for _, w in chunk])
            speech = torch.zeros(len(chunk), int(lengths.max()))
            for j, (_, w) in enumerate(chunk):
                speech[j, : len(w)] = torch.from_numpy(np.asarray(w, np.float32))
            feats, feats_lengths = speech, lengths
            if model.frontend is not None:
                feats, feats_lengths = model.frontend(speech, lengths)
            if model.normalize is not None:
                feats, feats_lengths = model.normalize(feats, feats_lengths)
            batches.append(([k for k, _ in chunk], feats, feats_lengths))
    return batches


class ProxyScorer:
    """Greedy-CTC WER of subnets on a fixed set of utterances: features computed once (frontend +
    normalisation), the encoder forwarded in length-sorted batches of ``batch_size``.

    With ``batch_size`` 1 the hypotheses are those of greedy-CTC ``Speech2Text`` of the subnet; in a
    batch they can differ a little (ESPnet's Conformer convolution module does not mask padded frames,
    so they reach the last valid ones): good enough for a proxy, not for the final decodes.
    """

    def __init__(self, model, wavs: Dict[str, np.ndarray], refs: Dict[str, str], token_list: List[str],
                 tokenizer, batch_size: int = 16):
        from espnet_allinone.scoring.wer import score

        self.model, self.refs, self.token_list, self.tokenizer, self._score = model, refs, token_list, tokenizer, score
        self.keys = sorted(wavs, key=lambda k: len(wavs[k]))
        self.batches = feature_batches(model, [(k, wavs[k]) for k in self.keys], batch_size)
        self.blank_id, self.specials = model.blank_id, (model.sos, model.eos)

    def hypotheses(self, spec: Subnet) -> Dict[str, str]:
        encoder, hyps = self.model.encoder, {}
        with torch.no_grad(), encoder.using_subnet(spec):
            for keys, feats, feats_lengths in self.batches:
                enc, enc_lengths, _ = encoder(feats, feats_lengths)
                best = self.model.ctc.argmax(enc)
                for j, k in enumerate(keys):
                    ids = collapse_ctc(best[j, : enc_lengths[j]].tolist(), self.blank_id, self.specials)
                    hyps[k] = self.tokenizer.tokens2text([self.token_list[t] for t in ids])
        return hyps

    def __call__(self, spec: Subnet) -> float:
        """WER of ``spec``; :class:`NeverTrainedError` for a subnet that computes with never-trained state."""
        self.model.encoder.check_trained(spec)
        return self._score(self.refs, self.hypotheses(spec)).wer


class LatencyModel:
    """Encoder latency of a subnet from per-part costs measured on exported graphs.

    ``latency = front(bits of the subsampling) + sum over blocks of block(width, bits)``, fitted by
    least squares to the measured latencies of the uniform subnets (each ``front(b) + depth x
    block(w, b)``); :meth:`flops_fit` is the alternative "latency proportional to FLOPs" model.
    """

    def __init__(self, measured: Dict[SubnetSpec, float]):
        self.measured = dict(measured)
        fronts = sorted({s.bits for s in measured})
        blocks = sorted({(s.width, s.bits) for s in measured})
        self.columns = [("front", b) for b in fronts] + [("block", wb) for wb in blocks]
        a = np.array([self._row(s.front_bits, s.blocks) for s in measured])
        y = np.array(list(measured.values()))
        self.coef, *_ = np.linalg.lstsq(a, y, rcond=None)

    def _row(self, front_bits: int, blocks) -> List[float]:
        row = [0.0] * len(self.columns)
        index = {c: i for i, c in enumerate(self.columns)}
        if ("front", front_bits) not in index:
            raise ValueError(f"no latency measured for a {front_bits}-bit subsampling")
        row[index[("front", front_bits)]] = 1.0
        for wb in blocks:
            if ("block", tuple(wb)) not in index:
                raise ValueError(f"no latency measured for blocks of width {wb[0]} at {wb[1]} bits")
            row[index[("block", tuple(wb))]] += 1.0
        return row

    def __call__(self, spec: Subnet) -> float:
        return float(np.dot(self._row(spec.front_bits, spec.blocks), self.coef))


def flops_fit(flops: Dict[str, float], latency: Dict[str, float]) -> Tuple[float, float]:
    """(seconds per FLOP, offset) of the least-squares line latency ~ FLOPs over the common names."""
    names = sorted(set(flops) & set(latency))
    a = np.array([[flops[n], 1.0] for n in names])
    (slope, offset), *_ = np.linalg.lstsq(a, np.array([latency[n] for n in names]), rcond=None)
    return float(slope), float(offset)


def evolve(
    score: Callable[[Subnet], float], make: Callable[[Tuple[Tuple[int, int], ...]], Candidate], budget: Budget,
    depths: Sequence[int], choices: Sequence[Tuple[int, int]], population: int = 24, generations: int = 8,
    mutate: float = 0.3, seed: int = 0, seeds: Sequence[Tuple[Tuple[int, int], ...]] = (),
    log: Callable[[str], None] = print, max_tries: int = 200,
) -> Dict[str, Candidate]:
    """Evolutionary search (module docstring). ``make(blocks)`` builds an unscored candidate (costs
    only); ``score(spec)`` is the proxy WER; ``seeds``: block tuples scored first (e.g. the uniform
    grid). A candidate that computes with never-trained state (``score`` raises
    :class:`NeverTrainedError`) is skipped, and logged once. Returns every scored candidate by name."""
    rng = random.Random(seed)
    scored: Dict[str, Candidate] = {}
    never_trained = set()
    cost = budget.cost

    def add(blocks) -> Optional[Candidate]:
        c = make(tuple(blocks))
        if c.name in scored or c.name in never_trained or not budget.admits(c):
            return scored.get(c.name)
        try:
            c.proxy_wer = score(c.spec)
        except NeverTrainedError as e:
            never_trained.add(c.name)
            log(f"[search] skipped {c.name}: {e}")
            return None
        scored[c.name] = c
        return c

    def random_blocks():
        return [rng.choice(choices) for _ in range(rng.choice(depths))]

    for blocks in seeds:
        add(blocks)
    tries = 0
    while sum(1 for c in scored.values() if not c.uniform_grid) < population and tries < max_tries * population:
        tries += 1
        add(random_blocks())
    if not scored:
        log(f"[search] no candidate within the budget {budget} in {tries} draws")
        return scored
    for g in range(generations):
        t0 = time.perf_counter()
        front = pareto_front(scored.values(), cost)
        elite = sorted(scored.values(), key=lambda c: c.proxy_wer)[: max(2, population // 4)]
        parents = [c.spec.blocks for c in front + elite]
        new = 0
        for _ in range(max_tries * population):
            if new >= population:
                break
            if rng.random() < 0.5 and len(parents) > 1:  # crossover, then mutation
                a, b = rng.sample(parents, 2)
                blocks = [rng.choice(pair) for pair in itertools.zip_longest(a, b) if None not in pair]
                blocks += list((a if len(a) > len(b) else b)[len(blocks):]) if rng.random() < 0.5 else []
            else:
                blocks = list(rng.choice(parents))
            blocks = [rng.choice(choices) if rng.random() < mutate else wb for wb in blocks]
            if rng.random() < mutate:
                depth = min(max(len(blocks) + rng.choice((-1, 1)), min(depths)), max(depths))
                blocks = (blocks + [rng.choice(choices) for _ in range(depth)])[:depth]
            if len(blocks) not in depths:
                continue
            before = len(scored)
            add(blocks)
            new += len(scored) > before
        front = pareto_front(scored.values(), cost)
        log(f"[search] generation {g + 1}/{generations}: {new} new, {len(scored)} scored, front of {len(front)}, "
            f"best proxy WER {min(c.proxy_wer for c in scored.values()):.2f} % ({time.perf_counter() - t0:.0f} s)")
    return scored
