#!/usr/bin/env python3
"""Mixed precision and DDP on a GPU, in one short run (< 8 minutes on one H100 at the paper size).

    python benchmarks/gpu_check.py                       # CUDA: fp16 autocast + GradScaler, NCCL
    python benchmarks/gpu_check.py --device cpu --size tiny --steps 2   # its CPU path (bf16, gloo)

Three checks, each printed as a line of a markdown table (paste into docs/results.md):

1. AMP steps of the all-in-one model, as ESPnet's ``use_amp: true`` runs them (espnet2/train/trainer.py:
   autocast around the forward, ``GradScaler`` scaling the loss, unscale, gradient clipping at 5,
   ``scaler.step``, ``scaler.update``); on CPU bf16 autocast without a scaler. Reported: losses finite,
   steps the scaler skipped, step-size gradients finite, and that the codes the autocast forward
   multiplies with are the codes the export stores.
2. Time and peak memory of a sandwich step (largest + smallest + 1 random subnet) against a stock
   ESPnet Conformer step of the largest size, both under autocast, interleaved, medians (CUDA memory:
   ``torch.cuda.max_memory_allocated`` per step).
3. DDP: the model wrapped in ``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU; one rank, as one
   GPU allows) with ``find_unused_parameters`` (ESPnet's ``unused_parameters: true``: a step leaves
   the other subnets' step sizes unused); a few AMP steps.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_ratio import SIZES, build  # noqa: E402

from espnet_allinone.elastic import ElasticWeight  # noqa: E402

VOCAB = 50


def batch(size: str, device: str, n_utts: int, seconds: float):
    n = int(seconds * 16000)
    g = torch.Generator().manual_seed(0)
    speech = (torch.randn(n_utts, n, generator=g) * 0.1).to(device)
    lengths = torch.full((n_utts,), n, device=device)
    text = torch.randint(1, VOCAB - 1, (n_utts, int(seconds * 12)), generator=g).to(device)
    return speech, lengths, text, torch.full((n_utts,), text.size(1), device=device)


class AmpStep:
    """One optimiser step as ESPnet's trainer takes it with ``use_amp`` (CUDA fp16 + GradScaler) or,
    on CPU, under bf16 autocast."""

    def __init__(self, model, device: str):
        self.model, self.device = model, device
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.cuda = device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda") if self.cuda else None
        self.skipped = 0
        self.step_grads_finite = True  # every step size's gradient (unscaled) in every step

    def __call__(self, data) -> float:
        dtype = torch.float16 if self.cuda else torch.bfloat16
        with torch.autocast("cuda" if self.cuda else "cpu", dtype=dtype):
            loss, _, _ = self.model(data[0], data[1], data[2].clone(), data[3])
        loss = loss.sum()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            self._check_step_grads()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            before = self.scaler.get_scale()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.skipped += int(self.scaler.get_scale() < before or not torch.isfinite(norm))
        else:
            loss.backward()
            self._check_step_grads()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _check_step_grads(self):
        grads = [p.grad for n, p in self.model.named_parameters() if "weight_log_step" in n and p.grad is not None]
        self.step_grads_finite &= bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)


def check_amp(args, data) -> str:
    torch.manual_seed(0)
    model = build("allinone", args.size, VOCAB, subnet_sampling="sandwich").to(args.device).train()
    step = AmpStep(model, args.device)
    losses = [step(data) for _ in range(args.steps)]
    model.eval()
    mismatched, checked = 0, 0
    smallest = model.encoder.subnet_space.smallest
    with torch.no_grad(), model.encoder.using_subnet(smallest), \
            torch.autocast("cuda" if step.cuda else "cpu", dtype=torch.float16 if step.cuda else torch.bfloat16):
        for m in (m for unit in model.encoder.subnet_modules(smallest) for m in unit.modules()):
            if isinstance(m, ElasticWeight) and m.active_bits != 32:
                codes, _ = m.active_grid()
                exported = m.integer_weight().codes
                mismatched += int(not torch.equal((codes * 2 ** (m.active_bits - 1)).to(torch.int8), exported))
                checked += 1
    finite = all(torch.isfinite(torch.tensor(losses)))
    return (f"| AMP steps ({'fp16 + GradScaler' if step.cuda else 'bf16'}) | {args.steps} steps: losses "
            f"{losses[0]:.1f} -> {losses[-1]:.1f}, all finite: {finite}; scaler skipped {step.skipped}; step-size "
            f"gradients finite: {step.step_grads_finite}; codes of the autocast forward = exported codes in "
            f"{checked - mismatched}/{checked} quantized layers |")


def check_ratio(args, data) -> str:
    torch.manual_seed(0)
    systems = {"stock": build("stock", args.size, VOCAB),
               "sandwich": build("allinone", args.size, VOCAB, subnet_sampling="sandwich")}
    steps = {k: AmpStep(m.to(args.device).train(), args.device) for k, m in systems.items()}
    times = {k: [] for k in systems}
    peaks = {k: [] for k in systems}
    cuda = args.device.startswith("cuda")
    for i in range(args.steps + 1):
        for name, step in steps.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            step(data)
            if cuda:
                torch.cuda.synchronize()
                peaks[name].append(torch.cuda.max_memory_allocated())
            if i:  # the first: warm-up
                times[name].append(time.perf_counter() - t0)
    t = {k: statistics.median(v) for k, v in times.items()}
    line = (f"| sandwich step vs stock step ({args.size}, batch {data[0].size(0)} x "
            f"{data[0].size(1) / 16000:.0f} s) | time {t['sandwich']:.3f} s / {t['stock']:.3f} s = "
            f"{t['sandwich'] / t['stock']:.2f}x")
    if cuda:
        p = {k: max(v) / 2 ** 30 for k, v in peaks.items()}
        line += f"; peak memory {p['sandwich']:.2f} GiB / {p['stock']:.2f} GiB = {p['sandwich'] / p['stock']:.2f}x"
    else:
        line += "; peak memory: CUDA only"
    return line + " |"


def check_ddp(args, data) -> str:
    cuda = args.device.startswith("cuda")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    backend = "nccl" if cuda else "gloo"
    torch.distributed.init_process_group(backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build("allinone", args.size, VOCAB, subnet_sampling="sandwich").to(args.device).train()
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(args.device).index or 0] if cuda else None,
            find_unused_parameters=True)
        step = AmpStep(ddp, args.device)
        losses = [step(data) for _ in range(max(2, args.steps // 2))]
    finally:
        torch.distributed.destroy_process_group()
    return (f"| DDP ({backend}, 1 rank, find_unused_parameters) | {len(losses)} AMP steps, losses "
            f"{losses[0]:.1f} -> {losses[-1]:.1f}, finite: {all(torch.isfinite(torch.tensor(losses)))} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="paper")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per utterance")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
    data = batch(args.size, args.device, args.batch, args.seconds)
    print(f"device: {name}; torch {torch.__version__}; size {args.size}: {SIZES[args.size][0]}", flush=True)
    print("| check | result |\n|---|---|", flush=True)
    for check in (check_amp, check_ratio, check_ddp):
        print(check(args, data), flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
