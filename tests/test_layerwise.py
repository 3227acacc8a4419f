"""Layer-wise subnets: each block its own FFN width and bit-width (``DEPTH:WxB,...``)."""

import numpy as np
import pytest
import torch
import yaml

from espnet_allinone.export import (
    build_stock_model,
    export_packed,
    load_allinone,
    load_packed,
    padded_shapes,
    stock_config,
    subnet_weights,
)
from espnet_allinone.subnet import Subnet, SubnetSpace
from tests.conftest import as_trained, make_allinone_files, make_encoder


@pytest.mark.parametrize("name, blocks, canonical", [
    ("3:32x8,32x8,16x4", ((32, 8), (32, 8), (16, 4)), "3:32x8*2,16x4"),
    ("3:32x8*2,16x4", ((32, 8), (32, 8), (16, 4)), "3:32x8*2,16x4"),
    (" 2 : 16x32 , 32 x 4 ", ((16, 32), (32, 4)), "2:16x32,32x4"),
    ("1:16x2", ((16, 2),), "1-16-2bit"),  # blocks all alike: the uniform subnet
])
def test_parse_and_format_round_trip(name, blocks, canonical):
    spec = Subnet.parse(name)
    assert spec.is_uniform == (len(set(blocks)) == 1) and spec.blocks == blocks and spec.name == canonical
    assert Subnet.parse(spec.name) == spec and spec.depth == len(blocks)
    assert spec.width == max(w for w, _ in blocks) and spec.bits == max(b for _, b in blocks)
    assert spec.front_bits == blocks[0][1]


@pytest.mark.parametrize("bad, match", [
    ("3:32x8,16x4", "names depth 3 but gives 2 blocks"),
    ("3:32x8*2,16y4", "malformed block '16y4'"),
    ("x:32x8", "malformed layer-wise subnet name"),
    ("2:32x9,32x8", "unsupported bit-width 9"),
    ("2:0x8,32x8", "block width must be positive"),
])
def test_malformed_layerwise_names_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        Subnet.parse(bad)


SPACE = SubnetSpace(depths=[2, 3], widths=[16, 32], bits=[4, 8], num_blocks=3, linear_units=32)


@pytest.mark.parametrize("name, match", [
    ("4:32x8*4", r"depth 4 > num_blocks 3"),
    ("3:32x8,48x8,16x4", r"widths \[48\] > linear_units 32"),
    ("3:32x8,32x6,16x32", r"bit-widths \[6, 32\] not trained \(step sizes exist for \[4, 8\]\)"),
])
def test_space_validates_layerwise_against_the_model(name, match):
    with pytest.raises(ValueError, match=match):
        SPACE.get(name)


def test_alike_blocks_in_the_space_are_the_uniform_name():
    assert SPACE.get("3:32x8*3") == Subnet.uniform(3, 32, 8) and SPACE.get("3:32x8*3").name == "3-32-8bit"
    assert SPACE.get("1:32x8") == Subnet.uniform(1, 32, 8)  # depth 1 is not in the space: valid as it fits
    assert "1-32-8bit" not in SPACE and not SPACE.get("3:32x8,16x4*2").is_uniform


def test_layerwise_blocks_get_their_own_width_bits_and_statistics():
    encoder = as_trained(make_encoder()).eval()
    spec = encoder.set_subnet("3:32x8,16x4,16x8")
    blocks = list(encoder.encoders._modules.values())
    for block, (width, bits) in zip(blocks, spec.blocks):
        w_1 = block.feed_forward.w_1
        assert (w_1.active_width or w_1.full_width) == width and block.feed_forward.w_2.active_bits == bits
        assert block.conv_module.norm.active_key == f"w{width}-{bits}bit"
    assert encoder.embed.conv[0].active_bits == 8  # the subsampling: the first block's bits
    x, lengths = torch.randn(2, 60, 20), torch.tensor([60, 47])
    with torch.no_grad():
        out = encoder(x, lengths)[0]
        encoder.set_subnet("3-16-4bit")
        assert not torch.equal(out, encoder(x, lengths)[0])


def test_missing_batchnorm_statistics_is_a_clear_error():
    encoder = make_encoder()
    with pytest.raises(ValueError, match=r"block 2 \(width 24, 8 bit\) has no BatchNorm statistics .*w32-8bit"):
        encoder.set_subnet("3:32x8,24x8,16x4")


