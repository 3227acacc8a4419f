#!/usr/bin/env python3
"""Cost per utterance of an all-in-one training step at a small and a large batch,
measured side by side in one run (small batches should not pay a large fixed cost per
step, or more updates per epoch cost more than their arithmetic).

    python benchmarks/batch_size_cost.py                   # 7 vs 26 utterances, the mini recipe's model
    python benchmarks/batch_size_cost.py --config C.yaml   # the model of another training config
    python benchmarks/batch_size_cost.py --profile 7       # + torch profiler table of a 7-utt step

The model is built by ESPnet's ``ASRTask.build_model`` from the training YAML (default:
the mini recipe's), so dropout, SpecAugment and the frontend are the recipe's. A step is
what ESPnet's trainer does per batch: forward of the sandwich rule's subnets, backward,
gradient clipping (5, ESPnet's default), Adam update, zero_grad. Steps of the two batch
sizes are interleaved and the median is reported, so machine load affects both alike. The
random subnet is fixed per step index (the same draws for both sizes).
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

RECIPE_CONFIG = Path(__file__).resolve().parents[1] / "egs2/mini_allinone/asr1/conf/train_asr_allinone_conformer.yaml"


def build_from_config(config: Path, vocab: int):
    """The model ESPnet's asr_train builds from ``config`` (``vocab`` char tokens)."""
    from espnet2.tasks.asr import ASRTask

    with tempfile.TemporaryDirectory() as d:
        tokens = Path(d) / "tokens.txt"
        tokens.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)] + ["<sos/eos>"]))
        args = ASRTask.get_parser().parse_args(
            ["--config", str(config), "--token_list", str(tokens), "--token_type", "char"])
        return ASRTask.build_model(args)


def make_batch(n_utts: int, seconds: float, vocab: int, chars_per_second: float = 14.0):
    n = int(seconds * 16000)
    speech = torch.randn(n_utts, n) * 0.1
    lengths = torch.full((n_utts,), n)
    text = torch.randint(1, vocab - 1, (n_utts, int(seconds * chars_per_second)))
    return speech, lengths, text, torch.full((n_utts,), text.size(1))


def step(model, opt, batch, seed: int) -> float:
    random.seed(seed)  # the same sandwich draw for every batch size at this index
    t0 = time.perf_counter()
    speech, lengths, text, text_lengths = batch
    loss, _, _ = model(speech, lengths, text.clone(), text_lengths)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=7, help="utterances per small batch")
    parser.add_argument("--large", type=int, default=26, help="utterances per large batch")
    parser.add_argument("--seconds", type=float, default=2.4, help="audio per utterance (mini corpus mean)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, default=RECIPE_CONFIG, help="training YAML")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one step at N utterances (torch.profiler, top ops)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = 40
    model = build_from_config(args.config, vocab).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = {b: make_batch(b, args.seconds, vocab) for b in (args.small, args.large)}
    for b, batch in batches.items():  # warm-up: step sizes initialise, allocator settles
        step(model, opt, batch, 0)
    times = {b: [] for b in batches}
    for i in range(args.steps):
        for b, batch in batches.items():
            times[b].append(step(model, opt, batch, i + 1))
        print(f"[{i + 1}/{args.steps}] " + ", ".join(
            f"{b} utts: {t[-1]:.3f}s" for b, t in times.items()), flush=True)
    per_utt = {b: statistics.median(t) / b for b, t in times.items()}
    print(f"\nconfig={args.config.name} threads={args.threads} {args.seconds}s per utterance, "
          f"median of {args.steps} steps")
    print(f"{'utts/batch':>10s} {'step [s]':>9s} {'per utt [s]':>11s}")
    for b in batches:
        print(f"{b:10d} {statistics.median(times[b]):9.3f} {per_utt[b]:11.4f}")
    ratio = per_utt[args.small] / per_utt[args.large]
    t_small, t_large = (statistics.median(times[b]) for b in (args.small, args.large))
    fixed = (t_small * args.large - t_large * args.small) / (args.large - args.small)
    print(f"cost per utterance at {args.small} / at {args.large}: {ratio:.2f}x (target <= 1.15x); "
          f"fixed cost per step (linear fit): {fixed:.3f}s")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        batch = make_batch(args.profile, args.seconds, vocab)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(model, opt, batch, 1)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
