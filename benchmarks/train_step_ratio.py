#!/usr/bin/env python3
"""Time of one training step: all-in-one (largest + smallest + 1 random subnet) vs the
stock ESPnet Conformer of the largest size, measured side by side in one run.
Subnets of a step share what they compute alike (subsampling for equal bits, lower
blocks for equal width and bits); ``--no_sharing`` adds the same steps without that.

    python benchmarks/train_step_ratio.py               # mini-recipe size, CPU
    python benchmarks/train_step_ratio.py --size paper  # 12 x 256 x 2048, as the paper
    python benchmarks/train_step_ratio.py --flops       # + FLOPs of a step per system
    python benchmarks/train_step_ratio.py --cycle_draws --steps 18  # same subnets every run (commits)

A step is forward + backward + Adam update on the same batch of raw audio (fbank
frontend, utterance MVN, SpecAugment). Steps of the systems are interleaved and the
median is reported, so machine load affects them alike.

``--flops`` also counts the floating-point operations of a step (forward + backward,
``torch.utils.flop_counter``; the sandwich rule's random subnet averaged over its
choices): the ratio a step could reach if time followed arithmetic, independent of the
machine, and the share of the stock step spent in the encoder's input layer (conv2d
subsampling), which every subnet computes in full (once per bit-width in a step).
"""

import argparse
import statistics
import time

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.asr.specaug.specaug import SpecAug
from espnet2.layers.utterance_mvn import UtteranceMVN
from torch.utils.flop_counter import FlopCounterMode

from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
from espnet_allinone.model import AllInOneASRModel

SIZES = {
    # encoder conf, decoder blocks, subnet grid
    "tiny": (dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=2), 1,
             dict(subnet_depths=[1, 2], subnet_widths=[32, 64], subnet_bits=[4, 8])),
    "mini": (dict(output_size=144, attention_heads=4, linear_units=576, num_blocks=6), 3,
             dict(subnet_depths=[4, 6], subnet_widths=[288, 576], subnet_bits=[4, 8])),
    "paper": (dict(output_size=256, attention_heads=4, linear_units=2048, num_blocks=12), 6,
              dict(subnet_depths=[8, 12], subnet_widths=[1024, 2048], subnet_bits=[4, 8])),
}
COMMON = dict(input_layer="conv2d", macaron_style=True, rel_pos_type="latest",
              pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
              cnn_module_kernel=31)


def build(kind: str, size: str, vocab: int, **model_conf):
    enc_conf, dec_blocks, grid = SIZES[size]
    d = enc_conf["output_size"]
    if kind == "stock":
        encoder, cls = ConformerEncoder(80, **enc_conf, **COMMON), ESPnetASRModel
    else:
        encoder, cls = AllInOneConformerEncoder(80, **grid, **enc_conf, **COMMON), AllInOneASRModel
    return cls(
        vocab_size=vocab,
        token_list=[f"t{i}" for i in range(vocab - 1)] + ["<sos/eos>"],
        frontend=DefaultFrontend(n_mels=80),
        specaug=SpecAug(time_warp_window=5, freq_mask_width_range=(0, 27), num_freq_mask=2,
                        time_mask_width_ratio_range=(0.0, 0.05), num_time_mask=2),
        normalize=UtteranceMVN(),
        preencoder=None,
        encoder=encoder,
        postencoder=None,
        decoder=TransformerDecoder(vocab, d, attention_heads=4, linear_units=4 * d, num_blocks=dec_blocks),
        ctc=CTC(vocab, d),
        joint_network=None,
        ctc_weight=0.3,
        **model_conf,
    )