@pytest.fixture(scope="module")
def allinone(tmp_path_factory):
    config_file, model_file = make_allinone_files(tmp_path_factory.mktemp("allinone"))
    return load_allinone(config_file, model_file), yaml.safe_load(config_file.read_text())


def _speech():
    torch.manual_seed(1)
    return torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6300])


@pytest.mark.parametrize("subnet", ["2:32x4,16x8", "2:16x32,32x4", "1:16x8"])
def test_size_of_a_layerwise_subnet_is_that_of_a_stock_model_of_its_block_sizes(allinone, subnet):
    from espnet_allinone.onnx_export import _true_widths

    model, train_config = allinone
    spec = model.encoder.subnet_space.get(subnet)
    state, quantized = subnet_weights(model, train_config, spec, pad=False)
    stock = build_stock_model(stock_config(train_config, model, spec))
    _true_widths(stock, padded_shapes(model, spec))  # a stock encoder whose blocks have the subnet's widths
    params = sum(p.numel() for p in stock.encoder.parameters())
    size = model.encoder.subnet_size(spec)
    assert size.params == params
    parameters = {f"encoder.{k}" for k, _ in stock.encoder.named_parameters()}  # no BatchNorm statistics
    float_bits = 32 * sum(v.numel() for k, v in state.items() if k in parameters and k not in quantized)
    code_bits = sum(q.codes.numel() * q.bits + 32 * q.step.numel() for k, q in quantized.items())
    assert size.bits == float_bits + code_bits
    blocks = dict(zip(range(spec.depth), spec.blocks))
    assert size.weight_bits == max(b for _, b in blocks.values() if b != 32)


@pytest.mark.parametrize("subnet", ["2:32x4,16x8", "2:16x8,32x4"])
def test_stock_export_of_a_layerwise_subnet_computes_it(allinone, subnet, tmp_path):
    model, train_config = allinone
    spec = model.encoder.subnet_space.get(subnet)
    state, _ = subnet_weights(model, train_config, spec)  # narrower FFNs zero-padded
    stock = build_stock_model(stock_config(train_config, model, spec))
    stock.load_state_dict(state, strict=True)
    speech, lengths = _speech()
    with torch.no_grad():
        model.encoder.set_subnet(spec)
        want = model.encode(speech, lengths)[0]
        got = stock.eval().encode(speech, lengths)[0]
    assert torch.equal(got, want)
    export_packed(model, train_config, spec, tmp_path / "packed")  # packed at the true block sizes
    _, packed_state, _ = load_packed(tmp_path / "packed")
    encoder_keys = [k for k in state if k.startswith("encoder.")]
    assert all(torch.equal(packed_state[k], state[k]) for k in encoder_keys)
    true = padded_shapes(model, spec)
    assert true and all(state[k].shape != shape for k, shape in true.items())
    blob = torch.load(tmp_path / "packed" / "encoder.packed")
    stored = {t["key"]: t["shape"] for t in blob["index"] if t["kind"] != "pad"}
    assert all(tuple(stored[k]) == shape for k, shape in true.items() if k in stored)


