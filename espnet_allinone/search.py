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
of everything scored is the result; :func:`run_search` decodes its points fully.

Candidates that compute with state training never set (step sizes of a bit-width never run through
a layer, BatchNorm statistics no batch updated: e.g. after ``num_random_subnets: 0``) are skipped and
logged, never scored with invented values; ``bin/recalibrate`` estimates missing statistics first if
they are wanted.
"""

import copy
import csv
import itertools
import math
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml
from typeguard import typechecked

from espnet_allinone.ctc_search import collapse_ctc
from espnet_allinone.elastic import NeverTrainedError
from espnet_allinone.fileio import atomic_path, write_text_atomic
from espnet_allinone.subnet import Subnet

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
    return encoder.subnet_space.get(Subnet(tuple(blocks)))


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

    def __init__(self, measured: Dict[Subnet, float]):
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


def _spread(items: List, n: int) -> List:
    """At most ``n`` of ``items`` (ordered), evenly spaced, the ends included."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else [items[0]]


def measure_latency(model, train_config: Dict, specs, threads: int, frames: int = 1000,
                    rounds: int = 7, log=print) -> Dict[str, float]:
    """{name: median seconds} of the exported encoder + CTC graph (int8, float for 32-bit) of each
    subnet: batch 1, ``frames`` frames; the sessions take turns round by round (after a pause: ORT's
    pool threads spin-wait ~0.1 s after a run), so that the machine's drift hits them alike. Timing does not
    depend on the weights' values: never-trained state is allowed, in a copy of the model."""
    import onnxruntime as ort

    from espnet_allinone.onnx_export import export_onnx

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    n_mels = int(model.frontend.output_size()) if model.frontend is not None else int(train_config["input_size"])
    feed = {"feats": np.random.default_rng(0).standard_normal((1, frames, n_mels)).astype(np.float32),
            "feats_lengths": np.array([frames], np.int64)}
    sessions, times = {}, {}
    model = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            paths = export_onnx(model, train_config, spec, Path(tmp) / str(len(sessions)), allow_untrained=True)
            sessions[spec.name] = ort.InferenceSession(str(paths.get("int8", paths["float"])), so,
                                                       providers=["CPUExecutionProvider"])
            sessions[spec.name].run(None, feed)
            times[spec.name] = []
    for _ in range(rounds):
        for name, session in sessions.items():
            time.sleep(0.15)
            session.run(None, feed)  # untimed: wakes the pool
            t0 = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - t0)
    out = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in out.items():
        log(f"[search] latency {name}: {1e3 * t:.1f} ms")
    return out


