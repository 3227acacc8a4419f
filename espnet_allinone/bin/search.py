#!/usr/bin/env python3
"""Find the best layer-wise subnets of a trained all-in-one model within a budget.

    python -m espnet_allinone.bin.search --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/valid.acc_mean.ave.pth --data_dir data/dev \\
        --budget size=1.5MB --output_dir exp/asr/search_1.5MB [--export_dir exp/asr/export]

``--budget``: ``size=1.5MB`` (the encoder's packed size, bit bound), ``ratio=10x`` (compression
against the float largest encoder, the paper's counting) or ``latency=20ms`` (encoder + CTC of 10 s
of audio, batch 1, ``--threads`` threads, on the exported int8 ONNX graph); several must all hold,
the first is the cost axis. The method (:mod:`espnet_allinone.search`): evolutionary search over
depth x per-block (FFN width, bits), scored by greedy-CTC WER on ``--proxy_utts`` dev utterances;
the uniform grid subnets are scored too. The Pareto front's points (at most ``--final``) and the
grid subnets within the budget are then decoded on the whole ``--data_dir`` (greedy CTC, one utterance
at a time: the hypotheses of ``Speech2Text(..., ctc_greedy=True)``), and for
a latency budget measured on their exported graphs (predicted vs measured, and what a FLOP-linear
model would have said). Writes into ``--output_dir``:

- ``candidates.csv``: every scored subnet (name, depth, size, ratio, latency, proxy WER, dev WER,
  on the front, uniform grid);
- ``pareto.png``: proxy WER against cost, the front, the decoded points, the grid subnets marked;
- ``RESULTS.md``: the decoded points and the chosen subnet (lowest dev WER within the budget).

Subnets that compute with never-trained state (step sizes or BatchNorm statistics no training step set)
are skipped with a line naming what was never trained; ``espnet_allinone.bin.recalibrate`` estimates
missing BatchNorm statistics if they should be searched.

Prints the chosen subnet's name; ``--export_dir`` exports it (``--formats``, as
``espnet_allinone.bin.export``).
"""

import argparse
import copy
import csv
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import yaml

from espnet_allinone.fileio import atomic_path, write_text_atomic


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_dir", required=True, help="dev set (Kaldi-style dir with wav.scp and text)")
    p.add_argument("--budget", nargs="+", required=True, help="size=1.5MB | ratio=10x | latency=20ms")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--proxy_utts", type=int, default=100, help="dev utterances of the proxy (evenly spread)")
    p.add_argument("--population", type=int, default=24)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--mutate", type=float, default=0.3, help="per-block mutation probability")
    p.add_argument("--depths", type=int, nargs="+", default=None, help="default: the subnet space's depths")
    p.add_argument("--final", type=int, default=6, help="front points decoded on the whole dev set")
    p.add_argument("--threads", type=int, default=2, help="threads of the latency measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export_dir", default=None, help="export the chosen subnet here")
    p.add_argument("--formats", nargs="+", default=["onnx"], choices=["stock", "packed", "onnx"])
    return p


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


