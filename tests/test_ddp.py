"""All-in-one training under ESPnet's own distributed training (DDP), on CPU.

Two processes of stock ``espnet2.bin.asr_train`` (``--ngpu 0 --dist_backend gloo``)
are started by ``torchrun``, which sets ``RANK``/``WORLD_SIZE``/``MASTER_*`` exactly as
for a multi-node GPU run; ESPnet then wraps the model in
``torch.nn.parallel.DistributedDataParallel`` itself (its "external launcher" mode).

The subnet space has three bit-widths, so with ``sandwich`` sampling (largest 8-bit,
smallest 4-bit, one random other) the 6-bit step sizes are unused in some steps: DDP
needs ``unused_parameters: true`` (``find_unused_parameters``), as the recipes' configs set.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ASR_TRAIN_DATA_ARGS, TRAIN_CONFIG, write_tone_corpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed"),
]

SPACE = {"subnet_depths": [1, 2], "subnet_widths": [16, 32], "subnet_bits": [4, 6, 8]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    write_tone_corpus(d, 8, 2)
    return d


def _train_ddp(d: Path, unused_parameters: bool) -> subprocess.CompletedProcess:
    conf = {**TRAIN_CONFIG, "encoder_conf": {**TRAIN_CONFIG["encoder_conf"], **SPACE}}
    conf.update(unused_parameters=unused_parameters, batch_size=4, max_epoch=1)
    out = f"exp_unused_{unused_parameters}"
    (d / f"{out}.yaml").write_text(yaml.safe_dump(conf))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"), "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "-m", "espnet2.bin.asr_train", "--config", f"{out}.yaml",
            "--ngpu", "0", "--dist_backend", "gloo", "--multiprocessing_distributed", "false",
            "--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true",
            *ASR_TRAIN_DATA_ARGS,
            "--output_dir", out,
        ],
        cwd=d, env=env, capture_output=True, text=True, timeout=600,
    )


def test_two_process_ddp_trains_allinone(data):
    proc = _train_ddp(data, unused_parameters=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    exp = data / "exp_unused_True"
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["model"] == "allinone" and config["unused_parameters"] is True
    # ESPnet prefixes its log lines with "[host:RANK/WORLD_SIZE]"
    assert re.search(r":0/2\] .*The training was finished at 1 epochs", proc.stderr)
    ckpt = torch.load(exp / "1epoch.pth", map_location="cpu")
    steps = {k: v for k, v in ckpt.items() if ".weight_log_step." in k}
    assert {k.rsplit(".", 1)[-1] for k in steps} == {"4bit", "6bit", "8bit"}
    # every step size was initialised and trained, none left NaN, and marked so
    assert all(torch.isfinite(v).all() for v in steps.values())
    ready = {k: v for k, v in ckpt.items() if k.endswith(".weight_log_step_ready")}
    assert ready and all(bool((v == 1).all()) for v in ready.values())
    # validation of the distributed run reports every subnet of the space
    for subnet in ["2-32-8bit", "2-16-6bit", "1-16-4bit"]:
        assert f"acc_{subnet}=" in proc.stderr, subnet


def test_ddp_without_unused_parameters_fails_clearly(data):
    """Documents why the configs set ``unused_parameters: true``."""
    proc = _train_ddp(data, unused_parameters=False)
    assert proc.returncode != 0
    assert "find_unused_parameters" in proc.stderr
