import pytest
import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from torch.utils.flop_counter import FlopCounterMode

from espnet_allinone.elastic import ElasticWeight, SubnetBatchNorm1d
from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
from tests.conftest import ADIM, IDIM, TINY, as_trained, batch, make_encoder

CONFIGS = [
    dict(),
    dict(macaron_style=False),
    dict(input_layer="conv2d6"),
    dict(input_layer="conv2d8"),
    dict(input_layer="linear"),
    dict(rel_pos_type="legacy", pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn"),
    dict(pos_enc_layer_type="abs_pos", selfattention_layer_type="selfattn"),
    dict(interctc_layer_idx=[1, 2]),
    dict(use_cnn_module=False),
    dict(positionwise_layer_type="conv1d"),
    dict(positionwise_layer_type="conv1d-linear"),
    dict(normalize_before=False),
]


def _outputs(y):
    """Encoder output and intermediate outputs as a flat list of tensors."""
    out, lens, _ = y
    if isinstance(out, tuple):
        out, inter = out
        return [out, lens] + [h for _, h in inter]
    return [out, lens]


def _sliced_stock_state(allinone, spec):
    """State dict of a stock encoder of spec's depth/width cut from the shared weights."""
    state = {}
    for k, v in allinone.state_dict().items():
        if "weight_log_step" in k or "_w" in k.rsplit(".", 1)[-1] or k in ("subnet_space_table", "ffn_units_ordered"):
            continue
        parts = k.split(".")
        if parts[0] == "encoders" and int(parts[1]) >= spec.depth:
            continue
        if ".feed_forward" in k and ".w_1." in k:
            v = v[: spec.width]
        if ".feed_forward" in k and ".w_2.weight" in k:
            v = v[:, : spec.width]
        key = SubnetBatchNorm1d.stats_key(spec)
        largest_stats = SubnetBatchNorm1d.stats_key(allinone.subnet_space.largest)
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")) and key != largest_stats:
            v = allinone.state_dict()[f"{k}_{key}"]
        state[k] = v
    return state


@pytest.mark.parametrize("ffn_order", ["keep", "l2"])
@pytest.mark.parametrize("conf", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_largest_32bit_equals_stock(conf, ffn_order):
    """Stock weights loaded: the stock forward runs, bit for bit (``keep``); with the FFN units
    ordered at the load (``l2``) the same function up to the order of the sums."""
    kw = {**TINY, **conf}
    grid = dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[4, 32])
    enc = make_encoder(grid=grid, ffn_order=ffn_order, **conf)
    stock = ConformerEncoder(IDIM, **kw)
    # the shared weights keep stock key names: a stock checkpoint fills every one
    result = enc.load_state_dict(stock.state_dict(), strict=False)
    assert result.unexpected_keys == []
    # missing: only what the plugin adds (step sizes, per-subnet statistics, the space, the FFN order)
    assert all(
        "weight_log_step" in k or "running_" in k or "num_batches" in k
        or k in ("subnet_space_table", "ffn_units_ordered")
        for k in result.missing_keys
    )
    enc.eval(), stock.eval()
    x, xl, _, _ = batch()
    ctc = CTC(10, 16)
    assert enc.active_subnet.name == "3-32-32bit"
    got = _outputs(enc(x, xl, ctc=ctc))
    want = _outputs(stock(x, xl, ctc=ctc))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if ffn_order == "keep":
            assert torch.equal(g, w)
        else:
            assert torch.allclose(g, w, atol=1e-5)


@pytest.mark.parametrize("subnet", ["2-32-32bit", "3-16-32bit", "2-16-32bit"])
@pytest.mark.parametrize(
    "conf",
    [dict(), dict(macaron_style=False), dict(positionwise_layer_type="conv1d"), dict(interctc_layer_idx=[1])],
)
def test_subnet_equals_stock_of_its_size_with_sliced_weights(subnet, conf):
    enc = make_encoder(grid=dict(subnet_depths=[2, 3], subnet_widths=[16, 32]), **conf)
    x, xl, _, _ = batch()
    enc.train()
    with torch.no_grad():  # give every subnet its own BatchNorm statistics
        for name in enc.subnet_space.names:
            enc.set_subnet(name)
            enc(torch.randn_like(x) * (1 + enc.subnet_space.names.index(name)), xl)
    spec = enc.set_subnet(subnet)
    kw = {**TINY, **conf, "num_blocks": spec.depth, "linear_units": spec.width}
    kw["interctc_layer_idx"] = [i for i in kw.get("interctc_layer_idx", []) if i < spec.depth]
    stock = ConformerEncoder(IDIM, **kw)
    stock.load_state_dict(_sliced_stock_state(enc, spec), strict=True)
    enc.eval(), stock.eval()
    got, want = _outputs(enc(x, xl)), _outputs(stock(x, xl))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6)
    assert enc.subnet_size(subnet).params == sum(p.numel() for p in stock.parameters())


