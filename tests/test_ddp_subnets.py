"""Under DDP (2 ranks, gloo) every rank trains the same subnets at every step: rank 0's
sandwich draw, even when the ranks' Python ``random`` states differ."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

STEPS = 20


def _rank(rank: int, world: int, init_file: str, out: str):
    import random

    from tests.conftest import make_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = make_model().train()
        random.seed(1000 + rank)  # e.g. a data augmentation that drew differently per rank
        draws = [[s.name for s in model.subnets_for_step()] for _ in range(STEPS)]
        random.seed(1000 + rank)
        own = [[s.name for s in model.encoder.subnet_space.sample("sandwich", 1, random)]
               for _ in range(STEPS)]
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"draws": draws, "own": own}, f)
    finally:
        dist.destroy_process_group()


def test_ranks_train_rank0s_subnets_at_every_step(tmp_path):
    out = str(tmp_path / "draws")
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    r0, r1 = (json.loads(open(f"{out}.{r}").read()) for r in (0, 1))
    assert r0["own"] != r1["own"]  # the ranks' own draws differ...
    assert r0["draws"] == r1["draws"] == r0["own"]  # ...but both train rank 0's
    space_size = 8
    assert all(len(d) == 3 and len(set(d)) == 3 for d in r0["draws"])  # sandwich: 3 per step
    assert len({n for d in r0["draws"] for n in d}) == space_size