def step_flops(model, speech, speech_lengths, text, text_lengths):
    """(total, input layer) FLOPs of forward + backward of one training step."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        loss.sum().backward()
    model.zero_grad(set_to_none=True)
    embed = sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                if name.endswith("encoder.embed"))
    return counter.get_total_flops(), embed


def mean_step_flops(model, *batch):
    """FLOPs of a step averaged over the subnets the model's sampling rule can draw
    (every draw of the sandwich rule's random subnets equally likely)."""
    if not isinstance(model, AllInOneASRModel) or model.subnet_sampling == "all":
        return step_flops(model, *batch)[0]
    draws = model.encoder.subnet_space.sandwich_draws(model.num_random_subnets)
    total = 0
    for draw in draws:
        model.subnets_for_step = lambda chosen=draw: chosen  # shadows the sampler
        try:
            total += step_flops(model, *batch)[0]
        finally:
            del model.subnets_for_step
    return total / len(draws)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="mini")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per system")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per utterance")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no_sharing", action="store_true",
                        help="also time sandwich steps without sharing subsampling/block outputs between subnets")
    parser.add_argument("--cycle_draws", action="store_true",
                        help="sandwich systems take the random subnets' draws in turn instead of sampling "
                             "(the same subnets in every run: compares commits); reported per system as the "
                             "mean over draws of each draw's median step")
    parser.add_argument("--flops", action="store_true",
                        help="also count the FLOPs of a step (forward + backward) per system")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    vocab = 50
    systems = {
        "stock Conformer (largest)": build("stock", args.size, vocab),
        "all-in-one, sandwich (3 subnets)": build("allinone", args.size, vocab, subnet_sampling="sandwich"),
        "all-in-one, all 8 subnets": build("allinone", args.size, vocab, subnet_sampling="all"),
    }
    if args.no_sharing:  # the same steps, each subnet computed from scratch
        systems["all-in-one, sandwich, no sharing"] = build(
            "allinone", args.size, vocab, subnet_sampling="sandwich", share_prefixes=False)
    n = int(args.seconds * 16000)
    speech = torch.randn(args.batch, n, device=args.device) * 0.1
    speech_lengths = torch.full((args.batch,), n, device=args.device)
    text = torch.randint(1, vocab - 1, (args.batch, int(args.seconds * 12)), device=args.device)
    text_lengths = torch.full((args.batch,), text.size(1), device=args.device)
    optims = {}
    for name, model in systems.items():
        model.to(args.device).train()
        optims[name] = torch.optim.Adam(model.parameters(), lr=1e-4)

    draws = systems["all-in-one, sandwich (3 subnets)"].encoder.subnet_space.sandwich_draws(1)
    cycled = [name for name, model in systems.items()
              if args.cycle_draws and getattr(model, "subnet_sampling", None) == "sandwich"]

    def step(name, i=0):
        model, opt = systems[name], optims[name]
        if name in cycled:
            model.subnets_for_step = lambda chosen=draws[i % len(draws)]: chosen  # shadows the sampler
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if name in cycled:
            del model.subnets_for_step
        return time.perf_counter() - t0

    def typical(name):
        if name not in cycled:
            return statistics.median(times[name])
        per_draw = [statistics.median(times[name][d::len(draws)]) for d in range(min(len(draws), args.steps))]
        return statistics.mean(per_draw)

    times = {name: [] for name in systems}
    for name in systems:  # warm-up (step sizes initialise, allocator settles)
        step(name)
    for i in range(args.steps):
        for name in systems:
            times[name].append(step(name, i))
        print(f"[{i + 1}/{args.steps}] " + ", ".join(f"{k}: {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    base = typical("stock Conformer (largest)")
    enc_conf, _, grid = SIZES[args.size]
    print(f"\nsize={args.size} {enc_conf} grid={grid}")
    how = f"sandwich: mean over its {len(draws)} draws of each one's median" if cycled else "median"
    print(f"device={args.device} threads={args.threads} batch={args.batch}x{args.seconds}s steps={args.steps} ({how})")
    print(f"{'system':36s} {'params':>10s} {'step [s]':>9s} {'ratio':>6s}")
    for name, model in systems.items():
        med = typical(name)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:36s} {params:10d} {med:9.3f} {med / base:6.2f}x")
    if args.flops:
        batch = (speech, speech_lengths, text, text_lengths)
        stock = systems["stock Conformer (largest)"]
        base_flops, embed = step_flops(stock, *batch)
        print(f"\nFLOPs of a step, forward + backward (sandwich: mean over its random draws); "
              f"the stock step spends {100 * embed / base_flops:.0f} % in the input layer")
        print(f"{'system':36s} {'GFLOP':>9s} {'ratio':>6s}")
        for name, model in systems.items():
            flops = mean_step_flops(model, *batch)
            print(f"{name:36s} {flops / 1e9:9.1f} {flops / base_flops:6.2f}x")


if __name__ == "__main__":
    main()
