#!/usr/bin/env python3
"""Searched layer-wise subnets against the uniform grid, at the grid's sizes.

    cd egs2/mini_allinone/asr1
    python ../../../benchmarks/layerwise_search.py --exp exp/asr_allinone --dev data/dev --test data/test \\
        --config conf/decode_asr.yaml --output_dir exp/layerwise_search

1. ``espnet_allinone.bin.search`` with the budget size <= the largest grid subnet's size: the Pareto
   front of (packed size, proxy WER) over all sizes below it (dev only);
2. every front point and every grid subnet decoded on dev and test with ``--config`` (the recipe's
   decoder; ``espnet_allinone.bin.decode_subnets``);
3. for each grid subnet: the front point of at most its size with the lowest **dev** WER (the test set
   is never used to choose), and its test WER against the grid subnet's (MAPSSWE, alpha 0.05);
4. the smallest front point whose dev WER is at most the largest grid subnet's, and the smallest one
   not significantly worse than it on dev (MAPSSWE), with their test WER;
5. with ``--compare_exp EXP``: the same subnets (front + grid) decoded with EXP's model too (e.g. one
   trained with ``subnet_sampling: sandwich_layerwise`` against the uniform sandwich), test WER of the
   two models compared per subnet (MAPSSWE);
6. with ``--recalibrate N``: the front points' BatchNorm statistics recalibrated on N training
   utterances (``espnet_allinone.bin.recalibrate``), decoded again: dev / test WER before and after.
Writes ``<output_dir>/RESULTS.md`` (also printed).
"""

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import yaml


