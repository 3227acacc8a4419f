"""espnet_allinone.onnx_export: a subnet as ONNX graphs (frontend, encoder + CTC, decoder step) for ONNX Runtime."""

from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import yaml
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.layers.stft import Stft

from espnet_allinone.compat import PositionalEncoding, RelPositionalEncoding
from espnet_allinone.export import build_stock_model, load_allinone, stock_config, subnet_weights
from espnet_allinone.onnx_export import (
    DftStft,
    EncoderCTC,
    RuntimePositionalEncoding,
    RuntimeRelPositionalEncoding,
    codes_in_graph,
    export_onnx,
    graph_size,
)
from tests.conftest import make_allinone_files

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SUBNETS = ["2-32-8bit", "1-16-4bit", "2-32-32bit"]


@pytest.fixture(scope="module")
def allinone(tmp_path_factory):
    config_file, model_file = make_allinone_files(tmp_path_factory.mktemp("allinone"))
    return load_allinone(config_file, model_file), yaml.safe_load(config_file.read_text())


@pytest.fixture(scope="module")
def exported(allinone, tmp_path_factory):
    model, train_config = allinone
    root = tmp_path_factory.mktemp("onnx")
    return {s: export_onnx(model, train_config, s, root / s) for s in SUBNETS}


def _stock(allinone, subnet):
    model, train_config = allinone
    state, _ = subnet_weights(model, train_config, subnet)
    stock = build_stock_model(stock_config(train_config, model, subnet))
    stock.load_state_dict(state)
    return stock.eval()


def _speech(t=8000):
    torch.manual_seed(1)
    return torch.randn(2, t) * 0.1, torch.tensor([t, t - 1700])


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _encode(path, feats, lengths):
    return _session(path).run(None, {"feats": feats.numpy(), "feats_lengths": lengths.numpy()})


@pytest.mark.parametrize("n_fft, win_length, hop_length, center, normalized, window", [
    (400, None, 160, True, False, "hann"),
    (512, 400, 128, True, True, "hamming"),
    (256, 200, 100, False, False, None),
])
def test_dft_stft_is_the_stock_stft(n_fft, win_length, hop_length, center, normalized, window):
    stock = Stft(n_fft=n_fft, win_length=win_length, hop_length=hop_length, center=center,
                 normalized=normalized, window=window)
    x, lengths = _speech(4000)
    want, want_lengths = stock(x, lengths)
    got, got_lengths = DftStft(stock)(x, lengths)
    assert torch.equal(got_lengths, want_lengths)
    for b, n in enumerate(want_lengths):  # frames past a shorter utterance's end: not zeroed (LogMel does)
        torch.testing.assert_close(got[b, :n], want[b, :n], atol=2e-4, rtol=1e-4)


def test_dft_stft_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="one-sided"):
        DftStft(Stft(n_fft=64, onesided=False))


@pytest.mark.parametrize("t", [1, 7, 130])
def test_runtime_positional_encodings_are_the_stock_tables(t):
    x = torch.randn(2, t, 16)
    for stock, runtime in ((RelPositionalEncoding(16, 0.0), RuntimeRelPositionalEncoding(16, 0.0)),
                           (PositionalEncoding(16, 0.0), RuntimePositionalEncoding(16, 0.0))):
        want, got = stock.eval()(x), runtime.eval()(x)
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


def test_frontend_graph_computes_the_default_frontend(allinone, exported):
    model, _ = allinone
    assert isinstance(model.frontend, DefaultFrontend)
    speech, lengths = _speech()
    with torch.no_grad():
        want, want_lengths = model.eval().frontend(speech, lengths)
    got, got_lengths = _session(exported["2-32-8bit"]["frontend"]).run(
        None, {"speech": speech.numpy(), "speech_lengths": lengths.numpy()})
    np.testing.assert_array_equal(got_lengths, want_lengths.numpy())
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)  # padded frames included: LogMel zeroes them


def _feats(model):
    speech, lengths = _speech()
    with torch.no_grad():
        return model.eval().frontend(speech, lengths)