def test_subnets_slice_not_mask():
    """A narrower subnet multiplies smaller matrices (cheaper), it does not zero rows."""
    enc = make_encoder()
    ffn = enc.encoders[0].feed_forward
    shapes = []
    hook = ffn.w_2.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape[-1]))
    x, xl, _, _ = batch()
    for subnet in ["3-32-8bit", "3-16-8bit"]:
        enc.set_subnet(subnet)
        enc(x, xl)
    hook.remove()
    assert shapes == [32, 16]


def _train_step_flops(encoder, x, xl):
    """Matrix-multiply/convolution FLOPs of forward + backward through ``encoder``."""
    with FlopCounterMode(display=False) as counter:
        out, _, _ = encoder(x, xl)
        out.sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("subnet", ["3-32-32bit", "2-16-32bit", "3-16-4bit", "2-32-8bit"])
def test_subnet_costs_what_a_stock_encoder_of_its_size_costs(subnet):
    """Slicing, not masking: a subnet's training step has exactly the arithmetic of a
    stock Conformer of its depth and width (quantization adds only elementwise work)."""
    enc = make_encoder(grid=dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[4, 8, 32]))
    spec = enc.set_subnet(subnet)
    stock = ConformerEncoder(IDIM, **{**TINY, "num_blocks": spec.depth, "linear_units": spec.width})
    x, xl, _, _ = batch()
    assert _train_step_flops(enc, x, xl) == _train_step_flops(stock, x, xl) > 0


def test_depth_runs_only_first_blocks():
    enc = make_encoder()
    calls = []
    for i, block in enumerate(enc.encoders._modules.values()):
        block.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    x, xl, _, _ = batch()
    enc.set_subnet("2-32-8bit")
    enc(x, xl)
    assert calls == [0, 1]
    assert len(enc.encoders._modules) == 3  # the top block is still stored


def test_quantized_weights_are_used_and_on_grid():
    enc = make_encoder()
    enc.set_subnet("3-32-4bit")
    layers = [m for m in enc.modules() if isinstance(m, ElasticWeight)]
    # every Linear/Conv of the encoder, subsampling included
    n_linear_conv = sum(
        isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) for m in enc.modules()
    )
    assert len(layers) == n_linear_conv
    assert any("embed" in n for n, m in enc.named_modules() if isinstance(m, ElasticWeight))
    for m in layers:
        assert m.active_bits == 4
        w, _ = m.active_weight()
        codes = w / m.active_step()
        assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 7
        # biases stay float and unquantized
        b = m.active_weight()[1]
        if b is not None:
            assert torch.equal(b, m.bias[: b.numel()])


def test_gradients_reach_shared_weights_and_active_step_only():
    enc = make_encoder()
    enc.set_subnet("2-16-4bit")
    x, xl, _, _ = batch()
    enc(x, xl)[0].sum().backward()
    w1 = enc.encoders[0].feed_forward.w_1
    assert w1.weight.grad[:16].abs().sum() > 0
    assert w1.weight.grad[16:].abs().sum() == 0  # units outside the subnet untouched
    assert w1.weight_log_step["4bit"].grad[:16].abs().sum() > 0
    assert w1.weight_log_step["8bit"].grad is None
    assert enc.encoders[2].feed_forward.w_1.weight.grad is None  # block 3 skipped


