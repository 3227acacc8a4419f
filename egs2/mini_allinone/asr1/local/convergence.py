#!/usr/bin/env python3
"""Dev error against training minutes for one or more trainings: the evidence for
choosing a training setting (on dev, never on test).

    local/convergence.py --exp exp/asr_allinone exp/tune/t1 --label default t1 \\
        --out_png ../../../docs/mini_convergence.png --out_md exp/convergence.md

Per epoch of each ESPnet ``train.log`` (rotated logs included): cumulative minutes of
training + validation (ESPnet's per-epoch ``time``), updates so far, the learning rate
after them (ESPnet's scheduler replayed from the run's config.yaml),
and on the dev set (ESPnet's validation) the greedy-CTC CER and the attention accuracy
of the largest and the smallest subnet and the accuracy averaged over all subnets.

ESPnet's CER is counted on tokens joined as text, so it compares runs of one token type
only; ``--dev_wer data/dev`` also decodes the largest and the smallest subnet from every
epoch checkpoint still on disk (``Nepoch.pth``; keep them with ``keep_nbest_models``)
with ``espnet_allinone.bin.decode_subnets`` and ``--decode_config`` (greedy CTC by
default) and adds their dev WER, comparable across token types (cached in
``<exp>/dev_wer/<epoch>``).
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import yaml

from espnet_allinone.subnet import Subnet
from espnet_allinone.train_log import epoch_results, timespan_seconds, train_logs


def lr_after(config: Dict, updates: List[int]) -> List[float]:
    """The learning rate after each number of ``updates`` (the one the next update uses),
    from ESPnet's own optimizer and scheduler classes built as ``config`` (an ESPnet
    config.yaml) builds them (batch-step schedulers; an epoch scheduler gives the initial LR)."""
    import torch
    from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    opt = optim_classes[config["optim"]]([torch.nn.Parameter(torch.zeros(1))], **config["optim_conf"])
    name = config.get("scheduler")
    sched = scheduler_classes[name](opt, **config.get("scheduler_conf", {})) if name else None
    if not isinstance(sched, AbsBatchStepScheduler):
        sched = None  # stepped per epoch (or none): the initial LR is reported
    out, done = [], 0
    for n in updates:
        while sched is not None and done < n:
            sched.step()
            done += 1
        out.append(opt.param_groups[0]["lr"])
    return out


def mean_batch(exp: Path) -> float:
    """Mean utterances per training batch (ESPnet's "mini-batch sizes summary" line)."""
    for log in train_logs(exp):
        m = re.search(r"\[train\] mini-batch sizes summary: N-batch=\d+, mean=([0-9.]+)", log.read_text())
        if m:
            return float(m.group(1))
    return float("nan")


def curve(exp: Path) -> List[Dict[str, float]]:
    rows, minutes, batch = [], 0.0, mean_batch(exp)
    for epoch, phases in epoch_results(train_logs(exp)).items():
        train, valid = phases.get("train", {}), phases.get("valid", {})
        minutes += sum(timespan_seconds(p.get("time", "")) for p in phases.values()) / 60
        subnets = sorted({k[len("acc_"):] for k in valid if k.startswith("acc_") and k != "acc_mean"})
        updates = float(train.get("total_count", "nan"))
        row = dict(epoch=epoch, minutes=minutes, updates=updates, utts=updates * batch,
                   lr=float("nan"),
                   acc_mean=float(valid.get("acc_mean", "nan")))
        if subnets:
            # Subnet orders by (depth, width, bits): the grid's largest and smallest
            largest = max(subnets, key=Subnet.parse)
            smallest = min(subnets, key=Subnet.parse)
            row.update(largest=largest, smallest=smallest)
            for tag, s in (("largest", largest), ("smallest", smallest)):
                row[f"cer_ctc_{tag}"] = 100 * float(valid.get(f"cer_ctc_{s}", "nan"))
                row[f"acc_{tag}"] = float(valid.get(f"acc_{s}", "nan"))
        rows.append(row)
    if (exp / "config.yaml").exists() and rows:
        config = yaml.safe_load((exp / "config.yaml").read_text())
        for row, lr in zip(rows, lr_after(config, [int(r["updates"]) for r in rows])):
            row["lr"] = lr
    return rows


def add_dev_wer(exp: Path, rows: List[Dict], data_dir: Path, decode_config: Path, nj: int = 2) -> None:
    """Adds ``wer_largest`` / ``wer_smallest`` to the rows whose epoch checkpoint exists."""
    from espnet_allinone.scoring.wer import score_files

    for row in rows:
        ckpt = exp / f"{row['epoch']}epoch.pth"
        if not ckpt.exists() or "largest" not in row:
            continue
        out = exp / "dev_wer" / str(row["epoch"])
        proc = subprocess.run(
            [sys.executable, "-m", "espnet_allinone.bin.decode_subnets", "--asr_train_config",
             str(exp / "config.yaml"), "--asr_model_file", str(ckpt), "--data_dir", str(data_dir),
             "--subnets", row["largest"], row["smallest"], "--config", str(decode_config),
             "--output_dir", str(out), "--nj", str(nj)],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"decoding {ckpt} failed:\n{proc.stderr[-2000:]}")
        for tag in ("largest", "smallest"):
            hyp = out / row[tag] / data_dir.name / "text"
            row[f"wer_{tag}"] = score_files(data_dir / "text", hyp).wer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", nargs="+", required=True, help="ESPnet output dirs (with train.log)")
    p.add_argument("--label", nargs="+", help="one label per --exp (default: dir names)")
    p.add_argument("--out_md", help="markdown table to write")
    p.add_argument("--out_png", help="plot to write")
    p.add_argument("--x", choices=["minutes", "utts"], default="minutes",
                   help="x axis of the plot: training minutes or utterances seen")
    p.add_argument("--dev_wer", type=Path, metavar="DATA_DIR",
                   help="also decode DATA_DIR from every epoch checkpoint on disk; plot its WER")
    p.add_argument("--decode_config", type=Path, default=Path("conf/decode_asr_greedy.yaml"),
                   help="greedy CTC by default: the acoustic model alone, as the README's curves")
    args = p.parse_args(argv)
    labels = args.label or [Path(e).name for e in args.exp]
    if len(labels) != len(args.exp):
        p.error("give one --label per --exp")
    curves = {lab: curve(Path(e)) for lab, e in zip(labels, args.exp)}
    if args.dev_wer:
        for e, rows in zip(args.exp, curves.values()):
            add_dev_wer(Path(e), rows, args.dev_wer, args.decode_config)
    wer_head = (" dev WER largest [%] | smallest [%] |", "---|---|") if args.dev_wer else ("", "")
    lines = ["| setting | epoch | updates | utterances seen | training [min] | LR after | "
             "dev CER greedy CTC, largest [%] | smallest [%] | dev acc largest | smallest | mean of subnets |"
             + wer_head[0],
             "|---|---|---|---|---|---|---|---|---|---|---|" + wer_head[1]]
    for lab, rows in curves.items():
        for r in rows:
            lines.append(
                f"| {lab} | {r['epoch']} | {r['updates']:.0f} | {r['utts']:.0f} | {r['minutes']:.1f} | {r['lr']:.2e} | "
                f"{r.get('cer_ctc_largest', float('nan')):.1f} | {r.get('cer_ctc_smallest', float('nan')):.1f} | "
                f"{r.get('acc_largest', float('nan')):.3f} | {r.get('acc_smallest', float('nan')):.3f} | "
                f"{r['acc_mean']:.3f} |"
                + (f" {r.get('wer_largest', float('nan')):.1f} | {r.get('wer_smallest', float('nan')):.1f} |"
                   if args.dev_wer else ""))
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out_md:
        Path(args.out_md).write_text(table)
    if args.out_png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metric = "wer" if args.dev_wer else "cer_ctc"
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (lab, rows) in enumerate(curves.items()):
            color = f"C{i}"
            x = [r[args.x] for r in rows]
            ax.plot(x, [r.get(f"{metric}_largest", float("nan")) for r in rows], "-o", color=color,
                    ms=3, label=f"{lab}: largest subnet")
            ax.plot(x, [r.get(f"{metric}_smallest", float("nan")) for r in rows], "--", color=color,
                    label=f"{lab}: smallest subnet")
        ax.set_xlabel("training minutes (2-core CPU, ESPnet epoch times)" if args.x == "minutes"
                      else "training utterances seen (updates x mean batch)")
        ax.set_ylabel("dev WER, greedy CTC [%]" if args.dev_wer else "dev CER, greedy CTC [%]")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out_png, dpi=120)
        print(f"wrote {args.out_png}")


if __name__ == "__main__":
    main()
