#!/usr/bin/env python3
"""Mixed precision and DDP on a GPU, in one short run (< 8 minutes on one H100 at the paper size).

    python benchmarks/gpu_check.py                       # CUDA: ESPnet's AMP (bf16 or fp16) + GradScaler, NCCL
    python benchmarks/gpu_check.py --device cpu --size tiny --steps 2   # its CPU path (bf16, gloo)

Three checks, each printed as a line of a markdown table (paste into docs/results.md):

1. AMP steps of the all-in-one model, as ESPnet's ``use_amp: true`` runs them (espnet2/train/trainer.py:
   autocast around the forward, in bf16 where the GPU supports it, else fp16; ``GradScaler`` scaling the
   loss, unscale, gradient clipping at 5, ``scaler.step``, ``scaler.update``), then the same in fp16 (the
   GPUs without bf16); on CPU bf16 autocast without a scaler. Reported: losses finite, steps the scaler
   skipped, step-size gradients finite in the steps it took, and that the codes the autocast forward
   multiplies with are the codes the export stores.
2. Time and peak memory of a sandwich step (largest + smallest + 1 random subnet) against a stock
   ESPnet Conformer step of the largest size, both under ESPnet's autocast, interleaved, medians; each
   system alone on the GPU during its step (CUDA memory: ``torch.cuda.max_memory_allocated``).
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


def espnet_amp_dtype(device: str) -> torch.dtype:
    """The autocast dtype ESPnet's trainer uses with ``use_amp: true`` (espnet2/train/trainer.py, both
    ESPnet lines): bf16 where the GPU supports it, else fp16; bf16 on CPU."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


class AmpStep:
    """One optimiser step as ESPnet's trainer takes it with ``use_amp: true`` on CUDA (autocast around
    the forward, GradScaler, unscale, gradient clipping at 5, ``scaler.step``, ``scaler.update``), or
    under bf16 autocast on CPU. ``check_steps``: record whether every step size's unscaled gradient is
    finite in the steps the scaler does not skip (one device read per step size: not while timing)."""

    def __init__(self, model, device: str, dtype: torch.dtype, check_steps: bool = False):
        self.model, self.device, self.dtype = model, device, dtype
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.cuda = device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda") if self.cuda else None
        self.check_steps = check_steps
        self.skipped = 0
        self.step_grads_finite = True

    def __call__(self, data) -> float:
        with torch.autocast("cuda" if self.cuda else "cpu", dtype=self.dtype):
            loss, _, _ = self.model(data[0], data[1], data[2].clone(), data[3])
        loss = loss.sum()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            if bool(torch.isfinite(norm)):
                self._check_step_grads()
            else:
                self.skipped += 1  # scaler.step skips it, scaler.update lowers the scale
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self._check_step_grads()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _check_step_grads(self):
        if not self.check_steps:
            return
        grads = [p.grad for n, p in self.model.named_parameters() if "weight_log_step" in n and p.grad is not None]
        self.step_grads_finite &= bool(grads) and bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def check_amp(args, data, dtype: torch.dtype) -> str:
    torch.manual_seed(0)
    model = build("allinone", args.size, VOCAB, subnet_sampling="sandwich").to(args.device).train()
    step = AmpStep(model, args.device, dtype, check_steps=True)
    losses = [step(data) for _ in range(args.steps)]
    model.eval()
    mismatched, checked = 0, 0
    smallest = model.encoder.subnet_space.smallest
    with torch.no_grad(), model.encoder.using_subnet(smallest), \
            torch.autocast("cuda" if step.cuda else "cpu", dtype=dtype):
        for m in (m for unit in model.encoder.subnet_modules(smallest) for m in unit.modules()):
            if isinstance(m, ElasticWeight) and m.active_bits != 32:
                codes, scale = m.active_grid()
                exported = m.integer_weight().dequantize()  # codes * steps, as the export stores them
                mismatched += int(not torch.equal(codes.to(dtype).float() * scale, exported))
                checked += 1
    finite = all(torch.isfinite(torch.tensor(losses)))
    how = f"{str(dtype).split('.')[-1]}" + (" + GradScaler" if step.cuda else "")
    return (f"| AMP steps ({how}) | {args.steps} steps: losses {losses[0]:.1f} -> {losses[-1]:.1f}, all finite: "
            f"{finite}; scaler skipped {step.skipped}; step-size gradients finite: {step.step_grads_finite}; "
            f"codes of the autocast forward = exported codes in {checked - mismatched}/{checked} quantized layers |")


def check_ratio(args, data, dtype: torch.dtype) -> str:
    """Each system alone on the device in turn (the other's model and Adam state on the CPU meanwhile), so
    that its peak memory is its own; steps interleaved in rounds, medians."""
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    systems = {"stock": build("stock", args.size, VOCAB),
               "sandwich": build("allinone", args.size, VOCAB, subnet_sampling="sandwich")}
    steps = {k: AmpStep(m.train(), args.device, dtype) for k, m in systems.items()}
    times = {k: [] for k in systems}
    peaks = {k: [] for k in systems}

    def place(name, device):
        systems[name].to(device)
        for state in steps[name].opt.state.values():
            for k, v in state.items():
                if torch.is_tensor(v):
                    state[k] = v.to(device)

    for i in range(args.steps + 1):
        for name, step in steps.items():
            place(name, args.device)
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
            if cuda:
                place(name, "cpu")
    t = {k: statistics.median(v) for k, v in times.items()}
    line = (f"| sandwich step vs stock step ({args.size}, {str(dtype).split('.')[-1]} autocast, batch "
            f"{data[0].size(0)} x {data[0].size(1) / 16000:.0f} s) | time {t['sandwich']:.3f} s / "
            f"{t['stock']:.3f} s = {t['sandwich'] / t['stock']:.2f}x")
    if cuda:
        p = {k: max(v) / 2 ** 30 for k, v in peaks.items()}
        line += (f"; peak memory (model, Adam state, activations) {p['sandwich']:.2f} GiB / {p['stock']:.2f} GiB"
                 f" = {p['sandwich'] / p['stock']:.2f}x")
    else:
        line += "; peak memory: CUDA only"
    return line + " |"


def check_ddp(args, data, dtype: torch.dtype) -> str:
    cuda = args.device.startswith("cuda")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    backend = "nccl" if cuda else "gloo"
    device = torch.device(args.device)
    if cuda:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build("allinone", args.size, VOCAB, subnet_sampling="sandwich").to(device).train()
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if cuda else None, find_unused_parameters=True)
        step = AmpStep(ddp, args.device, dtype)
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
    espnet = espnet_amp_dtype(args.device)
    if args.device.startswith("cuda"):  # ESPnet's choice, and fp16 + GradScaler (GPUs without bf16)
        for dtype in dict.fromkeys((espnet, torch.float16)):
            print(check_amp(args, data, dtype), flush=True)
    else:
        print(check_amp(args, data, espnet), flush=True)
    print(check_ratio(args, data, espnet), flush=True)
    print(check_ddp(args, data, espnet), flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