def test_batchnorm_statistics_isolated_between_widths_and_bits():
    enc = as_trained(make_encoder())
    x, xl, _, _ = batch()
    enc.eval()
    with torch.no_grad():
        enc.set_subnet("2-16-4bit")
        before = enc(x, xl)[0]
        enc.train()
        for spec in enc.subnet_space:
            if (spec.width, spec.bits) != (16, 4):
                enc.set_subnet(spec)
                enc(x * 3 + 1, xl)
        enc.eval()
        enc.set_subnet("2-16-4bit")
        after = enc(x, xl)[0]
    assert torch.equal(before, after)
    bns = [m for m in enc.modules() if isinstance(m, SubnetBatchNorm1d)]
    assert len(bns) == 3
    # the other subnets' training moved the largest's statistics, not this one's
    assert not torch.equal(bns[0].running_mean, getattr(bns[0], "running_mean_w16-4bit"))


def test_batchnorm_statistics_shared_between_depths():
    """A BatchNorm's input depends on width and bits only: depth siblings share it."""
    enc = make_encoder()
    x, xl, _, _ = batch()
    bn = enc.encoders[0].conv_module.norm
    assert bn.stats_keys == ("w32-8bit", "w32-4bit", "w16-8bit", "w16-4bit")
    with torch.no_grad():
        enc.train()
        enc.set_subnet("3-16-4bit")
        enc(x, xl)
    stats = getattr(bn, "running_mean_w16-4bit")
    enc.set_subnet("2-16-4bit")
    assert torch.equal(bn._stat("running_mean"), stats)
    assert bn._stat("running_mean").abs().sum() > 0


def _first_layer(module):
    return next(m for m in module.modules() if isinstance(m, ElasticWeight))


def _block_calls(enc):
    """What is computed (not merely called): a hook on the first weight layer inside the
    subsampling and inside each block."""
    calls = []
    for i, block in enumerate(enc.encoders._modules.values()):
        _first_layer(block).register_forward_hook(lambda m, a, o, i=i: calls.append(("block", i)))
    _first_layer(enc.embed).register_forward_hook(lambda m, a, o: calls.append(("embed",)))
    return calls


@pytest.mark.parametrize(
    "conf",
    [dict(), dict(input_layer="linear"), dict(use_cnn_module=False), dict(interctc_layer_idx=[1, 2])],
    ids=str,
)
def test_sharing_prefixes_same_outputs_and_less_compute(conf):
    """Stock ConformerEncoder.forward inside sharing_prefixes: every output (intermediate
    CTC ones included) is that of the subnet alone, and less is computed."""
    enc = as_trained(make_encoder(**conf))
    enc.eval()
    x, xl, _, _ = batch()
    with torch.no_grad():
        alone = {}
        for spec in enc.subnet_space:
            enc.set_subnet(spec)
            alone[spec] = _outputs(enc(x, xl))
        calls = _block_calls(enc)
        with enc.sharing_prefixes():
            for spec in enc.subnet_space:  # largest first, as the model does
                enc.set_subnet(spec)
                got = _outputs(enc(x, xl))
                assert len(got) == len(alone[spec])
                for g, w in zip(got, alone[spec]):
                    assert torch.equal(g, w), spec
    # subsampling once per bit-width; blocks once per (width, bits): 3 + 3 blocks for
    # width 32 and 16 at each of 2 bit-widths, the depth-2 subnets compute nothing new
    assert calls.count(("embed",)) == 2
    assert sum(c[0] == "block" for c in calls) == 2 * 2 * 3
    assert not enc.sharing.in_step  # the memo lives only inside the context


