"""Elastic layers export the stock module of their active configuration; the packed
state codec round-trips."""

import pytest
import torch

from espnet_allinone.elastic import SubnetBatchNorm1d, make_elastic
from espnet_allinone.quant import pack_state, unpack_state
from espnet_allinone.subnet import SubnetSpec


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
    specs = [SubnetSpec.parse(n) for n in ("3-32-8bit", "3-16-4bit")]
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
