#!/usr/bin/env python3
"""Encoder + CTC head of trained subnets: PyTorch fp32 vs ONNX Runtime fp32 vs ORT int8 (trained codes).

    cd egs2/mini_allinone/asr1
    python ../../../benchmarks/onnx_encoder_speed.py --exp exp/asr_allinone --subnets 6-576-8bit 4-288-4bit

Exports each subnet with :func:`espnet_allinone.onnx_export.export_ctc_onnx` and times, side by side in
one run, the median of 10 forwards of 10 s of features (1000 frames, batch 1, 2 threads): the stock
subnet model in PyTorch (global MVN + encoder + CTC log-softmax), its float ONNX graph and its int8 graph
in ONNX Runtime. Prints the times, the speed-ups over PyTorch and the files' sizes. Random features:
speed only (the hypotheses of the int8 graph are not measured here).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def bench(f, n=10):
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc_mean.ave.pth")
    p.add_argument("--subnets", nargs="+", default=["6-576-8bit", "4-288-4bit"])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import onnxruntime as ort

    from espnet_allinone.export import build_stock_model, load_allinone, stock_config, subnet_weights
    from espnet_allinone.onnx_export import EncoderCTC, export_ctc_onnx

    torch.set_num_threads(args.threads)
    config_file = args.exp / "config.yaml"
    model = load_allinone(config_file, args.exp / args.model_file)
    train_config = yaml.safe_load(config_file.read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    print("| subnet | PyTorch fp32 [ms] | ORT fp32 [ms] | ORT int8, trained codes [ms] | ORT fp32 / int8 speed-up "
          "over PyTorch | float / int8 file [bytes] |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for sub in args.subnets:
            paths = export_ctc_onnx(model, train_config, sub, Path(tmp) / sub)
            state, _ = subnet_weights(model, train_config, sub)
            stock = build_stock_model(stock_config(train_config, model, sub))
            stock.load_state_dict(state)
            wrapper = EncoderCTC(stock.eval())
            n_mels = int(stock.frontend.output_size())
            feats, lengths = torch.randn(1, args.frames, n_mels), torch.tensor([args.frames])
            feed = {"feats": feats.numpy(), "feats_lengths": lengths.numpy()}
            with torch.no_grad():
                t_torch = bench(lambda: wrapper(feats, lengths))
            t_float = bench(lambda s=ort.InferenceSession(str(paths["float"]), so): s.run(None, feed))
            t_int8 = float("nan")
            if "int8" in paths:
                t_int8 = bench(lambda s=ort.InferenceSession(str(paths["int8"]), so): s.run(None, feed))
            sizes = " / ".join(str(paths[k].stat().st_size) for k in ("float", "int8") if k in paths)
            print(f"| {sub} | {1e3 * t_torch:.1f} | {1e3 * t_float:.1f} | {1e3 * t_int8:.1f} | "
                  f"{t_torch / t_float:.2f}x / {t_torch / t_int8:.2f}x | {sizes} |", flush=True)


if __name__ == "__main__":
    main()