def test_sharing_with_intermediate_ctc_conditioning_is_exact():
    """The conditioning between blocks is a function of the prefix (the shared CTC and conditioning
    layer on its output): a step shares the blocks after it too, and every output is the subnet's alone."""
    enc = as_trained(make_encoder(interctc_layer_idx=[1, 2], interctc_use_conditioning=True)).eval()
    ctc = CTC(10, ADIM)
    enc.conditioning_layer = torch.nn.Linear(10, ADIM)  # as ESPnetASRModel sets it
    x, xl, _, _ = batch()
    calls = _block_calls(enc)
    with torch.no_grad():
        alone = {}
        for spec in enc.subnet_space:
            enc.set_subnet(spec)
            alone[spec] = _outputs(enc(x, xl, ctc=ctc))
        calls.clear()
        with enc.sharing_prefixes():
            for spec in enc.subnet_space:
                enc.set_subnet(spec)
                got = _outputs(enc(x, xl, ctc=ctc))
                assert all(torch.equal(g, w) for g, w in zip(got, alone[spec])) and len(got) == len(alone[spec])
    assert sum(c[0] == "block" for c in calls) == 2 * 2 * 3  # once per (width, bits) prefix


def test_sharing_in_training_draws_each_shared_dropout_mask_once():
    """Rule: in a step, a depth sibling reuses the deeper subnet's blocks, dropout masks
    included. So it computes exactly what it computes alone from the same random state
    (the same loss distribution as without sharing), and the shared prefix has one graph."""
    enc = make_encoder(dropout_rate=0.3, positional_dropout_rate=0.3, attention_dropout_rate=0.3)
    enc.train()
    x, xl, _, _ = batch()
    deep, shallow = "3-16-4bit", "2-16-4bit"
    torch.manual_seed(0)
    with enc.sharing_prefixes():
        enc.set_subnet(deep)
        enc(x, xl)
        enc.set_subnet(shallow)
        shared = enc(x, xl)[0]
    torch.manual_seed(0)
    enc.set_subnet(shallow)
    alone = enc(x, xl)[0]
    assert torch.equal(shared, alone)
    torch.manual_seed(1)
    assert not torch.equal(enc(x, xl)[0], alone)  # dropout is on: another state differs


def test_sharing_updates_batchnorm_statistics_as_often_as_without():
    """Rule: a reused block call updates its BatchNorm running statistics again (with the
    batch statistics of the call it reuses), so after a step every (width, bits)'s
    statistics are those of computing each subnet alone (dropout off: equal inputs)."""
    import copy

    shared_enc = make_encoder(dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0)
    alone_enc = copy.deepcopy(shared_enc)
    x, xl, _, _ = batch()
    for enc in (shared_enc, alone_enc):
        enc.train()
    with torch.no_grad():
        for _ in range(2):  # two steps
            with shared_enc.sharing_prefixes():
                for spec in shared_enc.subnet_space:
                    shared_enc.set_subnet(spec)
                    shared_enc(x, xl)
            for spec in alone_enc.subnet_space:
                alone_enc.set_subnet(spec)
                alone_enc(x, xl)
    got, want = shared_enc.state_dict(), alone_enc.state_dict()
    stats = [k for k in want if "running_" in k or "num_batches_tracked" in k]
    assert len(stats) == 3 * 3 * 4  # 3 blocks x 3 buffers x 4 (width, bits)
    for k in stats:
        if "num_batches_tracked" in k:
            block = int(k.split(".")[1])  # run by both depths (2, 3) or by depth 3 only
            assert torch.equal(got[k], want[k]) and int(want[k]) == 2 * (2 if block < 2 else 1), k
        else:
            assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-6), k


@pytest.mark.parametrize("conf", [dict(layer_drop_rate=0.5), dict(stochastic_depth_rate=0.5)], ids=str)
def test_layer_drop_and_stochastic_depth_as_stock_in_training(conf):
    """The stock forward runs, so layer drop and stochastic depth do what ESPnet's
    ConformerEncoder does with them (same random state, same output)."""
    enc = make_encoder(grid=dict(subnet_depths=[3], subnet_widths=[32], subnet_bits=[32]), **conf)
    stock = ConformerEncoder(IDIM, **{**TINY, **conf})
    stock.load_state_dict(enc.state_dict(), strict=False)
    enc.train(), stock.train()
    x, xl, _, _ = batch()
    for seed in range(4):
        torch.manual_seed(seed)
        got = enc(x, xl)[0]
        torch.manual_seed(seed)
        assert torch.equal(got, stock(x, xl)[0]), seed


