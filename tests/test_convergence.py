"""The mini recipe's convergence table (local/convergence.py) from ESPnet train.logs."""

import importlib.util
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "egs2/mini_allinone/asr1/local/convergence.py"
_spec = importlib.util.spec_from_file_location("convergence", SCRIPT)
convergence = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convergence)

SUBNETS = ["6-576-8bit", "6-288-4bit", "4-288-4bit"]


def _epoch_line(epoch, count, cer, acc, seconds):
    valid = ", ".join(f"acc_{s}={acc[i]}, cer_ctc_{s}={cer[i]}" for i, s in enumerate(SUBNETS))
    return (f"[vm] 2026-12-01 20:00:00,000 (trainer:394) INFO: {epoch}epoch results: [train] "
            f"loss=1.0, total_count={count}, time={seconds} seconds, [valid] {valid}, "
            f"acc_mean={sum(acc) / 3:.3f}, time=1 minute and 0 seconds")


@pytest.fixture
def exp(tmp_path):
    log = [
        "[vm] 2026-12-01 19:59:00,000 (abs_task:1886) INFO: [train] mini-batch sizes summary: "
        "N-batch=700, mean=4.5, min=2, max=8",
        _epoch_line(1, 300, [0.6, 0.65, 0.7], [0.3, 0.3, 0.2], 60),
        _epoch_line(2, 600, [0.3, 0.35, 0.4], [0.6, 0.5, 0.4], 120),
    ]
    (tmp_path / "train.log").write_text("\n".join(log) + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "optim": "adam", "optim_conf": {"lr": 0.002},
        "scheduler": "warmuplr", "scheduler_conf": {"warmup_steps": 300}}))
    return tmp_path


def test_curve_reads_every_epoch(exp):
    rows = convergence.curve(exp)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["minutes"] for r in rows] == pytest.approx([2.0, 5.0])  # train + valid, cumulative
    assert [r["utts"] for r in rows] == pytest.approx([1350, 2700])  # updates x mean batch
    assert rows[1]["largest"] == "6-576-8bit" and rows[1]["smallest"] == "4-288-4bit"
    assert rows[1]["cer_ctc_largest"] == pytest.approx(30.0)
    assert rows[1]["cer_ctc_smallest"] == pytest.approx(40.0)
    assert rows[1]["acc_smallest"] == pytest.approx(0.4)


def test_lr_is_the_schedule_replayed(exp):
    rows = convergence.curve(exp)
    # ESPnet's WarmupLR: lr * warmup^0.5 * min(n^-0.5, n * warmup^-1.5), n = the next update
    def noam(n, lr=0.002, warmup=300):
        return lr * warmup ** 0.5 * min(n ** -0.5, n * warmup ** -1.5)

    assert rows[0]["lr"] == pytest.approx(noam(301))
    assert rows[1]["lr"] == pytest.approx(noam(601))


def test_epoch_schedulers_report_the_initial_lr():
    config = {"optim": "adam", "optim_conf": {"lr": 0.01},
              "scheduler": "steplr", "scheduler_conf": {"step_size": 1, "gamma": 0.5}}
    assert convergence.lr_after(config, [100, 200]) == [0.01, 0.01]


def test_table_and_plot(exp, tmp_path):
    md, png = tmp_path / "c.md", tmp_path / "c.png"
    convergence.main(["--exp", str(exp), "--label", "t", "--out_md", str(md), "--out_png", str(png),
                      "--x", "utts"])
    lines = md.read_text().splitlines()
    assert len(lines) == 4 and lines[3].startswith("| t | 2 | 600 | 2700 | 5.0 |")
    assert png.stat().st_size > 0
