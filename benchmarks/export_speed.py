#!/usr/bin/env python3
"""Exported subnets side by side: encoder speed (PyTorch fp32), FLOPs, packed size on disk.

    python benchmarks/export_speed.py \\
        --asr_train_config exp/asr_allinone/config.yaml \\
        --asr_model_file exp/asr_allinone/valid.acc_mean.ave.pth [--subnets all] [--seconds 10]

For every subnet the stock encoder of its export (:func:`espnet_allinone.export.
subnet_weights`) is timed in fp32 (integer kernels on the trained codes: the ONNX export,
``benchmarks/onnx_encoder_speed.py``). All measurements are interleaved round by round
(every model once per round, the best round kept), so background load shifts them
alike and the printed ratios, taken within this one run, stay comparable. Printed:

- FLOP share: encoder FLOPs (torch's FlopCounterMode on the fp32 forward) over the
  largest subnet's; time share: fp32 encoder time over the largest subnet's fp32
  time; target time share <= 1.1 x FLOP share;
- packed bytes on disk (``encoder.packed``) against the bit bound (subnet_size bits / 8).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from espnet_allinone.export import (
    build_stock_model,
    export_packed,
    load_allinone,
    packed_size,
    stock_config,
    subnet_weights,
)
from espnet_allinone.subnet import FULL_PRECISION


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--subnets", nargs="+", default=["all"])
    p.add_argument("--seconds", type=float, default=10.0, help="input length (10 ms frames)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_allinone(args.asr_train_config, args.asr_model_file)
    train_config = yaml.safe_load(Path(args.asr_train_config).read_text())
    encoder = model.encoder
    space = encoder.subnet_space
    subnets = list(space) if args.subnets == ["all"] else [space.get(s) for s in args.subnets]
    largest = space.largest
    if largest not in subnets:
        subnets.insert(0, largest)

    frames = int(args.seconds * 100)
    feat_dim = model.frontend.output_size() if model.frontend else train_config["input_size"]
    x = torch.randn(args.batch_size, frames, feat_dim)  # (B, T, D) normalised features
    xl = torch.full((args.batch_size,), frames)

    runs, flops, sizes = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in subnets:
            state, _ = subnet_weights(model, train_config, spec)
            stock = build_stock_model(stock_config(train_config, model, spec))
            stock.load_state_dict(state)
            runs[(spec, "fp32")] = stock.encoder
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                stock.encoder(x, xl)
            flops[spec] = counter.get_total_flops()
            if spec.bits != FULL_PRECISION:
                packed = export_packed(model, train_config, spec, Path(tmp) / spec.name)
                sizes[spec] = packed_size(encoder, spec, packed)

    times = {k: [] for k in runs}
    with torch.no_grad():
        for enc in runs.values():  # warm-up
            enc(x, xl)
        for _ in range(args.rounds):
            for key, enc in runs.items():
                t0 = time.perf_counter()
                enc(x, xl)
                times[key].append(time.perf_counter() - t0)
    med = {k: min(v) for k, v in times.items()}  # best of the rounds: least disturbed by load

    print(f"# encoder forward, batch {args.batch_size} x {args.seconds:g} s, "
          f"{args.threads} thread(s), "
          f"best of {args.rounds} interleaved rounds; torch {torch.__version__}")
    print("| subnet | GFLOPs | FLOP share | fp32 [ms] | time share | time/FLOP share "
          "| packed [bytes] | bit bound [bytes] | size ratio vs fp32 largest | of bit ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    t_ref, f_ref = med[(largest, "fp32")], flops[largest]
    for spec in subnets:
        t32 = med[(spec, "fp32")]
        share = flops[spec] / f_ref
        row = [spec.name, f"{flops[spec] / 1e9:.2f}", f"{share:.3f}", f"{1e3 * t32:.1f}",
               f"{t32 / t_ref:.3f}", f"{(t32 / t_ref) / share:.2f}"]
        if spec in sizes:
            size = sizes[spec]
            row += [str(size.packed_bytes), f"{size.bound_bytes:.0f}", f"{size.ratio:.2f}x",
                    f"{100 * size.of_bit_ratio:.1f}%"]
        else:
            row += ["-"] * 4
        print("| " + " | ".join(row) + " |", flush=True)
    print("targets: time/FLOP share <= 1.10; size >= 95% of the bit ratio", file=sys.stderr)


if __name__ == "__main__":
    main()