def test_shared_call_modules_pickle_and_copy():
    import copy
    import pickle

    enc = as_trained(make_encoder())
    enc.eval()
    x, xl, _, _ = batch()
    with torch.no_grad():
        want = enc(x, xl)[0]
        for other in (pickle.loads(pickle.dumps(enc)), copy.deepcopy(enc)):
            assert type(other.embed) is type(enc.embed)
            assert torch.equal(other(x, xl)[0], want)
            with other.sharing_prefixes():
                assert torch.equal(other(x, xl)[0], want)


def test_a_step_quantizes_each_weight_once_per_width_and_bits():
    """Inside sharing_prefixes (one training step), a layer reuses its fake-quantized
    weight for every subnet of the same (width, bits) instead of quantizing it again;
    outside it, every forward quantizes anew."""
    from unittest import mock

    import espnet_allinone.elastic as elastic

    enc = make_encoder(input_layer="linear")  # no prefix to share before the blocks
    enc.train()
    x, xl, _, _ = batch()
    specs = list(enc.subnet_space)  # 2 depths x 2 widths x 2 bits
    real = elastic.fake_quantize
    with mock.patch.object(elastic, "fake_quantize", side_effect=real) as fq:
        with enc.sharing_prefixes():  # as AllInOneASRModel runs a step: one backward
            loss = 0
            for spec in specs:
                enc.set_subnet(spec)
                loss = loss + enc(x, xl)[0].sum()
        loss.backward()
        in_step = fq.call_count
        fq.reset_mock()
        for spec in specs:
            enc.set_subnet(spec)
            enc(x, xl)
        alone = fq.call_count
    ffn = [m for m in enc.modules() if isinstance(m, ElasticWeight) and m.width_axis]
    other = [m for m in enc.modules() if isinstance(m, ElasticWeight) and not m.width_axis]
    # once per bits for layers without a width axis, once per (width, bits) for FFN layers
    assert in_step == 2 * len(other) + 2 * 2 * len(ffn)
    assert alone > in_step
    assert not enc.sharing.in_step  # nothing cached outside


def test_sharing_prefixes_recomputes_for_a_new_input():
    enc = as_trained(make_encoder())
    enc.eval()
    x, xl, _, _ = batch()
    with torch.no_grad(), enc.sharing_prefixes():
        a = enc(x, xl)[0]
        b = enc(x + 1, xl)[0]
        enc.set_subnet(None)
    enc.set_subnet(None)
    with torch.no_grad():
        assert torch.equal(b, enc(x + 1, xl)[0])
        assert not torch.equal(a, b)


def test_sharing_prefixes_never_reuses_outputs_of_freed_or_changed_inputs():
    """Temporaries freed between forwards may get the same address: still recomputed."""
    enc = as_trained(make_encoder())
    enc.eval()
    x, xl, _, _ = batch()
    with torch.no_grad():
        want = [enc(x * k, xl)[0] for k in (2, 3)]
        with enc.sharing_prefixes():
            got = [enc(x * k, xl)[0] for k in (2, 3)]
            y = x.clone()
            first = enc(y, xl)[0]
            y.mul_(2)  # same storage, modified in place
            second = enc(y, xl)[0]
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(second, enc(x * 2, xl)[0]) and not torch.equal(first, second)


def test_set_subnet_errors_list_valid_names():
    enc = make_encoder()
    with pytest.raises(ValueError, match="valid subnets: 3-32-8bit"):
        enc.set_subnet("3-64-8bit")
    with pytest.raises(ValueError, match="valid subnets"):
        enc.set_subnet("3-32-8")


@pytest.mark.parametrize(
    "grid, match",
    [
        (dict(subnet_widths=[64]), "wider"),
        (dict(subnet_depths=[4]), "deeper"),
        (dict(subnet_bits=[1]), "bit-width"),
        (dict(subnets=["3-32-8bit", "2-16-9bit"]), "bit-width"),
    ],
)
def test_bad_configs_raise(grid, match):
    with pytest.raises(ValueError, match=match):
        make_encoder(grid=grid)


