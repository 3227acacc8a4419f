"""espnet_allinone.onnx_export: a subnet as ONNX graphs (frontend, encoder + CTC, decoder step) for ONNX Runtime."""

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


@pytest.mark.parametrize("subnet, kind", [("2-32-8bit", "int8"), ("1-16-4bit", "int8"), ("1-16-4bit", "int4")])
def test_low_bit_graphs_hold_exactly_the_trained_codes(allinone, exported, subnet, kind):
    model, train_config = allinone
    _, quantized = subnet_weights(model, train_config, subnet)
    trained = {k: q for k, q in quantized.items() if k.startswith("encoder.")}
    in_graph = codes_in_graph(exported[subnet][kind])
    bits = int(subnet.split("-")[2][:-3])
    as_bytes = {(q.codes.numpy().tobytes(), q.step.numpy().tobytes()) for q in trained.values()}
    got = {(c.tobytes(), s.astype(np.float32).tobytes()) for c, s in in_graph.values()}
    assert got <= as_bytes  # every integer weight in the graph is a trained one, exactly (no re-quantization)
    linears = [q for q in trained.values() if q.codes.dim() == 2]
    in_graph_linears = [c for c, _ in in_graph.values() if c.ndim == 2]
    assert len(in_graph_linears) == len(linears) > 5  # every trained Linear of the encoder
    # convolutions: subsampling and pointwise ones; a depthwise one is exported folded with its BatchNorm (float)
    convs = [k for k, q in trained.items() if q.codes.dim() > 2]
    assert len(in_graph) - len(in_graph_linears) == len([k for k in convs if "depthwise" not in k]) > 0
    for c, _ in in_graph.values():
        assert c.dtype == np.int8 and np.abs(c).max() <= 2 ** (bits - 1) - 1
    if kind == "int4":  # 4-bit codes take 4 bits on disk: MatMulNBits' packing, ONNX INT4 for convolutions
        import onnx

        graph = onnx.load(str(exported[subnet][kind])).graph
        inits = {i.name: i for i in graph.initializer}
        stored = [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear"]
        assert stored and all(t.data_type == onnx.TensorProto.INT4 and len(t.raw_data) == -(-np.prod(t.dims) // 2)
                              for t in stored)


@pytest.mark.parametrize("subnet, kind, tolerance", [
    ("2-32-8bit", "int8", 0.05), ("1-16-4bit", "int8", 0.05), ("1-16-4bit", "int4", 1e-4)])
def test_low_bit_graphs_stay_close_to_the_fake_quant_subnet(allinone, exported, subnet, kind, tolerance):
    """The float graph computes the fake-quant subnet (test above). int8: activations quantized per tensor at
    run time, stated tolerance 5 % relative on the posteriors of the valid frames; int4 (MatMulNBits at
    accuracy level 0): float compute on the dequantized codes, the float graph's output up to 1e-4."""
    model, _ = allinone
    feats, lengths = _feats(model)
    _, ref_lengths, ref = _encode(exported[subnet]["float"], feats, lengths)
    _, got_lengths, got = _encode(exported[subnet][kind], feats, lengths)
    np.testing.assert_array_equal(got_lengths, ref_lengths)
    for b, n in enumerate(ref_lengths):
        p, q = np.exp(ref[b, :n]), np.exp(got[b, :n])
        assert np.linalg.norm(q - p) / np.linalg.norm(p) < tolerance
    if kind == "int8":
        assert not np.array_equal(got, ref)


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