def test_onnx_graph_of_a_layerwise_subnet_computes_only_its_units(allinone, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from espnet_allinone.onnx_export import EncoderCTC, codes_in_graph, export_onnx

    model, train_config = allinone
    spec = model.encoder.subnet_space.get("2:32x4,16x4")
    paths = export_onnx(model, train_config, spec, tmp_path)
    state, _ = subnet_weights(model, train_config, spec)
    stock = build_stock_model(stock_config(train_config, model, spec))
    stock.load_state_dict(state)
    speech, lengths = _speech()
    with torch.no_grad():
        feats, feats_lengths = stock.eval().frontend(speech, lengths)
        _, want_lengths, want = EncoderCTC(stock)(feats, feats_lengths)
    session = ort.InferenceSession(str(paths["float"]), providers=["CPUExecutionProvider"])
    _, got_lengths, got = session.run(None, {"feats": feats.numpy(), "feats_lengths": feats_lengths.numpy()})
    for b, n in enumerate(want_lengths):
        np.testing.assert_allclose(got[b, :n], want[b, :n].numpy(), atol=1e-4)
    shapes = {tuple(numpy_helper.to_array(i).shape) for i in onnx.load(str(paths["float"])).graph.initializer}
    assert (16, 16) in shapes and (16, 32) in shapes  # block 2's FFN at width 16 (MatMul weights: (in, out))
    _, quantized = subnet_weights(model, train_config, spec, pad=False)
    codes = {c.tobytes() for c, _ in codes_in_graph(paths["int4"]).values()}
    assert codes <= {q.codes.numpy().tobytes() for q in quantized.values()} and len(codes) > 5


def _feature_batches(n=3):
    torch.manual_seed(5)
    return [(torch.randn(2, 60, 20), torch.tensor([60, 41])) for _ in range(n)]


def test_batchnorm_recalibration_changes_only_that_subnets_statistics():
    encoder = as_trained(make_encoder()).eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x, lengths = torch.randn(2, 60, 20), torch.tensor([60, 47])
    with torch.no_grad():
        others = {s: encoder.set_subnet(s) and encoder(x, lengths)[0] for s in ("3-32-8bit", "2-16-4bit")}
    subnet = "3:32x8,24x8,16x4"  # width 24: never trained, no statistics
    with pytest.raises(ValueError, match="no BatchNorm statistics"):
        encoder.set_subnet(subnet)
    assert encoder.recalibrate_batchnorm(subnet, _feature_batches()) == 3
    after = encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing else changed
    new = sorted(set(after) - set(before))
    assert new == sorted(f"encoders.{i}.conv_module.norm.{stat}_{key}"
                         for i, key in enumerate(["p32x8", "p32x8_24x8", "p32x8_24x8_16x4"])
                         for stat in ("running_mean", "running_var", "num_batches_tracked"))
    assert all(int(after[k]) == 3 for k in new if k.endswith("num_batches_tracked"))
    assert not encoder.training
    with torch.no_grad():
        for s, want in others.items():
            encoder.set_subnet(s)
            assert torch.equal(encoder(x, lengths)[0], want)
        encoder.set_subnet(subnet)
        out = encoder(x, lengths)[0]
    assert torch.isfinite(out).all()
    fresh = as_trained(make_encoder()).eval()
    fresh.load_state_dict(encoder.state_dict())  # stored with the model: a fresh encoder takes them
    with torch.no_grad():
        fresh.set_subnet(subnet)
        assert torch.equal(fresh(x, lengths)[0], out)


def test_recalibrated_statistics_are_the_average_of_the_batches():
    encoder = as_trained(make_encoder()).eval()
    subnet = encoder.subnet_space.get("2:32x8,16x4")
    batches = _feature_batches(2)
    seen = []
    norm = encoder.encoders[0].conv_module.norm
    hook = norm.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    encoder.recalibrate_batchnorm(subnet, batches)
    hook.remove()
    want = torch.stack([x.mean((0, 2)) for x in seen]).mean(0)
    torch.testing.assert_close(norm.running_mean_p32x8, want)


def test_recalibration_refuses_a_uniform_subnet_whose_statistics_were_trained():
    encoder = as_trained(make_encoder())
    with pytest.raises(ValueError, match="whose BatchNorm statistics were all trained"):
        encoder.recalibrate_batchnorm("3-32-8bit", _feature_batches(1))


@pytest.mark.parametrize("fs", [None, "16k"])  # "16k": as asr.sh writes frontend_conf
def test_recalibrate_cli_stores_them_with_the_model(tmp_path, capsys, fs):
    from espnet_allinone.bin import recalibrate
    from tests.conftest import set_frontend_fs, write_tone_data

    config_file, model_file = make_allinone_files(tmp_path / "model")
    set_frontend_fs(config_file, fs)
    write_tone_data(tmp_path / "train", 5, 0)
    out = tmp_path / "recalibrated.pth"
    subnet = "2:24x4,16x4"
    assert recalibrate.main(["--asr_train_config", str(config_file), "--asr_model_file", str(model_file),
                             "--data_dir", str(tmp_path / "train"), "--subnet", subnet, "--num_utts", "4",
                             "--batch_size", "2", "--output_model", str(out)]) == 0
    assert "from 4 utterances (2 batches)" in capsys.readouterr().out
    model = load_allinone(config_file, out)
    assert str(model.encoder.set_subnet(subnet)) == subnet
    with pytest.raises(SystemExit):
        recalibrate.main(["--asr_train_config", str(config_file), "--asr_model_file", str(model_file),
                          "--data_dir", str(tmp_path / "train"), "--subnet", "2-32-4bit", "--output_model", str(out)])
    assert "whose BatchNorm statistics were all trained" in capsys.readouterr().err
