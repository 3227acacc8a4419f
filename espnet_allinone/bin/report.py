#!/usr/bin/env python3
"""Results table of every decoded subnet: size, compression, WER per set, speed.

    python -m espnet_allinone.bin.report --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/valid.acc_mean.ave.pth --decode_dir exp/asr/decode \\
        --data_dir data/dev data/test data/test_unseen --out_dir exp/asr

Prints the table and writes ``RESULTS.md``, ``results.csv`` and ``wer_vs_size.png``
(WER against encoder size in MB, one line per test set) into ``--out_dir``.
"""

import argparse
import csv
from pathlib import Path
from typing import Dict, List

from espnet_allinone.scoring.wer import read_text, score


def collect(encoder, decode_dir: Path, data_dirs: List[Path]) -> List[Dict]:
    rows = []
    for spec in encoder.subnet_space:
        size = encoder.subnet_size(spec)
        row = {
            "subnet": spec.name,
            "params": size.params,
            "bits": spec.bits,
            "size_mb": size.bits / 8 / 1e6,
            "ratio": encoder.compression_ratio(spec),
        }
        rtfs = []
        for d in data_dirs:
            hyp_dir = decode_dir / spec.name / d.name
            if (hyp_dir / "text").exists():
                row[f"wer_{d.name}"] = score(read_text(d / "text"), read_text(hyp_dir / "text")).wer
                rtfs.append(float((hyp_dir / "rtf").read_text()))
            else:
                row[f"wer_{d.name}"] = None
        row["rtf"] = sum(rtfs) / len(rtfs) if rtfs else None
        rows.append(row)
    return rows


def markdown(rows: List[Dict], sets: List[str]) -> str:
    head = ["subnet", "enc. params", "bits", "enc. size [MB]", "compression"] + [f"WER {s} [%]" for s in sets] + ["RTF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["subnet"], f"{r['params'] / 1e6:.2f}M", str(r["bits"]), f"{r['size_mb']:.2f}", f"{r['ratio']:.1f}x"]
        cells += ["-" if r[f"wer_{s}"] is None else f"{r[f'wer_{s}']:.1f}" for s in sets]
        cells.append("-" if r["rtf"] is None else f"{r['rtf']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict], sets: List[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FormatStrFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, marker in zip(sets, "os^vDP"):
        pts = [(r["size_mb"], r[f"wer_{s}"]) for r in rows if r[f"wer_{s}"] is not None]
        if pts:  # points, not lines: subnets of similar size differ in kind
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=s)
    for r in rows:
        wers = [r[f"wer_{s}"] for s in sets if r[f"wer_{s}"] is not None]
        if wers:
            ax.annotate(r["subnet"], (r["size_mb"], min(wers)), fontsize=7, rotation=-30,
                        textcoords="offset points", xytext=(2, -6), va="top")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("encoder size [MB] (log scale)")
    ax.set_ylabel("WER [%]")
    ax.set_title("all-in-one subnets: WER vs encoder size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--decode_dir", required=True)
    p.add_argument("--data_dir", nargs="+", required=True)
    p.add_argument("--out_dir", required=True)
    args = p.parse_args(argv)

    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(args.asr_train_config, args.asr_model_file, "cpu")
    data_dirs = [Path(d) for d in args.data_dir]
    sets = [d.name for d in data_dirs]
    rows = collect(model.encoder, Path(args.decode_dir), data_dirs)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, sets)
    (out / "RESULTS.md").write_text(
        f"# Results\n\nmodel: `{args.asr_model_file}`\n\n{table}\n"
        "compression: storage of the float largest encoder / storage of the subnet's encoder "
        "(quantized weights at their bit-width, the rest at 32 bits); RTF: decoding time / audio "
        "time, one CPU thread.\n"
    )
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, sets, out / "wer_vs_size.png")
    print(table)
    print(f"[report] {out / 'RESULTS.md'}, {out / 'results.csv'}, {out / 'wer_vs_size.png'}")


if __name__ == "__main__":
    main()
