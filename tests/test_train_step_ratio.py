"""FLOP counting of benchmarks/train_step_ratio.py (the timing itself is a benchmark, not a test)."""

import importlib.util
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import batch, make_model

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_step_ratio", ROOT / "benchmarks/train_step_ratio.py")
ratio = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ratio)


def _step(model):
    x, xl, y, yl = batch()
    return ratio.step_flops(model, x, xl, y, yl)[0]


@pytest.mark.slow  # a subprocess or timed runs: seconds each
def test_sandwich_flops_are_the_mean_over_its_draws():
    model = make_model(subnet_sampling="sandwich").train()
    space = model.encoder.subnet_space
    draws = [s for s in space if s not in (space.largest, space.smallest)]
    each = []
    for s in draws:
        with mock.patch.object(model, "subnets_for_step", return_value=[space.largest, space.smallest, s]):
            each.append(_step(model))
    assert len(set(each)) > 1  # the draws differ in cost
    x, xl, y, yl = batch()
    assert ratio.mean_step_flops(model, x, xl, y, yl) == pytest.approx(sum(each) / len(each))


@pytest.mark.slow  # a subprocess or timed runs: seconds each
def test_sharing_saves_arithmetic_and_all_subnets_cost_more_than_three():
    sandwich = make_model(subnet_sampling="sandwich").train()
    x, xl, y, yl = batch()
    shared = ratio.mean_step_flops(sandwich, x, xl, y, yl)
    sandwich.share_prefixes = False
    unshared = ratio.mean_step_flops(sandwich, x, xl, y, yl)
    every = ratio.mean_step_flops(make_model(subnet_sampling="all").train(), x, xl, y, yl)
    largest_only = make_model(subnet_sampling="sandwich", num_random_subnets=0).train()
    with mock.patch.object(largest_only, "subnets_for_step",
                           return_value=[largest_only.encoder.subnet_space.largest]):
        one = _step(largest_only)
    assert one < shared < unshared < 3 * one
    assert shared < every
