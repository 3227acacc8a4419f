"""Elastic layers export the stock module of their active configuration; the packed
state codec round-trips."""

import pytest
import torch

from espnet_allinone.elastic import SubnetBatchNorm1d, make_elastic
from espnet_allinone.quant import pack_state, unpack_state
from espnet_allinone.subnet import Subnet


def _elastic(module, width_axis=None):
    root = torch.nn.Sequential(module)
    make_elastic(root, [4, 8])
    layer = root[0]
    layer.width_axis = width_axis
    return layer


LAYERS = [
    ("linear-out", lambda: torch.nn.Linear(12, 10), "out", (3, 12)),
    ("linear-in", lambda: torch.nn.Linear(10, 6, bias=False), "in", (3, 10)),
    ("conv1d", lambda: torch.nn.Conv1d(4, 6, 3, padding=1), None, (2, 4, 9)),
    ("depthwise-conv1d", lambda: torch.nn.Conv1d(6, 6, 5, groups=6, padding=2), None, (2, 6, 9)),
    ("conv2d", lambda: torch.nn.Conv2d(1, 5, 3, stride=2), None, (2, 1, 9, 11)),
]


@pytest.mark.parametrize("name,make,axis,shape", LAYERS, ids=[x[0] for x in LAYERS])
@pytest.mark.parametrize("bits", [4, 8, 32])
def test_exported_layer_is_stock_and_computes_the_same(name, make, axis, shape, bits):
    layer = _elastic(make(), axis)
    width = None
    if axis == "out":
        width = 7
    elif axis == "in":
        width, shape = 5, shape[:-1] + (5,)
    layer.set_active(width, bits)
    x = torch.randn(*shape)
    stock = layer.export()
    assert type(stock) in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
    with torch.no_grad():
        assert torch.equal(stock(x), layer(x))
    q = layer.integer_weight()
    if bits == 32:
        assert q is None
    else:
        assert q.bits == bits and q.codes.dtype == torch.int8
        assert torch.equal(q.dequantize(), stock.weight)
        assert int(q.codes.abs().max()) <= 2 ** (bits - 1) - 1
    if width is not None:  # sliced, not masked: the stock layer is smaller
        assert stock.weight.numel() < layer.weight.numel()


def test_exported_batchnorm_holds_the_active_subnets_statistics():
    specs = [Subnet.parse(n) for n in ("3-32-8bit", "3-16-4bit")]
    bn = SubnetBatchNorm1d.from_batchnorm(torch.nn.BatchNorm1d(6), specs)
    bn.train()
    x = torch.randn(4, 6, 10)
    for spec, scale in zip(specs, (1.0, 3.0)):
        bn.set_active(spec)
        bn(x * scale)
    bn.eval()
    for spec in specs:
        bn.set_active(spec)
        stock = bn.export()
        assert type(stock) is torch.nn.BatchNorm1d and not stock.training
        with torch.no_grad():
            assert torch.equal(stock(x), bn(x))
    assert not torch.equal(bn.export().running_var, bn.running_var)  # the 16-4bit statistics


def test_pack_state_round_trip_is_exact():
    layer = _elastic(torch.nn.Linear(9, 5))
    state, quantized = {}, {}
    for bits in (4, 8):
        layer.set_active(None, bits)
        q = layer.integer_weight()
        state[f"w{bits}"], quantized[f"w{bits}"] = q.dequantize(), q
    state["bias"] = torch.randn(5)
    state["num_batches_tracked"] = torch.tensor(7)
    blob = pack_state(state, quantized)
    assert blob["codes"].numel() == 5 * 9 // 2 + 1 + 5 * 9  # 4 bits: two codes per byte
    got, got_q = unpack_state(blob)
    assert got.keys() == state.keys()
    for k in state:
        assert torch.equal(got[k], state[k]), k
    for k in quantized:
        assert torch.equal(got_q[k].codes, quantized[k].codes) and got_q[k].bits == quantized[k].bits
    with pytest.raises(ValueError, match="not a espnet_allinone.packed_encoder"):
        unpack_state({**blob, "format": "other/1"})
    with pytest.raises(ValueError, match="only float32"):
        pack_state({"x": torch.zeros(2, dtype=torch.float64)}, {})


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_sort_units_keeps_the_function_and_orders_by_importance(kind):
    from espnet_allinone.elastic import sort_units

    torch.manual_seed(0)
    if kind == "linear":
        first, second, x = torch.nn.Linear(6, 10), torch.nn.Linear(10, 4), torch.randn(3, 6)
    else:
        first, second, x = torch.nn.Conv1d(6, 10, 3, padding=1), torch.nn.Conv1d(10, 4, 1), torch.randn(3, 6, 7)
    with torch.no_grad():
        first.weight.mul_(torch.linspace(0.1, 2, 10).reshape(-1, *([1] * (first.weight.dim() - 1))))
    pair = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    with torch.no_grad():
        before = pair(x)
        order = sort_units(first, second)
        after = pair(x)
    assert torch.allclose(before, after, atol=1e-6)
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    w1, w2 = first.weight.reshape(10, -1), second.weight.transpose(0, 1).reshape(10, -1)
    importance = w1.norm(dim=1) * w2.norm(dim=1)
    assert torch.all(importance[:-1] >= importance[1:])


def test_conformer_sort_ffn_units_keeps_the_largest_float_subnet():
    from tests.conftest import batch, make_encoder

    enc = make_encoder(grid=dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[32]))
    enc.eval()
    x, xl, _, _ = batch()
    with torch.no_grad():
        before = enc(x, xl)[0]
        enc.sort_ffn_units()
        assert torch.allclose(enc(x, xl)[0], before, atol=1e-5)
    pairs = list(enc.ffn_pairs())
    assert len(pairs) == 2 * 3  # macaron: two FFNs per block
    for first, second in pairs:
        importance = first.weight.norm(dim=1) * second.weight.norm(dim=0)
        assert torch.all(importance[:-1] >= importance[1:])


def test_prefix_sharing_memo_is_per_thread_and_closed_after_the_step():
    """DataParallel replicas share the PrefixSharing object and run in threads: each keeps
    its own memo, and none is left open after its step."""
    import threading

    from espnet_allinone.sharing import PrefixSharing

    sharing = PrefixSharing()
    seen, barrier = {}, threading.Barrier(2)

    def step(name):
        with sharing.step():
            sharing.reuse("who", lambda: name)
            barrier.wait()  # both steps open at once
            seen[name] = sharing.reuse("who", lambda: "computed again")
        seen[name + "_after"] = sharing.in_step

    threads = [threading.Thread(target=step, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] == "a" and seen["b"] == "b"
    assert seen["a_after"] is False and seen["b_after"] is False and not sharing.in_step
