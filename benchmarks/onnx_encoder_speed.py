#!/usr/bin/env python3
"""Encoder + CTC head of subnets: PyTorch fp32 vs ONNX Runtime float vs ORT int8 / int4 (trained codes).

    cd egs2/mini_allinone/asr1    # the mini model of the embedded default
    python ../../../benchmarks/onnx_encoder_speed.py --exp exp/asr_allinone --subnets 6-576-8bit 4-288-4bit
    python benchmarks/onnx_encoder_speed.py --paper_size      # 12 x 256 x 2048, random weights

Each subnet is exported with :func:`espnet_allinone.onnx_export.export_onnx`; then, interleaved round by
round (every system in its own process, 1 + 3 times per round, the first untimed, so background load
shifts them alike), 10 s of features (1000
frames, batch 1, 2 threads) go through: the stock subnet model in PyTorch fp32 (global MVN + encoder + CTC
log-softmax; what ``--formats stock`` gives), its float ONNX graph, its int8 graph (trained codes on
ORT's dynamic int8 MatMuls) and, for <= 4 bits, its int4 graph (MatMulNBits) in ONNX Runtime. Prints the
median times, the speed-ups over PyTorch and the files' sizes against the bit bound (encoder codes at b
bits + float parts + CTC head). ``--paper_size``: the swbd recipe's model (conf/tuning/
train_asr_allinone_K.yaml, 12 blocks x 256 x 2048, 2000 tokens) with random weights: speed only.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

PAPER_CONFIG = Path(__file__).parent.parent / "egs2/swbd_allinone/asr1/conf/tuning/train_asr_allinone_K.yaml"


def paper_size_model(tmp: Path, vocab: int = 2000):
    """The swbd recipe's all-in-one model with random weights (and LSQ steps set from them)."""
    from espnet2.tasks.asr import ASRTask

    config = yaml.safe_load(PAPER_CONFIG.read_text())
    config.update(normalize="utterance_mvn", normalize_conf={})  # no statistics file for random weights
    (tmp / "train.yaml").write_text(yaml.safe_dump(config))
    (tmp / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", *(f"t{i}" for i in range(vocab - 3)),
                                               "<sos/eos>"]) + "\n")
    args = ASRTask.get_parser().parse_args(["--config", str(tmp / "train.yaml"), "--token_list",
                                            str(tmp / "tokens.txt"), "--token_type", "char",
                                            "--output_dir", str(tmp / "exp")])
    torch.manual_seed(0)
    model = ASRTask.build_model(args).eval()
    for m in model.encoder.modules():
        for key in getattr(m, "weight_log_step", {}):
            m.step(int(key[: -len("bit")]))  # LSQ's initial step from the weights
    return model, vars(args)


def _session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    # fold DequantizeLinear of constant weights (the int8 graphs' convolutions) into float weights at load
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    return so