def encoder_flops(model, spec, frames: int = 1000) -> float:
    """FLOPs of the encoder forward of ``spec`` on ``frames`` frames (torch's FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    n_mels = int(model.frontend.output_size()) if model.frontend is not None else 80
    x, lengths = torch.randn(1, frames, n_mels), torch.tensor([frames])
    with torch.no_grad(), model.encoder.using_subnet(spec), FlopCounterMode(display=False) as counter:
        model.encoder(x, lengths)
    return float(counter.get_total_flops())


def plot(candidates: Sequence[Candidate], front: Sequence[Candidate], decoded: Sequence[Candidate], budget: Budgets,
         path: Path) -> None:
    """``pareto.png``: proxy WER against the cost axis of ``budget`` (every candidate, the front, the uniform
    grid named, the decoded points' full dev WER, the budget's limit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, label = {"size": (1e-6, "encoder size [MB] (packed, bit bound)"),
                    "ratio": (1.0, "compression ratio [x] (paper's counting)"),
                    "latency": (1e3, "encoder + CTC latency, 10 s [ms] (predicted)")}[budget.kind]

    def x(c):
        return c.ratio if budget.kind == "ratio" else budget.cost(c) * scale

    fig, ax = plt.subplots(figsize=(7, 4.5))
    others = [c for c in candidates if not c.uniform_grid]
    ax.scatter([x(c) for c in others], [c.proxy_wer for c in others], s=10, c="0.7", label="layer-wise (proxy)")
    ax.plot([x(c) for c in front], [c.proxy_wer for c in front], "-o", c="C0", ms=4, label="Pareto front (proxy)")
    grid = [c for c in candidates if c.uniform_grid]
    ax.scatter([x(c) for c in grid], [c.proxy_wer for c in grid], marker="s", s=40, c="C3", label="uniform grid")
    for c in grid:
        ax.annotate(c.name, (x(c), c.proxy_wer), fontsize=7, xytext=(3, 3), textcoords="offset points")
    done = [c for c in decoded if not np.isnan(c.dev_wer)]
    ax.scatter([x(c) for c in done], [c.dev_wer for c in done], marker="*", s=80, c="C2", label="decoded: full dev WER")
    limit = budget.value * scale if budget.kind != "ratio" else budget.value
    ax.axvline(limit, ls="--", c="k", lw=0.8, label=f"budget {budget}")
    ax.set_xlabel(label)
    ax.set_ylabel("WER [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

@dataclass(frozen=True)
class SearchResult:
    """What :func:`run_search` found and wrote.

    ``chosen``: the decoded candidate of lowest dev WER within the budget; ``decoded``: the points decoded
    on the whole dev set (the spread front, then the grid subnets within the budget); ``front``: the Pareto
    front within the budget; ``rows``: ``candidates.csv``'s rows (column -> text, as written, every scored
    subnet by cost); the paths written, ``exported`` those of ``export_dir`` (empty without it).
    """

    chosen: Candidate
    decoded: Tuple[Candidate, ...]
    front: Tuple[Candidate, ...]
    rows: Tuple[Dict[str, str], ...]
    candidates_csv: Path
    pareto_png: Path
    results_md: Path
    exported: Tuple[Path, ...] = ()


class NoSubnetWithinBudget(RuntimeError):
    """No scored subnet meets the budget."""


CSV_COLUMNS = ("subnet", "depth", "size_bytes", "ratio", "latency_ms", "proxy_wer", "dev_wer", "front",
               "uniform_grid", "within_budget")


def csv_rows(scored: Iterable[Candidate], front: Iterable[Candidate], budget: Budgets) -> List[Dict[str, str]]:
    """``candidates.csv``'s rows (:data:`CSV_COLUMNS` -> text) of ``scored``, by (cost, proxy WER)."""
    front_names = {c.name for c in front}
    return [dict(zip(CSV_COLUMNS, [
        c.name, str(c.spec.depth), f"{c.size_bytes:.0f}", f"{c.ratio:.3f}", f"{1e3 * c.latency_s:.2f}",
        f"{c.proxy_wer:.2f}", "" if np.isnan(c.dev_wer) else f"{c.dev_wer:.2f}", str(int(c.name in front_names)),
        str(int(c.uniform_grid)), str(int(budget.admits(c)))])) for c in sorted(scored, key=lambda c: (budget.cost(c),
                                                                                                      c.proxy_wer))]


def results_lines(title: str, method: str, decoded: Sequence[Candidate], chosen: Candidate, budget: Budgets,
                  latency: bool) -> List[str]:
    """``RESULTS.md``'s lines: ``title``, ``method``, the table of the decoded points (with predicted,
    measured and FLOP-model latency if ``latency``) and the chosen subnet."""
    lines = [title, "", method, "",
             "| subnet | size [bytes] | ratio | " + ("predicted / measured / FLOP-model latency [ms] | "
                                                   if latency else "") + "proxy WER | dev WER | |",
             "|---|---|---|" + ("---|" if latency else "") + "---|---|---|"]
    for c in sorted(decoded, key=budget.cost):
        lat = ""
        if latency:
            lat = (f" {1e3 * c.latency_s:.1f} / {1e3 * c.extra['measured_latency_s']:.1f} / "
                   f"{1e3 * c.extra['flop_model_s']:.1f} |")
        mark = "chosen" if c is chosen else ("grid" if c.uniform_grid else "front")
        lines.append(f"| {c.name} | {c.size_bytes:.0f} | {c.ratio:.2f}x |{lat} {c.proxy_wer:.2f} | {c.dev_wer:.2f} "
                     f"| {mark} |")
    if latency:
        err = [abs(c.latency_s / c.extra["measured_latency_s"] - 1) for c in decoded]
        ferr = [abs(c.extra["flop_model_s"] / c.extra["measured_latency_s"] - 1) for c in decoded]
        lines += ["", f"Latency model error on these points: mean {100 * np.mean(err):.1f} % (per-block table), "
                      f"{100 * np.mean(ferr):.1f} % (latency linear in FLOPs)."]
    return lines + ["", f"Chosen: `{chosen.name}` (lowest dev WER within the budget)."]


@typechecked
def run_search(
    asr_train_config: Union[str, Path], asr_model_file: Union[str, Path], data_dir: Union[str, Path],
    budget: Union[str, Sequence[Union[str, Budget]]], output_dir: Union[str, Path], proxy_utts: int = 100,
    population: int = 24, generations: int = 8, mutate: float = 0.3, depths: Optional[Sequence[int]] = None,
    final: int = 6, threads: int = 2, seed: int = 0, export_dir: Optional[Union[str, Path]] = None,
    formats: Sequence[str] = ("onnx",), log: Callable[[str], None] = print,
) -> SearchResult:
    """The whole layer-wise search of :mod:`espnet_allinone.bin.search` (its flags are the arguments):
    score by proxy (:func:`evolve` and the uniform grid), decode the front's points and the grid subnets
    within the budget on all of ``data_dir``, measure their latency for a latency budget, write
    ``candidates.csv``, ``pareto.png`` and ``RESULTS.md`` into ``output_dir``, export the chosen subnet into
    ``export_dir`` in ``formats`` (:func:`~espnet_allinone.export.export_subnets`). Sets torch's threads to
    ``threads``; progress goes to ``log``.

    Raises ValueError for a malformed budget, a depth beyond the encoder's, a dev set without references,
    or a subnet the export refuses; :class:`NoSubnetWithinBudget` when nothing scored meets the budget.
    """
    budget = [budget] if isinstance(budget, str) else budget
    limits = [b if isinstance(b, Budget) else Budget.parse(b) for b in budget]
    torch.set_num_threads(threads)
    from espnet2.text.build_tokenizer import build_tokenizer

    from espnet_allinone.data.audio import DataDirAudio, sample_rate
    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.export import load_allinone

    train_config = yaml.safe_load(Path(asr_train_config).read_text())
    model = load_allinone(asr_train_config, asr_model_file)
    encoder, space = model.encoder, model.encoder.subnet_space
    depths, choices = search_blocks(encoder, depths)
    bad = [d for d in depths if d > space.num_blocks]
    if bad:
        raise ValueError(f"--depths {bad}: the encoder has {space.num_blocks} blocks")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log(f"[search] space: depths {depths} x per block (width, bits) in {choices}; budget {Budgets(limits)}")

    reader = DataDirAudio(Path(data_dir), sample_rate(train_config.get("frontend_conf")))
    refs = read_text(Path(data_dir) / "text")
    keys = [k for k in sorted(reader.keys()) if k in refs]
    if not keys:
        raise ValueError(f"{data_dir}: no utterance with a reference in text")
    wavs = {k: reader[k].wav for k in keys}
    proxy_keys = keys[:: max(1, len(keys) // proxy_utts)][:proxy_utts]
    tokenizer = build_tokenizer(token_type=train_config.get("token_type", "char"),
                                bpemodel=train_config.get("bpemodel"))
    token_list = list(model.token_list)
    proxy = ProxyScorer(model, {k: wavs[k] for k in proxy_keys}, {k: refs[k] for k in proxy_keys}, token_list,
                        tokenizer)

    latency_model, measured = None, {}
    flops: Dict[str, float] = {}
    if any(b.kind == "latency" for b in limits):
        measured = measure_latency(model, train_config, list(space), threads, log=log)
        latency_model = LatencyModel({s: measured[s.name] for s in space})
        flops = {s.name: encoder_flops(model, s) for s in space}

    def make(blocks) -> Candidate:
        spec = canonical(encoder, blocks)
        c = Candidate(spec, encoder.subnet_size(spec).bits / 8, encoder.compression_ratio(spec),
                      uniform_grid=spec in space)
        if latency_model is not None:
            c.latency_s = latency_model(spec)
        return c

    bounds = Budgets(limits)
    t0 = time.perf_counter()
    scored = evolve(proxy, make, bounds, depths, choices, population=population, generations=generations,
                    mutate=mutate, seed=seed, seeds=[s.blocks for s in space], log=log)
    # the grid subnets are scored whatever the budget (they are the reference points)
    for s in space:
        if s.name not in scored:
            c = make(s.blocks)
            try:
                c.proxy_wer = proxy(c.spec)
            except NeverTrainedError as e:
                log(f"[search] skipped {c.name}: {e}")
                continue
            scored[c.name] = c
    within = [c for c in scored.values() if bounds.admits(c)]
    if not within:
        raise NoSubnetWithinBudget(f"no subnet fits the budget {bounds}")
    front = pareto_front(within, bounds.cost)
    log(f"[search] {len(scored)} subnets scored in {time.perf_counter() - t0:.0f} s; front of {len(front)} "
        f"within the budget")

    decoded = _spread(front, final) + [c for c in within if c.uniform_grid and c not in front]
    full = ProxyScorer(model, wavs, {k: refs[k] for k in keys}, token_list, tokenizer, batch_size=1)  # exact
    for c in decoded:
        c.dev_wer = full(c.spec)
        log(f"[search] decoded {c.name}: dev WER {c.dev_wer:.2f} % (proxy {c.proxy_wer:.2f} %)")
    if latency_model is not None:
        real = measure_latency(model, train_config, [c.spec for c in decoded], threads, log=log)
        slope, offset = flops_fit(flops, measured)
        for c in decoded:
            c.extra.update(measured_latency_s=real[c.name], flops=encoder_flops(model, c.spec))
            c.extra["flop_model_s"] = slope * c.extra["flops"] + offset
    chosen = min(decoded, key=lambda c: (c.dev_wer, bounds.cost(c)))

    rows = csv_rows(scored.values(), front, bounds)
    with atomic_path(out / "candidates.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    plot(list(scored.values()), front, decoded, bounds, out / "pareto.png")
    lines = results_lines(
        f"# Layer-wise search: {asr_model_file}, budget {bounds}",
        f"Dev set {data_dir} ({len(keys)} utterances; proxy: {len(proxy_keys)}), {len(scored)} subnets "
        f"scored, method: evolution (population {population}, {generations} generations, "
        f"mutation {mutate}, seed {seed}); greedy CTC.", decoded, chosen, bounds, latency_model is not None)
    write_text_atomic(out / "RESULTS.md", "\n".join(lines) + "\n")
    log("\n".join(lines[4:]))
    log(f"[search] chosen: {chosen.name}")
    exported: List[Path] = []
    if export_dir:
        from espnet_allinone.export import export_subnets

        exported = export_subnets(asr_train_config, asr_model_file, [chosen.name], export_dir, formats=tuple(formats),
                                  log=log)
    return SearchResult(chosen, tuple(decoded), tuple(front), tuple(rows), out / "candidates.csv",
                        out / "pareto.png", out / "RESULTS.md", tuple(exported))