def test_default_space_is_the_stock_model():
    enc = AllInOneConformerEncoder(IDIM, **TINY)
    assert enc.subnet_space.names == ["3-32-32bit"]


def test_subnet_size_counts_bits():
    enc = make_encoder()
    full = enc.subnet_size("3-32-8bit")
    small = enc.subnet_size("2-16-4bit")
    assert small.params < full.params
    # 8-bit weights: total bits well below 32 * params, above 8 * params
    assert 8 * full.params < full.bits < 32 * full.params
    assert small.bits < full.bits
    assert enc.active_subnet.name == "3-32-8bit"  # counting does not change the selection


def test_using_subnet_restores_previous():
    enc = make_encoder()
    enc.set_subnet("2-16-8bit")
    with enc.using_subnet("3-32-4bit") as spec:
        assert spec.name == "3-32-4bit" and enc.active_subnet == spec
    assert enc.active_subnet.name == "2-16-8bit"


def test_state_dict_round_trip_keeps_steps_and_stats():
    enc = make_encoder()
    x, xl, _, _ = batch()
    enc.train()
    for name in enc.subnet_space.names:
        enc.set_subnet(name)
        enc(x, xl)
    enc.set_subnet("2-16-4bit")
    enc.eval()
    want = enc(x, xl)[0]
    other = make_encoder()
    other.load_state_dict(enc.state_dict(), strict=True)
    other.set_subnet("2-16-4bit")
    other.eval()
    assert torch.equal(other(x, xl)[0], want)


def _lsq_step(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """LSQ's initial step (Esser et al. 2020), written out: per output channel c,
    2 * mean|w_c| / sqrt(Q) with Q = 2**(bits-1) - 1, shaped (out, 1, ...)."""
    q = 2 ** (bits - 1) - 1
    per_channel = weight.detach().abs().flatten(1).mean(dim=1)
    return (2 * per_channel / q ** 0.5).reshape(-1, *[1] * (weight.dim() - 1))


@pytest.mark.parametrize("bits", [4, 8])
def test_steps_initialise_from_weights_after_espnet_init_and_stay_positive(bits):
    from espnet2.torch_utils.initialize import initialize

    enc = make_encoder().train()  # steps initialise at first use in training only
    enc.set_subnet(f"3-32-{bits}bit")
    x, xl, _, _ = batch()
    enc(x, xl)  # steps initialised from the current weights
    layers = [m for m in enc.modules() if isinstance(m, ElasticWeight)]
    before = {id(m): _lsq_step(m.weight, bits) for m in layers}
    initialize(enc, "xavier_uniform")  # ESPnet's --init: new weights, steps reset
    assert all(not bool(m.weight_log_step_ready.any()) for m in layers)
    enc.train()
    enc(x, xl)
    # every quantized layer (Linears and convolutions, of every block) took its steps from the new weights
    assert len(layers) > 10 and any(m.weight.dim() == 3 for m in layers)
    for m in layers:
        i = list(m.weight_log_step).index(f"{bits}bit")
        assert bool(m.weight_log_step_ready[i]), m.layer_name
        want = _lsq_step(m.weight, bits)
        assert want.shape == m.step(bits).shape == (m.weight.size(0), *[1] * (m.weight.dim() - 1))
        torch.testing.assert_close(m.step(bits), want, rtol=1e-5, atol=0, msg=lambda e: f"{m.layer_name}: {e}")
        assert not torch.allclose(want, before[id(m)])  # ...not the weights before ESPnet's init
    # large Adam updates move the log of the step: steps stay positive
    opt = torch.optim.Adam(enc.parameters(), lr=0.5)
    for _ in range(3):
        enc(x, xl)[0].pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    for m in enc.modules():
        if isinstance(m, ElasticWeight):
            assert (m.step(4) > 0).all() and (m.step(8) > 0).all()


def test_print_config_lists_stock_and_allinone_options():
    from espnet2.utils.get_default_kwargs import get_default_kwargs

    from espnet_allinone.model import AllInOneASRModel

    enc = get_default_kwargs(AllInOneConformerEncoder)
    assert enc["num_blocks"] == 6 and enc["macaron_style"] is False and enc["subnet_bits"] is None
    model = get_default_kwargs(AllInOneASRModel)
    assert model["ctc_weight"] == 0.5 and model["subnet_sampling"] == "sandwich"


def _ffn_weights(enc):
    return [w.detach().clone() for first, second in enc.ffn_pairs() for w in (first.weight, second.weight)]


def _init_param(enc, path):
    """What ``--init_param path`` does to the model (ESPnet's own loader)."""
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    load_pretrained_model(str(path), enc, ignore_init_mismatch=False, map_location="cpu")


FLOAT_GRID = dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[4, 32])