def _worker(conn, kind: str, path: str, n_mels: int, frames: int, threads: int):
    """One system in its own process (no thread pool of another system competing for the cores): on each
    "run", 1 untimed + 3 timed forwards; on "stop", its peak RSS (VmHWM: ru_maxrss survives the exec)."""
    torch.set_num_threads(threads)
    feats, lengths = torch.randn(1, frames, n_mels), torch.tensor([frames])
    if kind == "torch":
        wrapper = torch.load(path, weights_only=False)

        def run():
            with torch.no_grad():
                wrapper(feats, lengths)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(path, _session_options(threads), providers=["CPUExecutionProvider"])
        feed = {"feats": feats.numpy(), "feats_lengths": lengths.numpy()}

        def run():
            session.run(None, feed)
    run()
    conn.send("ready")
    while conn.recv() == "run":
        run()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        conn.send(times)
    status = Path("/proc/self/status").read_text()
    conn.send(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, help="experiment dir with config.yaml and --model_file")
    p.add_argument("--model_file", default="valid.acc_mean.ave.pth")
    p.add_argument("--paper_size", action="store_true", help="the paper's model size, random weights")
    p.add_argument("--subnets", nargs="+", default=None,
                   help="default: 6-576-8bit 4-288-4bit (mini), 12-2048-8bit 8-1024-4bit (paper size)")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    if args.paper_size == (args.exp is not None):
        p.error("give --exp or --paper_size")

    import multiprocessing

    import onnxruntime

    from espnet_allinone.export import build_stock_model, load_allinone, stock_config, subnet_weights
    from espnet_allinone.onnx_export import EncoderCTC, export_onnx, graph_size

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.paper_size:
            model, train_config = paper_size_model(tmp)
            subnets = args.subnets or ["12-2048-8bit", "8-1024-4bit"]
        else:
            model = load_allinone(args.exp / "config.yaml", args.exp / args.model_file)
            train_config = yaml.safe_load((args.exp / "config.yaml").read_text())
            subnets = args.subnets or ["6-576-8bit", "4-288-4bit"]
        n_mels = int(model.frontend.output_size()) if model.frontend is not None else train_config["input_size"]
        systems, files = {}, {}
        for sub in subnets:
            paths = export_onnx(model, train_config, sub, tmp / sub)
            state, _ = subnet_weights(model, train_config, sub)
            stock = build_stock_model(stock_config(train_config, model, sub))
            stock.load_state_dict(state)
            torch.save(EncoderCTC(stock.eval()), tmp / sub / "torch.pt")
            systems[(sub, "torch")] = str(tmp / sub / "torch.pt")
            for kind in ("float", "int8", "int4"):
                if kind in paths:
                    systems[(sub, kind)] = str(paths[kind])
                    files[(sub, kind)] = graph_size(model, sub, paths[kind])
        del model
        workers = {}
        for key, path in systems.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, key[1], path, n_mels, args.frames, args.threads))
            proc.start()
            workers[key] = (proc, parent)
            parent.recv()  # loaded and warmed up, one at a time
        times = {k: [] for k in workers}
        for r in range(args.rounds):
            for key, (_, conn) in workers.items():
                time.sleep(0.3)  # the last system's ORT pool threads spin-wait ~0.1 s after a run (its default)
                conn.send("run")
                times[key] += conn.recv()
        rss = {}
        for key, (proc, conn) in workers.items():
            conn.send("stop")
            rss[key] = conn.recv()
            proc.join()
    med = {k: float(np.median(v)) for k, v in times.items()}

    what = "paper size, random weights" if args.paper_size else args.exp
    print(f"# encoder + CTC forward, batch 1 x {args.frames} frames ({args.frames / 100:g} s), {args.threads} "
          f"threads, each system in its own process, median of {args.rounds} interleaved rounds x 3; {what}; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print("| subnet | PyTorch fp32 [ms] | ORT float [ms] | ORT int8 [ms] | ORT int4 [ms] | speed-up over PyTorch: "
          "float / int8 / int4 | int8 file [bytes], of bit bound | int4 file [bytes], of bit bound "
          "| peak RSS PyTorch / int8 [MB] |")
    print("|---|---|---|---|---|---|---|---|---|")

    def cell(sub, kind, f):
        return f(med[(sub, kind)]) if (sub, kind) in med else "-"

    for sub in subnets:
        t = med[(sub, "torch")]
        ms = [cell(sub, k, lambda v: f"{1e3 * v:.1f}") for k in ("torch", "float", "int8", "int4")]
        ups = " / ".join(cell(sub, k, lambda v: f"{t / v:.2f}x") for k in ("float", "int8", "int4"))
        sizes = [f"{files[(sub, k)].file_bytes} ({100 * files[(sub, k)].of_bit_bound:.1f}%)" if (sub, k) in files
                 else "-" for k in ("int8", "int4")]
        mem = " / ".join(f"{rss[(sub, k)] / 2 ** 20:.0f}" for k in ("torch", "int8") if (sub, k) in rss)
        print(f"| {sub} | {' | '.join(ms)} | {ups} | {' | '.join(sizes)} | {mem} |", flush=True)
    print("targets: 8-bit (int8 graph) >= 2.0x over PyTorch fp32; int8 file >= 95% of the bit bound at 8 bits")


if __name__ == "__main__":
    main()
