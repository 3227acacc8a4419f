"""espnet_allinone.onnx_export: a subnet's encoder + CTC as ONNX, run with ONNX Runtime."""

import numpy as np
import pytest
import torch
import yaml

from espnet_allinone.export import build_stock_model, load_allinone, stock_config, subnet_weights
from espnet_allinone.onnx_export import EncoderCTC, export_ctc_onnx, trained_codes_in_graph
from tests.conftest import make_allinone_files

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def allinone(tmp_path_factory):
    config_file, model_file = make_allinone_files(tmp_path_factory.mktemp("allinone"))
    return load_allinone(config_file, model_file), yaml.safe_load(config_file.read_text())


def _feats(model, t=8000):
    torch.manual_seed(1)
    speech, lengths = torch.randn(2, t) * 0.1, torch.tensor([t, t - 1700])
    with torch.no_grad():
        feats, feats_lengths = model.frontend(speech, lengths)
    return feats, feats_lengths


def _run(path, feats, lengths):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"feats": feats.numpy(), "feats_lengths": lengths.numpy()})


@pytest.mark.parametrize("subnet", ["2-32-8bit", "1-16-4bit", "2-32-32bit"])
def test_float_graph_computes_the_stock_subnet(allinone, subnet, tmp_path):
    model, train_config = allinone
    paths = export_ctc_onnx(model, train_config, subnet, tmp_path)
    assert ("int8" in paths) == (not subnet.endswith("32bit"))
    state, _ = subnet_weights(model, train_config, subnet)
    stock = build_stock_model(stock_config(train_config, model, subnet))
    stock.load_state_dict(state)
    feats, lengths = _feats(model)
    with torch.no_grad():
        want, want_lengths = EncoderCTC(stock.eval())(feats, lengths)
    logp, logp_lengths = _run(paths["float"], feats, lengths)
    np.testing.assert_array_equal(logp_lengths, want_lengths.numpy())
    for b, n in enumerate(logp_lengths):  # padded frames are not compared
        np.testing.assert_allclose(logp[b, :n], want[b, :n].numpy(), atol=1e-4)  # stated: float reordering


@pytest.mark.parametrize("subnet", ["2-32-8bit", "1-16-4bit"])
def test_int8_graph_holds_the_trained_codes_and_stays_close(allinone, subnet, tmp_path):
    model, train_config = allinone
    paths = export_ctc_onnx(model, train_config, subnet, tmp_path)
    _, quantized = subnet_weights(model, train_config, subnet)
    linears = {k: q for k, q in quantized.items() if k.startswith("encoder.") and q.codes.dim() == 2}
    in_graph = trained_codes_in_graph(paths["int8"])
    assert len(in_graph) == len(linears) > 5  # every trained Linear of the encoder
    trained = {(q.codes.t().contiguous().numpy().tobytes(), q.step.numpy().tobytes()) for q in linears.values()}
    assert {(w.tobytes(), s.tobytes()) for w, s in in_graph.values()} == trained  # exactly, no re-quantization
    for w, _ in in_graph.values():
        assert w.dtype == np.int8 and np.abs(w).max() <= 2 ** (int(subnet.split("-")[2][:-3]) - 1) - 1
    feats, lengths = _feats(model)
    ref, ref_lengths = _run(paths["float"], feats, lengths)
    got, got_lengths = _run(paths["int8"], feats, lengths)
    np.testing.assert_array_equal(got_lengths, ref_lengths)
    # only activations are quantized at run time (int8 per tensor): stated tolerance, 5 % relative on the
    # posteriors of the valid frames
    for b, n in enumerate(ref_lengths):
        p, q = np.exp(ref[b, :n]), np.exp(got[b, :n])
        assert np.linalg.norm(q - p) / np.linalg.norm(p) < 0.05
    assert not np.array_equal(got, ref)


def test_bad_subnet_is_a_clear_error(allinone, tmp_path):
    model, train_config = allinone
    with pytest.raises(ValueError, match="9-16-4bit"):
        export_ctc_onnx(model, train_config, "9-16-4bit", tmp_path)


def test_export_cli_writes_onnx(tmp_path, capsys):
    from espnet_allinone.bin import export

    config_file, model_file = make_allinone_files(tmp_path / "model")
    args = ["--asr_train_config", str(config_file), "--asr_model_file", str(model_file), "--out_dir",
            str(tmp_path / "out"), "--formats", "onnx"]
    export.main([*args, "--subnet", "1-16-4bit"])
    assert (tmp_path / "out/1-16-4bit/onnx/encoder_ctc.onnx").is_file()
    assert (tmp_path / "out/1-16-4bit/onnx/encoder_ctc.int8.onnx").is_file()
    assert "1-16-4bit int8:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        export.main([*args, "--subnet", "3-16-4bit"])
    assert "3-16-4bit" in capsys.readouterr().err