@pytest.mark.parametrize("subnet", SUBNETS)
def test_float_graph_computes_the_stock_subnet(allinone, exported, subnet):
    model, _ = allinone
    paths = exported[subnet]
    assert ("int8" in paths) == (subnet != "2-32-32bit") and ("int4" in paths) == (subnet == "1-16-4bit")
    feats, lengths = _feats(model)
    with torch.no_grad():
        want, want_lengths, want_logp = EncoderCTC(_stock(allinone, subnet))(feats, lengths)
    enc, enc_lengths, logp = _encode(paths["float"], feats, lengths)
    np.testing.assert_array_equal(enc_lengths, want_lengths.numpy())
    for b, n in enumerate(enc_lengths):  # padded frames are not compared
        np.testing.assert_allclose(enc[b, :n], want[b, :n].numpy(), atol=1e-4)  # stated: float reordering
        np.testing.assert_allclose(logp[b, :n], want_logp[b, :n].numpy(), atol=1e-4)


def _weight_keys(graph) -> Dict[str, str]:
    """{code initializer: state-dict key of the trained weight it should hold}, read from the graph's
    names only (not from the values): a convolution's codes are named after its weight (``<key>_codes``);
    a Linear's MatMul weight has an exporter-made name (``onnx::MatMul_N``), so its key is that of the
    bias its output is added to (``<module>.bias`` -> ``<module>.weight``); the relative-position Linear
    has no bias: its output is one operand of the position-score MatMul whose other operand adds
    ``<attention>.pos_bias_v`` -> ``<attention>.linear_pos.weight``."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: Dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    named = {i.name for i in graph.initializer if not i.name.startswith("onnx::")}

    def named_input(node, suffix):
        return next((i for i in node.input if i in named and i.endswith(suffix)), None)

    def walk(value, downstream):  # the nodes reached from ``value``, breadth first
        seen, todo = set(), [value]
        while todo:
            v = todo.pop(0)
            for n in consumers.get(v, []) if downstream else [producer[v]] if v in producer else []:
                if id(n) not in seen:
                    seen.add(id(n))
                    yield n
                    todo.extend(n.output if downstream else n.input)

    keys = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("_codes"):
            keys[node.input[0]] = node.input[0][: -len("_codes")]
        elif node.op_type in ("MatMulInteger", "MatMulNBits"):
            ours = {node.output[0]}
            for n in walk(node.output[0], downstream=True):
                bias = named_input(n, ".bias") if n.op_type == "Add" else None
                if bias:
                    keys[node.input[1]] = bias[: -len("bias")] + "weight"
                    break
                if n.op_type == "MatMul":  # position scores: (q + pos_bias_v) @ linear_pos(pos_emb)^T
                    (other,) = [i for i in n.input if i not in ours]
                    u = next(filter(None, (named_input(m, ".pos_bias_v") for m in walk(other, downstream=False))))
                    keys[node.input[1]] = u[: -len("pos_bias_v")] + "linear_pos.weight"
                    break
                ours.update(n.output)
    return keys


def _codes_by_key(path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{state-dict key: (codes, steps)} of a low-bit graph, each weight named by :func:`_weight_keys`."""
    import onnx

    keys = _weight_keys(onnx.load(str(path)).graph)
    in_graph = codes_in_graph(path)
    assert set(keys) == set(in_graph)  # every integer weight of the graph is named
    assert len(set(keys.values())) == len(keys)  # ...each by a key of its own
    return {keys[name]: value for name, value in in_graph.items()}


def _wrong_codes(path, trained) -> List[str]:
    """The keys whose codes or steps in the graph at ``path`` differ from the trained ones."""
    return sorted(k for k, (c, s) in _codes_by_key(path).items()
                  if not (np.array_equal(c, trained[k].codes.numpy())
                          and np.array_equal(s.astype(np.float32), trained[k].step.numpy())))


