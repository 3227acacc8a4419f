"""All-in-one training under ESPnet's own distributed training (DDP), on CPU.

Two processes of stock ``espnet2.bin.asr_train`` (``--ngpu 0 --dist_backend gloo``)
are started by ``torchrun``, which sets ``RANK``/``WORLD_SIZE``/``MASTER_*`` exactly as
for a multi-node GPU run; ESPnet then wraps the model in
``torch.nn.parallel.DistributedDataParallel`` itself (its "external launcher" mode).

The subnet space has three bit-widths, so with ``sandwich`` sampling (largest 8-bit,
smallest 4-bit, one random other) the 6-bit step sizes are unused in some steps: DDP
needs ``unused_parameters: true`` (``find_unused_parameters``), as the recipes' configs set.
"""

import json
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


# Runs stock espnet2.bin.asr_train on each rank, recording per training step the subnets the model trains
# ("trained") and those this rank's own ``random`` would have drawn ("own"). Rank 1 first consumes one number
# of its ``random`` at every step (as a data augmentation drawing differently per rank would), so that the
# ranks' own draws differ: only the model's broadcast of rank 0's draw makes them train the same.
RECORD_DRAWS = """
import json, os, random, sys

from espnet_allinone.model import AllInOneASRModel

rank = int(os.environ["RANK"])
log = open(f"draws.{rank}.jsonl", "w")
subnets_for_step = AllInOneASRModel.subnets_for_step


def recording(self):
    if not self.training:  # validation computes every subnet
        return subnets_for_step(self)
    if rank != 0:
        random.random()
    own = random.Random()
    own.setstate(random.getstate())
    own = self.encoder.subnet_space.sample(self.subnet_sampling, self.num_random_subnets, own)
    trained = subnets_for_step(self)
    log.write(json.dumps({"own": [s.name for s in own], "trained": [s.name for s in trained]}) + "\\n")
    log.flush()
    return trained


AllInOneASRModel.subnets_for_step = recording
from espnet2.bin.asr_train import main

main(sys.argv[1:])
"""


def _train_ddp(d: Path, unused_parameters: bool) -> subprocess.CompletedProcess:
    conf = {**TRAIN_CONFIG, "encoder_conf": {**TRAIN_CONFIG["encoder_conf"], **SPACE}}
    conf.update(unused_parameters=unused_parameters, batch_size=4, max_epoch=1)
    out = f"exp_unused_{unused_parameters}"
    (d / f"{out}.yaml").write_text(yaml.safe_dump(conf))
    (d / "record_draws.py").write_text(RECORD_DRAWS)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"), "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "record_draws.py", "--config", f"{out}.yaml",
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
    # every rank trained rank 0's draw at every step, though their own draws differed
    r0, r1 = ([json.loads(line) for line in (data / f"draws.{r}.jsonl").read_text().splitlines()] for r in (0, 1))
    assert len(r0) == len(r1) == 2  # 8 utterances, global batches of 4: 2 steps
    assert [s["trained"] for s in r0] == [s["trained"] for s in r1] == [s["own"] for s in r0]
    assert [s["own"] for s in r0] != [s["own"] for s in r1]
    space = {f"{d}-{w}-{b}bit" for d in SPACE["subnet_depths"] for w in SPACE["subnet_widths"]
             for b in SPACE["subnet_bits"]}
    for step in r0:  # sandwich: the largest, the smallest and one other subnet of the space
        largest, smallest, other = step["trained"]
        assert (largest, smallest) == ("2-32-8bit", "1-16-4bit") and other in space - {largest, smallest}
    # the step sizes a trained subnet used (its bit-width, in the blocks of its depth) were initialised at
    # first use in training, marked so, and stay finite; the others were never initialised
    trained = [tuple(int(x) for x in name.replace("bit", "").split("-")) for s in r0 for name in s["trained"]]
    ready = {k: v for k, v in ckpt.items() if k.endswith(".weight_log_step_ready")}
    assert len(ready) > 10
    for key, flags in ready.items():
        block = re.match(r"encoder\.encoders\.(\d+)\.", key)
        want = [any(b == bits and (block is None or depth > int(block[1])) for depth, _, b in trained)
                for bits in sorted(SPACE["subnet_bits"])]
        assert flags.tolist() == [float(w) for w in want], key
        for bits, w in zip(sorted(SPACE["subnet_bits"]), want):
            if w:
                assert torch.isfinite(steps[key.replace("_ready", f".{bits}bit")]).all(), key
    # validation of the distributed run reports the trained subnets (a subnet no step trained is left out)
    for subnet in {name for s in r0 for name in s["trained"]}:
        assert re.search(rf"acc_{subnet}=[0-9]", proc.stderr), subnet


def test_ddp_without_unused_parameters_fails_clearly(data):
    """Documents why the configs set ``unused_parameters: true``."""
    proc = _train_ddp(data, unused_parameters=False)
    assert proc.returncode != 0
    assert "find_unused_parameters" in proc.stderr
