"""``benchmarks/gpu_check.py`` (the GPU run of mixed precision and DDP) on its CPU path: bf16
autocast, gloo, the tiny size. The CUDA run itself needs a GPU machine (docs/results.md)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_path(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--device", "cpu", "--size", "tiny", "--steps", "2", "--batch", "2", "--seconds", "1"])
    out = capsys.readouterr().out
    assert "| AMP steps (bfloat16) | 2 steps: losses" in out and "all finite: True" in out
    assert "step-size gradients finite: True" in out
    assert "codes of the autocast forward = exported codes in 15/15 quantized layers" in out
    assert "| sandwich step vs stock step (tiny, bfloat16 autocast, batch 2 x 1 s) | time " in out
    assert "| DDP (gloo, 1 rank, find_unused_parameters) | 2 AMP steps" in out and "finite: True |" in out