@pytest.mark.parametrize("subnet, kind", [("2-32-8bit", "int8"), ("1-16-4bit", "int8"), ("1-16-4bit", "int4")])
def test_low_bit_graphs_hold_exactly_the_trained_codes(allinone, exported, subnet, kind):
    model, train_config = allinone
    _, quantized = subnet_weights(model, train_config, subnet)
    trained = {k: q for k, q in quantized.items() if k.startswith("encoder.")}
    by_key = _codes_by_key(exported[subnet][kind])
    # every trained Linear and convolution of the encoder, but the depthwise ones: those are exported
    # folded with their BatchNorm (float)
    want = sorted(k for k in trained if "depthwise" not in k)
    assert sorted(by_key) == want and len(want) > 10
    assert sum(trained[k].codes.dim() == 2 for k in want) > 5 and any(trained[k].codes.dim() > 2 for k in want)
    # each integer weight in the graph is the trained weight of its own module, exactly (no re-quantization)
    assert _wrong_codes(exported[subnet][kind], trained) == []
    bits = int(subnet.split("-")[2][:-3])
    for c, _ in by_key.values():
        assert c.dtype == np.int8 and np.abs(c).max() <= 2 ** (bits - 1) - 1
    if kind == "int4":  # 4-bit codes take 4 bits on disk: MatMulNBits' packing, ONNX INT4 for convolutions
        import onnx

        graph = onnx.load(str(exported[subnet][kind])).graph
        inits = {i.name: i for i in graph.initializer}
        stored = [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear"]
        assert stored and all(t.data_type == onnx.TensorProto.INT4 and len(t.raw_data) == -(-np.prod(t.dims) // 2)
                              for t in stored)


# Stated tolerances on the encoder output (relative L2 error per utterance, valid frames) against the float
# graph, which computes the fake-quant subnet (test above). int8: ORT's dynamic int8 MatMul quantizes its
# input activations per tensor to uint8 at run time (DynamicQuantizeLinear), so the output carries that
# rounding: measured 0.31 % (2-32-8bit) and 0.34 % (1-16-4bit); bound 2 %. int4 (MatMulNBits, accuracy
# level 0): float compute on the dequantized codes, float reordering only: measured 3e-7; bound 1e-4.
# The encoder output, not the posteriors: the random model's posteriors are near-uniform, so a wrong weight
# moves them little (swapping two blocks' feed_forward.w_2 moves them 4 %, the encoder output 11 %).
TOLERANCE = {"int8": 2e-2, "int4": 1e-4}


def _deviation(feats, lengths, ref_path, path) -> float:
    """Largest relative L2 error over the utterances of the encoder output of graph ``path`` against
    that of graph ``ref_path`` (valid frames only); the output lengths must agree."""
    ref, ref_lengths, _ = _encode(ref_path, feats, lengths)
    got, got_lengths, _ = _encode(path, feats, lengths)
    np.testing.assert_array_equal(got_lengths, ref_lengths)
    return max(np.linalg.norm(got[b, :n] - ref[b, :n]) / np.linalg.norm(ref[b, :n]) for b, n in enumerate(ref_lengths))


@pytest.mark.parametrize("subnet, kind", [("2-32-8bit", "int8"), ("1-16-4bit", "int8"), ("1-16-4bit", "int4")])
def test_low_bit_graphs_stay_close_to_the_fake_quant_subnet(allinone, exported, subnet, kind):
    model, _ = allinone
    feats, lengths = _feats(model)
    deviation = _deviation(feats, lengths, exported[subnet]["float"], exported[subnet][kind])
    assert deviation < TOLERANCE[kind]
    if kind == "int8":  # ...and it is the int8 graph computing: its activations are rounded
        assert deviation > 1e-4


def _swap_initializers(path, a: str, b: str, out):
    """Write ``path`` with the contents of initializers ``a`` and ``b`` (same shape) exchanged to ``out``."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    assert tuple(inits[a].dims) == tuple(inits[b].dims)
    copy_a = onnx.TensorProto()
    copy_a.CopyFrom(inits[a])
    inits[a].CopyFrom(inits[b])
    inits[a].name = a
    inits[b].CopyFrom(copy_a)
    inits[b].name = b
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("subnet, kind, swapped, visible", [
    ("2-32-8bit", "int8", ("encoder.encoders.0.feed_forward.w_2.weight", "encoder.encoders.1.feed_forward.w_2.weight"),
     True),
    ("1-16-4bit", "int8", ("encoder.encoders.0.feed_forward.w_1.weight",
                           "encoder.encoders.0.feed_forward_macaron.w_1.weight"), True),
    ("1-16-4bit", "int4", ("encoder.encoders.0.feed_forward.w_1.weight",
                           "encoder.encoders.0.feed_forward_macaron.w_1.weight"), True),
    ("1-16-4bit", "int8", ("encoder.encoders.0.self_attn.linear_q.weight",
                           "encoder.encoders.0.self_attn.linear_k.weight"), False),
], ids=["int8-w_2-of-blocks-0-1", "int8-w_1-and-macaron-w_1", "int4-w_1-and-macaron-w_1", "int8-q-and-k"])
def test_checks_fail_on_a_graph_with_two_weights_swapped(allinone, exported, tmp_path, subnet, kind, swapped,
                                                         visible):
    """Negative control: a graph whose codes for two same-shaped weights are exchanged (a wrong mapping)
    fails the code check, naming exactly those two, and, where the swap changes the function beyond the
    int8 rounding, the closeness check (by 2x its tolerance at least; measured: 11 %, 18 %, 18 %).
    Swapping q and k (or linear_pos) of the random model's near-uniform attention moves the encoder output
    by 0.4 %, within the int8 rounding (0.3 %; ``visible`` False): only the code check detects those."""
    import onnx

    model, train_config = allinone
    _, quantized = subnet_weights(model, train_config, subnet)
    path = exported[subnet][kind]
    name_of = {key: name for name, key in _weight_keys(onnx.load(str(path)).graph).items()}
    bad = _swap_initializers(path, *(name_of[k] for k in swapped), tmp_path / "swapped.onnx")
    assert _wrong_codes(bad, quantized) == sorted(swapped)
    feats, lengths = _feats(model)
    deviation = _deviation(feats, lengths, exported[subnet]["float"], bad)
    if visible:
        assert deviation > 2 * TOLERANCE[kind]


def test_decoder_graph_is_the_stock_decoder_step(allinone, exported):
    """decoder_memory.onnx projects the encoder output once (every layer's source-attention keys and
    values), decoder.onnx steps on it: together the stock ``forward_one_step``."""
    stock = _stock(allinone, "2-32-8bit")
    session = _session(exported["2-32-8bit"]["decoder"])
    enc = torch.randn(3, 11, stock.encoder.output_size())
    (memory,) = _session(exported["2-32-8bit"]["decoder_memory"]).run(None, {"enc": enc.numpy()})
    n = len(stock.decoder.decoders)
    assert memory.shape == (3, 11, 2 * n * enc.size(-1))
    ys = torch.full((3, 1), stock.sos)
    cache_t, cache_o = None, [np.zeros((3, 0, enc.size(-1)), np.float32) for _ in range(n)]
    for step in range(4):
        mask = torch.ones_like(ys, dtype=torch.bool).unsqueeze(1)
        with torch.no_grad():
            want, cache_t = stock.decoder.forward_one_step(ys, torch.tril(mask.expand(-1, ys.size(1), -1)),
                                                           enc, cache=cache_t)
        got, *cache_o = session.run(None, {"ys": ys.numpy(), "memory": memory,
                                           **{f"cache_{i}": c for i, c in enumerate(cache_o)}})
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
        ys = torch.cat([ys, want.argmax(-1, keepdim=True)], 1)


def test_config_and_sizes(allinone, exported):
    model, train_config = allinone
    paths = exported["1-16-4bit"]
    config = yaml.safe_load(paths["config"].read_text())
    assert config["subnet"] == "1-16-4bit" and config["fs"] == 16000 and config["token_list"][-1] == "<sos/eos>"
    assert set(config["files"]) == {"frontend", "float", "int8", "int4", "decoder", "decoder_memory"}
    assert config["min_frames"] == 7 and config["min_samples"] == 201  # conv2d subsampling; n_fft 400 centred
    float_size, int8_size = (graph_size(model, "1-16-4bit", paths[k]) for k in ("float", "int8"))
    assert float_size.bound_bytes == int8_size.bound_bytes < int8_size.file_bytes < float_size.file_bytes
    assert (paths["float"].stat().st_mode & 0o777) == 0o666 & ~_umask()  # not mkstemp's 0600


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_bad_subnet_is_a_clear_error(allinone, tmp_path):
    model, train_config = allinone
    with pytest.raises(ValueError, match="9-16-4bit"):
        export_onnx(model, train_config, "9-16-4bit", tmp_path)



def test_export_cli_writes_onnx(tmp_path, capsys):
    from espnet_allinone.bin import export

    config_file, model_file = make_allinone_files(tmp_path / "model")
    args = ["--asr_train_config", str(config_file), "--asr_model_file", str(model_file), "--out_dir",
            str(tmp_path / "out"), "--formats", "onnx"]
    export.main([*args, "--subnet", "1-16-4bit"])
    for name in ("frontend.onnx", "encoder_ctc.onnx", "encoder_ctc.int8.onnx", "encoder_ctc.int4.onnx",
                 "decoder.onnx", "decoder_memory.onnx", "config.yaml"):
        assert (tmp_path / "out/1-16-4bit/onnx" / name).is_file()
    out = capsys.readouterr().out
    assert "1-16-4bit int8:" in out and "bit bound of encoder + CTC" in out
    with pytest.raises(SystemExit):
        export.main([*args, "--subnet", "3-16-4bit"])
    assert "3-16-4bit" in capsys.readouterr().err