def plot(candidates, front, decoded, budget, path: Path):
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    import torch

    from espnet_allinone.elastic import NeverTrainedError
    from espnet_allinone.search import (
        Budget,
        Budgets,
        Candidate,
        LatencyModel,
        ProxyScorer,
        canonical,
        evolve,
        flops_fit,
        pareto_front,
        search_blocks,
    )

    try:
        budgets = [Budget.parse(b) for b in args.budget]
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads)
    from espnet2.text.build_tokenizer import build_tokenizer

    from espnet_allinone.data.audio import DataDirAudio, sample_rate
    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.export import load_allinone

    train_config = yaml.safe_load(Path(args.asr_train_config).read_text())
    model = load_allinone(args.asr_train_config, args.asr_model_file)
    encoder, space = model.encoder, model.encoder.subnet_space
    depths, choices = search_blocks(encoder, args.depths)
    bad = [d for d in depths if d > space.num_blocks]
    if bad:
        parser.error(f"--depths {bad}: the encoder has {space.num_blocks} blocks")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[search] space: depths {depths} x per block (width, bits) in {choices}; budget "
          f"{Budgets(budgets)}", flush=True)

    fs = sample_rate(train_config.get("frontend_conf"))
    reader = DataDirAudio(Path(args.data_dir), fs)
    refs = read_text(Path(args.data_dir) / "text")
    keys = [k for k in sorted(reader.keys()) if k in refs]
    if not keys:
        parser.error(f"{args.data_dir}: no utterance with a reference in text")
    wavs = {k: reader[k].wav for k in keys}
    proxy_keys = keys[:: max(1, len(keys) // args.proxy_utts)][: args.proxy_utts]
    tokenizer = build_tokenizer(token_type=train_config.get("token_type", "char"),
                                bpemodel=train_config.get("bpemodel"))
    token_list = list(model.token_list)
    proxy = ProxyScorer(model, {k: wavs[k] for k in proxy_keys}, {k: refs[k] for k in proxy_keys}, token_list,
                        tokenizer)

    latency_model, measured = None, {}
    flops: Dict[str, float] = {}
    if any(b.kind == "latency" for b in budgets):
        measured = measure_latency(model, train_config, list(space), args.threads)
        latency_model = LatencyModel({s: measured[s.name] for s in space})
        flops = {s.name: encoder_flops(model, s) for s in space}

    def make(blocks) -> Candidate:
        spec = canonical(encoder, blocks)
        c = Candidate(spec, encoder.subnet_size(spec).bits / 8, encoder.compression_ratio(spec),
                      uniform_grid=spec in space)
        if latency_model is not None:
            c.latency_s = latency_model(spec)
        return c

    budget = Budgets(budgets)
    t0 = time.perf_counter()
    scored = evolve(proxy, make, budget, depths, choices, population=args.population, generations=args.generations,
                    mutate=args.mutate, seed=args.seed, seeds=[s.blocks for s in space],
                    log=lambda m: print(m, flush=True))
    # the grid subnets are scored whatever the budget (they are the reference points)
    for s in space:
        if s.name not in scored:
            c = make(s.blocks)
            try:
                c.proxy_wer = proxy(c.spec)
            except NeverTrainedError as e:
                print(f"[search] skipped {c.name}: {e}", flush=True)
                continue
            scored[c.name] = c
    within = [c for c in scored.values() if budget.admits(c)]
    if not within:
        print(f"[search] no subnet fits the budget {budget}", file=sys.stderr)
        return 1
    front = pareto_front(within, budget.cost)
    print(f"[search] {len(scored)} subnets scored in {time.perf_counter() - t0:.0f} s; front of {len(front)} "
          f"within the budget", flush=True)

    final = _spread(front, args.final) + [c for c in within if c.uniform_grid and c not in front]
    full = ProxyScorer(model, wavs, {k: refs[k] for k in keys}, token_list, tokenizer, batch_size=1)  # exact
    for c in final:
        c.dev_wer = full(c.spec)
        print(f"[search] decoded {c.name}: dev WER {c.dev_wer:.2f} % (proxy {c.proxy_wer:.2f} %)", flush=True)
    if latency_model is not None:
        real = measure_latency(model, train_config, [c.spec for c in final], args.threads)
        slope, offset = flops_fit(flops, measured)
        for c in final:
            c.extra.update(measured_latency_s=real[c.name], flops=encoder_flops(model, c.spec))
            c.extra["flop_model_s"] = slope * c.extra["flops"] + offset
    chosen = min(final, key=lambda c: (c.dev_wer, budget.cost(c)))

    front_names = {c.name for c in front}
    with atomic_path(out / "candidates.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subnet", "depth", "size_bytes", "ratio", "latency_ms", "proxy_wer", "dev_wer", "front",
                    "uniform_grid", "within_budget"])
        for c in sorted(scored.values(), key=lambda c: (budget.cost(c), c.proxy_wer)):
            w.writerow([c.name, c.spec.depth, f"{c.size_bytes:.0f}", f"{c.ratio:.3f}", f"{1e3 * c.latency_s:.2f}",
                        f"{c.proxy_wer:.2f}", "" if np.isnan(c.dev_wer) else f"{c.dev_wer:.2f}",
                        int(c.name in front_names), int(c.uniform_grid), int(budget.admits(c))])
    plot(list(scored.values()), front, final, budget, out / "pareto.png")
    lines = [f"# Layer-wise search: {args.asr_model_file}, budget {budget}", "",
             f"Dev set {args.data_dir} ({len(keys)} utterances; proxy: {len(proxy_keys)}), {len(scored)} subnets "
             f"scored, method: evolution (population {args.population}, {args.generations} generations, "
             f"mutation {args.mutate}, seed {args.seed}); greedy CTC.", "",
             "| subnet | size [bytes] | ratio | " + ("predicted / measured / FLOP-model latency [ms] | "
                                                   if latency_model else "") + "proxy WER | dev WER | |",
             "|---|---|---|" + ("---|" if latency_model else "") + "---|---|---|"]
    for c in sorted(final, key=budget.cost):
        lat = ""
        if latency_model:
            lat = (f" {1e3 * c.latency_s:.1f} / {1e3 * c.extra['measured_latency_s']:.1f} / "
                   f"{1e3 * c.extra['flop_model_s']:.1f} |")
        mark = "chosen" if c is chosen else ("grid" if c.uniform_grid else "front")
        lines.append(f"| {c.name} | {c.size_bytes:.0f} | {c.ratio:.2f}x |{lat} {c.proxy_wer:.2f} | {c.dev_wer:.2f} "
                     f"| {mark} |")
    if latency_model:
        err = [abs(c.latency_s / c.extra["measured_latency_s"] - 1) for c in final]
        ferr = [abs(c.extra["flop_model_s"] / c.extra["measured_latency_s"] - 1) for c in final]
        lines += ["", f"Latency model error on these points: mean {100 * np.mean(err):.1f} % (per-block table), "
                      f"{100 * np.mean(ferr):.1f} % (latency linear in FLOPs)."]
    lines += ["", f"Chosen: `{chosen.name}` (lowest dev WER within the budget)."]
    write_text_atomic(out / "RESULTS.md", "\n".join(lines) + "\n")
    print("\n".join(lines[4:]), flush=True)
    print(f"[search] chosen: {chosen.name}", flush=True)
    if args.export_dir:
        from espnet_allinone.bin import export

        export.main(["--asr_train_config", args.asr_train_config, "--asr_model_file", args.asr_model_file,
                     "--subnet", chosen.name, "--out_dir", args.export_dir, "--formats", *args.formats])
    return 0


if __name__ == "__main__":
    sys.exit(main())
