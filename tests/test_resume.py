"""An all-in-one training by stock ``espnet2.bin.asr_train`` killed (SIGKILL) during
epoch 2 and resumed with ``--resume true`` ends exactly where an uninterrupted one does:
every parameter, every per-bit step size (and its initialised flag), every per-subnet
BatchNorm statistic, and the per-subnet validation stats.

Why it can be bit-identical on CPU: ESPnet saves ``checkpoint.pth`` (model, optimizer,
scheduler, reporter) at the end of each epoch and, at the start of every epoch, reseeds
every RNG with ``seed + epoch`` (``espnet2.train.trainer``), which also fixes the batch
order (``seed + epoch``) and the subnets the model draws with Python's ``random``.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from espnet_allinone.train_log import epoch_results
from tests.conftest import ASR_TRAIN_DATA_ARGS, TRAIN_CONFIG, write_tone_corpus

pytestmark = pytest.mark.slow

CONFIG = {**TRAIN_CONFIG, "max_epoch": 2, "batch_size": 2,
          "encoder_conf": {**TRAIN_CONFIG["encoder_conf"], "subnet_bits": [4, 8]}}


def _cmd(out: str):
    return [sys.executable, "-m", "espnet2.bin.asr_train", "--config", "train.yaml",
            "--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true",
            *ASR_TRAIN_DATA_ARGS, "--output_dir", out, "--ngpu", "0", "--resume", "true"]


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _train(d: Path, out: str) -> str:
    proc = subprocess.run(_cmd(out), cwd=d, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def _valid_stats(log: str, epoch: int):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.log"
        path.write_text(log)
        valid = epoch_results(path)[epoch]["valid"]
    return {k: v for k, v in valid.items() if "time" not in k}


def test_sigkill_in_epoch_2_then_resume_is_bit_identical(tmp_path):
    write_tone_corpus(tmp_path, 16, 2)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(CONFIG))
    full_log = _train(tmp_path, "full")

    log_file = tmp_path / "killed.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(_cmd("killed"), cwd=tmp_path, env=_env(), stdout=log, stderr=log,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while "2/2epoch started" not in log_file.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.02)
        time.sleep(0.3)  # a few steps into epoch 2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_log = log_file.read_text(errors="replace")
    assert "2epoch results" not in killed_log, "epoch 2 ended before the kill: make it longer"
    assert not (tmp_path / "killed/2epoch.pth").exists()
    resumed_log = _train(tmp_path, "killed")
    assert "2/2epoch started" in resumed_log and "1/2epoch started" not in resumed_log

    want = torch.load(tmp_path / "full/2epoch.pth", map_location="cpu")
    got = torch.load(tmp_path / "killed/2epoch.pth", map_location="cpu")
    assert list(got) == list(want)
    kinds = {"step sizes": "weight_log_step.", "initialised flags": "weight_log_step_ready",
             "per-subnet BatchNorm statistics": "running_"}
    for kind, part in kinds.items():
        assert any(part in k for k in want), kind  # the checkpoint holds them
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert differ == [], f"{len(differ)} of {len(want)} tensors differ: {differ[:5]}"
    full, resumed = _valid_stats(full_log, 2), _valid_stats(resumed_log, 2)
    assert any(k.startswith("acc_") and k != "acc_mean" for k in full)  # per-subnet stats
    assert resumed == full