@pytest.mark.parametrize("ffn_order", ["l2", "keep"])
def test_start_from_a_stock_checkpoint_orders_ffn_units_and_keeps_the_function(tmp_path, ffn_order, caplog):
    """The order is the load's last step, logged: right after ``--init_param``, before any forward."""
    import logging

    nodrop = dict(dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0)
    stock = ConformerEncoder(IDIM, **TINY, **nodrop)
    torch.save(stock.state_dict(), tmp_path / "stock.pth")
    enc = make_encoder(grid=FLOAT_GRID, ffn_order=ffn_order, **nodrop)
    with caplog.at_level(logging.INFO):
        _init_param(enc, tmp_path / "stock.pth")
    assert bool(enc.ffn_units_ordered)
    stock_ffn = [w.detach() for name, w in stock.named_parameters() if "feed_forward" in name and "weight" in name]
    changed = any(not torch.equal(a, b) for a, b in zip(stock_ffn, _ffn_weights(enc)))
    assert changed == (ffn_order == "l2")
    assert ("by L2 importance" in caplog.text) == (ffn_order == "l2")
    if ffn_order == "l2":
        for first, second in enc.ffn_pairs():
            importance = first.weight.norm(dim=1) * second.weight.norm(dim=0)
            assert torch.all(importance[:-1] >= importance[1:])
    loaded = _ffn_weights(enc)
    x, xl, _, _ = batch()
    enc.train(), stock.train()
    enc(x, xl)  # a training forward changes nothing more
    stock(x, xl)  # (the same BatchNorm statistics update)
    assert all(torch.equal(a, b) for a, b in zip(loaded, _ffn_weights(enc)))
    enc.eval(), stock.eval()
    with torch.no_grad():  # the largest float subnet still computes the stock model's function
        assert torch.allclose(enc(x, xl)[0], stock(x, xl)[0], atol=1e-5)


@pytest.mark.parametrize("how", ["from scratch", "resumed", "init from all-in-one"])
def test_a_settled_order_is_never_changed(tmp_path, how):
    stock = ConformerEncoder(IDIM, **TINY)
    torch.save(stock.state_dict(), tmp_path / "stock.pth")
    x, xl, _, _ = batch()
    trained = make_encoder(grid=FLOAT_GRID)
    if how != "from scratch":
        _init_param(trained, tmp_path / "stock.pth")
    trained.train()
    trained(x, xl)  # from scratch: settles the order at its first training forward
    enc = trained
    if how == "resumed":  # the trainer's resume: load_state_dict of the checkpoint
        enc = make_encoder(grid=FLOAT_GRID)
        enc.load_state_dict(trained.state_dict())
    elif how == "init from all-in-one":
        torch.save(trained.state_dict(), tmp_path / "allinone.pth")
        enc = make_encoder(grid=FLOAT_GRID)
        _init_param(enc, tmp_path / "allinone.pth")
    before = _ffn_weights(enc)
    enc.train()
    enc(x, xl)
    assert all(torch.equal(a, b) for a, b in zip(before, _ffn_weights(enc)))
    assert all(torch.equal(a, b) for a, b in zip(_ffn_weights(trained), before))


def test_ffn_order_must_be_known():
    with pytest.raises(ValueError, match="ffn_order must be one of l2, keep: 'random'"):
        make_encoder(ffn_order="random")