def run(cmd):
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc_mean.ave.pth")
    p.add_argument("--dev", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--config", required=True, help="decode YAML of the final decodes")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--generations", type=int, default=12)
    p.add_argument("--proxy_utts", type=int, default=100)
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--recalibrate", type=int, default=0, help="training utterances for BatchNorm recalibration")
    p.add_argument("--train", type=Path, default=Path("data/train"))
    p.add_argument("--compare_exp", type=Path, default=None, help="another all-in-one model of the same space")
    args = p.parse_args()

    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.export import load_allinone
    from espnet_allinone.scoring.mapsswe import mapsswe
    from espnet_allinone.scoring.wer import score

    config, model_file = args.exp / "config.yaml", args.exp / args.model_file
    encoder = load_allinone(config, model_file).encoder
    space = encoder.subnet_space
    largest = space.largest
    sizes = {s.name: encoder.subnet_size(s).bits / 8 for s in space}
    search_dir = args.output_dir / "search"
    if not (search_dir / "candidates.csv").exists():
        run([sys.executable, "-m", "espnet_allinone.bin.search", "--asr_train_config", config, "--asr_model_file",
             model_file, "--data_dir", args.dev, "--budget", f"size={sizes[largest.name] / 1e6:.6f}MB",
             "--output_dir", search_dir, "--population", args.population, "--generations", args.generations,
             "--proxy_utts", args.proxy_utts, "--final", "1000"])
    rows = list(csv.DictReader(open(search_dir / "candidates.csv")))
    front = [r["subnet"] for r in rows if r["front"] == "1" and r["uniform_grid"] == "0"]
    size_of = {r["subnet"]: float(r["size_bytes"]) for r in rows}
    subnets = front + list(space.names)
    decode_dir = args.output_dir / "decode"
    run([sys.executable, "-m", "espnet_allinone.bin.decode_subnets", "--asr_train_config", config, "--asr_model_file",
         model_file, "--data_dir", args.dev, args.test, "--subnets", *subnets, "--config", args.config,
         "--output_dir", decode_dir, "--nj", args.nj])
    refs = {d.name: read_text(d / "text") for d in (args.dev, args.test)}

    def hyps(name, data):
        return read_text(decode_dir / str(encoder.subnet_space.get(name)) / data.name / "text")

    def wer(name, data):
        return score(refs[data.name], hyps(name, data)).wer

    dev = {n: wer(n, args.dev) for n in subnets}
    test = {n: wer(n, args.test) for n in subnets}
    conf = Path(args.config).name
    lines = [f"# Searched layer-wise subnets vs the uniform grid ({args.exp}, decoded with {conf})", "",
             f"Search: {len(rows)} subnets scored on {args.dev} (greedy-CTC proxy), {len(front)} layer-wise points "
             f"on the Pareto front below {largest} ({sizes[largest.name]:.0f} bytes). Chosen per grid size by dev "
             f"WER; test WER compared by MAPSSWE (alpha 0.05).", "",
             "| grid subnet | size [bytes] | dev / test WER [%] | best searched of at most its size | size [bytes] "
             "| dev / test WER [%] | test WER change | MAPSSWE (test) |", "|---|---|---|---|---|---|---|---|"]
    for g in space.names:
        fits = [n for n in front if size_of[n] <= sizes[g]]
        if not fits:
            lines.append(f"| {g} | {sizes[g]:.0f} | {dev[g]:.2f} / {test[g]:.2f} | (none smaller) | | | | |")
            continue
        best = min(fits, key=lambda n: (dev[n], size_of[n]))
        if dev[best] >= dev[g]:
            best_note = f"{best} (not better on dev: grid kept)"
        else:
            best_note = best
        m = mapsswe(refs[args.test.name], hyps(best, args.test), hyps(g, args.test))
        verdict = "n.s." if not m.significant else ("searched better" if m.better == "a" else "grid better")
        lines.append(f"| {g} | {sizes[g]:.0f} | {dev[g]:.2f} / {test[g]:.2f} | {best_note} | {size_of[best]:.0f} | "
                     f"{dev[best]:.2f} / {test[best]:.2f} | {test[best] - test[g]:+.2f} | {verdict} "
                     f"(p = {m.p_value:.3f}) |")
    target = dev[largest.name]
    matching = sorted((n for n in front if dev[n] <= target), key=lambda n: size_of[n])
    lines.append("")
    if matching:
        n = matching[0]
        m = mapsswe(refs[args.test.name], hyps(n, args.test), hyps(largest.name, args.test))
        lines.append(f"Smallest searched subnet with dev WER <= {largest}'s ({target:.2f} %): `{n}`, "
                     f"{size_of[n]:.0f} bytes ({100 * size_of[n] / sizes[largest.name]:.0f} % of {largest}); test WER "
                     f"{test[n]:.2f} vs {test[largest.name]:.2f} % (MAPSSWE p = {m.p_value:.3f}, "
                     f"{'significant' if m.significant else 'not significant'}).")
    else:
        lines.append(f"No searched subnet below {largest}'s size reaches its dev WER ({target:.2f} %).")
    same = [n for n in sorted(front, key=lambda n: size_of[n])
            if not mapsswe(refs[args.dev.name], hyps(n, args.dev), hyps(largest.name, args.dev)).significant]
    if same:
        n = same[0]
        m = mapsswe(refs[args.test.name], hyps(n, args.test), hyps(largest.name, args.test))
        lines.append(f"Smallest searched subnet not significantly different from {largest} on dev (MAPSSWE): `{n}`, "
                     f"{size_of[n]:.0f} bytes ({100 * size_of[n] / sizes[largest.name]:.0f} %); dev {dev[n]:.2f} vs "
                     f"{target:.2f} %, test {test[n]:.2f} vs {test[largest.name]:.2f} % (MAPSSWE p = {m.p_value:.3f}).")
    grid_same = [g for g in sorted(space.names, key=lambda g: sizes[g])
                 if not mapsswe(refs[args.dev.name], hyps(g, args.dev), hyps(largest.name, args.dev)).significant]
    lines.append(f"Smallest grid subnet not significantly different from {largest} on dev: `{grid_same[0]}`, "
                 f"{sizes[grid_same[0]]:.0f} bytes ({100 * sizes[grid_same[0]] / sizes[largest.name]:.0f} %).")
    if args.compare_exp:
        other_dir = args.output_dir / f"decode_{args.compare_exp.name}"
        run([sys.executable, "-m", "espnet_allinone.bin.decode_subnets", "--asr_train_config",
             args.compare_exp / "config.yaml", "--asr_model_file", args.compare_exp / args.model_file,
             "--data_dir", args.dev, args.test, "--subnets", *subnets, "--config", args.config,
             "--output_dir", other_dir, "--nj", args.nj])
        lines += ["", f"The same subnets decoded with {args.compare_exp} (this model = {args.exp}):", "",
                  "| subnet | size [bytes] | dev WER this / other [%] | test WER this / other [%] | "
                  "MAPSSWE this vs other (test) |", "|---|---|---|---|---|"]
        for n in sorted(subnets, key=lambda n: -size_of.get(n, sizes.get(n, 0))):
            name = str(encoder.subnet_space.get(n))
            other = {d.name: read_text(other_dir / name / d.name / "text") for d in (args.dev, args.test)}
            wo = {d: score(refs[d], other[d]).wer for d in other}
            m = mapsswe(refs[args.test.name], hyps(n, args.test), other[args.test.name])
            verdict = "n.s." if not m.significant else ("this better" if m.better == "a" else "other better")
            lines.append(f"| {n}{' (grid)' if n in sizes else ''} | {size_of.get(n, sizes.get(n, 0)):.0f} | "
                         f"{dev[n]:.2f} / {wo[args.dev.name]:.2f} | {test[n]:.2f} / {wo[args.test.name]:.2f} | "
                         f"{verdict} (p = {m.p_value:.3f}) |")
    if args.recalibrate:
        recal_model = args.output_dir / "recalibrated.pth"
        if not recal_model.exists():
            run([sys.executable, "-m", "espnet_allinone.bin.recalibrate", "--asr_train_config", config,
                 "--asr_model_file", model_file, "--data_dir", args.train, "--num_utts", args.recalibrate,
                 "--subnet", *front, "--output_model", recal_model])
        recal_dir = args.output_dir / "decode_recalibrated"
        run([sys.executable, "-m", "espnet_allinone.bin.decode_subnets", "--asr_train_config", config,
             "--asr_model_file", recal_model, "--data_dir", args.dev, args.test, "--subnets", *front,
             "--config", args.config, "--output_dir", recal_dir, "--nj", args.nj])
        lines += ["", f"BatchNorm recalibration of the front's layer-wise points on {args.recalibrate} utterances of "
                      f"{args.train}:", "", "| subnet | dev WER before / after | test WER before / after | "
                      "MAPSSWE after vs before (test) |", "|---|---|---|---|"]
        for n in sorted(front, key=lambda n: size_of[n]):
            name = str(encoder.subnet_space.get(n))
            after = {d.name: read_text(recal_dir / name / d.name / "text") for d in (args.dev, args.test)}
            wa = {d: score(refs[d], after[d]).wer for d in after}
            m = mapsswe(refs[args.test.name], after[args.test.name], hyps(n, args.test))
            lines.append(f"| {n} | {dev[n]:.2f} / {wa[args.dev.name]:.2f} | {test[n]:.2f} / {wa[args.test.name]:.2f} "
                         f"| {'n.s.' if not m.significant else ('better' if m.better == 'a' else 'worse')} "
                         f"(p = {m.p_value:.3f}) |")
    text = "\n".join(lines) + "\n"
    (args.output_dir / "RESULTS.md").write_text(text)
    yaml.safe_dump({"dev": dev, "test": test, "size": size_of}, open(args.output_dir / "wer.yaml", "w"))
    print(text)


if __name__ == "__main__":
    main()
