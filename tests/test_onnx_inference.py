"""espnet_allinone.onnx_inference / bin.onnx_decode: decoding with the exported ONNX graphs only."""

import inspect
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import yaml

from espnet_allinone.compat import TooShortUttError
from espnet_allinone.export import load_allinone
from espnet_allinone.onnx_export import export_onnx
from tests.conftest import make_allinone_files

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from espnet_allinone.onnx_inference import OnnxSpeech2Text  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    config_file, model_file = make_allinone_files(root)
    model = load_allinone(config_file, model_file)
    train_config = yaml.safe_load(config_file.read_text())
    for subnet in ("2-32-8bit", "1-16-4bit"):
        export_onnx(model, train_config, subnet, root / subnet)
    return root, config_file, model_file


def _wavs(n=4):
    rng = np.random.default_rng(3)
    return [(rng.standard_normal(4000 + 1500 * i) * 0.1).astype(np.float32) for i in range(n)]


@pytest.mark.parametrize("subnet", ["2-32-8bit", "1-16-4bit"])
@pytest.mark.parametrize("conf", [
    dict(ctc_greedy=True),
    dict(beam_size=3, ctc_weight=0.3),
    dict(beam_size=2, ctc_weight=1.0),
    dict(beam_size=3, ctc_weight=0.5, nbest=2, penalty=0.5),
])
def test_float_graphs_decode_as_the_stock_subnet(files, subnet, conf):
    from espnet_allinone.inference import Speech2Text

    root, config_file, model_file = files
    want = Speech2Text(asr_train_config=str(config_file), asr_model_file=str(model_file), subnet=subnet, **conf)
    got = OnnxSpeech2Text(root / subnet, precision="float", **conf)
    emitted = 0
    for wav in _wavs():
        w, g = want(wav), got(wav)
        assert [r[:3] for r in g] == [r[:3] for r in w]  # text, tokens, token ids of every n-best entry
        for rw, rg in zip(w, g):
            assert rg[3].score == pytest.approx(float(rw[3].score), abs=1e-3)
        emitted += len(w[0][2])
    assert emitted > 0  # the comparison is not between empty hypotheses


# int8: ORT's int8 MatMul (DynamicQuantizeLinear + MatMulInteger) requantizes its input activations per tensor
# to uint8 at run time, a rounding the fake-quant PyTorch model does not have: the posteriors move a little
# (measured on these 4 utterances: scores differ by up to 0.0033 (1-16-4bit) and 0.0028 (2-32-8bit), no token
# differs; with beam 3 and CTC weight 0.5 on 8 utterances one hypothesis of 16 tokens differed by 2 edits,
# where two prefixes nearly tie). Bound: 10 % of the reference tokens in token edits, 0.05 in score where the
# tokens agree. float and int4 (MatMulNBits at accuracy level 0: float compute on the dequantized codes)
# differ from the PyTorch model by float reordering only (measured 2e-6 in score): the same hypotheses.
INT8_EDITS, INT8_SCORE = 0.10, 0.05


def _edits(a, b) -> int:
    """Levenshtein distance of two token sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@pytest.mark.parametrize("subnet, precision", [
    ("1-16-4bit", "float"), ("1-16-4bit", "int4"), ("1-16-4bit", "int8"), ("2-32-8bit", "int8")])
def test_low_bit_graphs_decode_as_the_fake_quant_subnet(files, subnet, precision):
    from espnet_allinone.inference import Speech2Text

    root, config_file, model_file = files
    conf = dict(beam_size=2, ctc_weight=0.3)
    want = Speech2Text(asr_train_config=str(config_file), asr_model_file=str(model_file), subnet=subnet, **conf)
    got = OnnxSpeech2Text(root / subnet, precision=precision, **conf)
    edits = tokens = 0
    score_diffs = []
    for wav in _wavs():
        (_, _, w_ids, w_hyp), (_, _, g_ids, g_hyp) = want(wav)[0], got(wav)[0]
        tokens += len(w_ids)
        edits += _edits(list(w_ids), list(g_ids))
        if list(w_ids) == list(g_ids):
            score_diffs.append(abs(float(g_hyp.score) - float(w_hyp.score)))
    assert tokens >= 20  # the comparison is not between empty hypotheses
    if precision == "int8":
        assert edits <= INT8_EDITS * tokens and max(score_diffs, default=0.0) <= INT8_SCORE
        assert max(score_diffs, default=0.0) > 1e-4  # ...and the int8 graph decoded: its activations are rounded
    else:
        assert edits == 0 and max(score_diffs) <= 1e-3


def test_too_short_input_is_espnets_error(files):
    root, _, _ = files
    s2t = OnnxSpeech2Text(root / "2-32-8bit", precision="int8", ctc_greedy=True)
    assert s2t.min_samples == 201 and s2t.min_frames == 7
    with pytest.raises(TooShortUttError, match="needs 7"):
        s2t(np.zeros(600, np.float32))  # 4 frames
    with pytest.raises(ValueError, match="at least 201"):
        s2t(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match=r"\(samples,\)"):
        s2t(np.zeros((2, 4000), np.float32))


@pytest.mark.parametrize("kwargs, match", [
    (dict(precision="int4"), r"no int4 graph \(it has \['float', 'int8'\]\)"),
    (dict(precision="int2"), "precision must be one of"),
    (dict(lm_weight=0.3), "does not support \\['lm_weight'\\]"),
    (dict(batch_size=4, quantize_asr_model=True), "does not support \\['batch_size', 'quantize_asr_model'\\]"),
    (dict(subnet="1-16-4bit"), "holds subnet 2-32-8bit, not 1-16-4bit"),
    (dict(ctc_greedy=True, ctc_lexicon_decoder={"lexicon": "x"}), "two decoders"),
])
def test_bad_options_are_clear_errors(files, kwargs, match):
    root, _, _ = files
    with pytest.raises(ValueError, match=match):
        OnnxSpeech2Text(root / "2-32-8bit", **kwargs)


def test_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        OnnxSpeech2Text(tmp_path)


@pytest.mark.slow  # a subprocess or timed runs: seconds each
def test_decoding_imports_no_training_code(files):
    root, _, _ = files
    code = f"""
import sys, numpy as np
from espnet_allinone.onnx_inference import OnnxSpeech2Text
import espnet_allinone.bin.onnx_decode
s2t = OnnxSpeech2Text({str(root / "2-32-8bit")!r}, precision="int8", beam_size=2, ctc_weight=0.3)
s2t(np.random.default_rng(0).standard_normal(6000).astype(np.float32) * 0.1)
training = ["espnet_allinone.model", "espnet_allinone.elastic", "espnet_allinone.encoders", "espnet_allinone.export",
            "espnet_allinone.quant", "espnet_allinone.register", "espnet2.tasks.asr", "espnet2.train.trainer"]
print([m for m in training if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_onnx_decode_cli_decodes_a_data_dir_and_lists_bad_audio(files, tmp_path, capsys):
    from espnet_allinone.bin import onnx_decode

    root, _, _ = files
    data = tmp_path / "test"
    data.mkdir()
    entries = []
    for i, wav in enumerate(_wavs(3)):
        soundfile.write(tmp_path / f"u{i}.wav", wav, 16000)
        entries.append(f"u{i} {tmp_path / f'u{i}.wav'}")
    soundfile.write(tmp_path / "short.wav", np.zeros(600, np.float32), 16000)
    entries += [f"u3 {tmp_path / 'short.wav'}", f"u4 {tmp_path / 'missing.wav'}"]
    (data / "wav.scp").write_text("\n".join(entries) + "\n")
    conf = tmp_path / "decode.yaml"
    conf.write_text("beam_size: 2\nctc_weight: 0.3\nlm_weight: 0.0\n")
    args = ["--onnx_dir", str(root / "2-32-8bit"), "--precision", "float", "int8", "--data_dir", str(data),
            "--config", str(conf), "--output_dir", str(tmp_path / "decode")]
    assert onnx_decode.main(args) == 0
    out = capsys.readouterr().out
    assert "2-32-8bit int8 test: 3 decoded, 2 failed" in out
    for precision in ("float", "int8"):
        d = tmp_path / "decode" / precision / "test"
        assert [line.split(" ")[0] for line in (d / "text").read_text().splitlines()] == [f"u{i}" for i in range(5)]
        failed = (d / "failed").read_text()
        assert "u3" in failed and "too short" in failed and "u4" in failed and float((d / "rtf").read_text()) > 0
    assert onnx_decode.main(args) == 0  # decoded before: skipped
    assert "2 of 2 precisions decoded before" in capsys.readouterr().out
    assert onnx_decode.main([*args, "--fail_on_bad_audio", "true"]) == 1
    conf.write_text("beam_size: 2\nlm_weight: 0.5\n")
    with pytest.raises(SystemExit):
        onnx_decode.main(args)
    assert "lm_weight" in capsys.readouterr().err


def test_ctc_window_margin_decodes_as_in_pytorch(files):
    """One decode config, ``ctc_window_margin`` included, decodes alike in PyTorch and ONNX Runtime;
    the default window is the installed ESPnet's."""
    from espnet_allinone import compat
    from espnet_allinone.inference import Speech2Text

    root, config_file, model_file = files
    conf = dict(beam_size=3, ctc_weight=0.5)
    default = OnnxSpeech2Text(root / "2-32-8bit", precision="float", **conf)
    assert getattr(default.beam_search.scorers["ctc"], "window_margin", 0) == compat.ctc_window_margin_default()
    if "window_margin" not in inspect.signature(compat.CTCPrefixScorer.__init__).parameters:
        with pytest.raises(ValueError, match="ctc_window_margin=2: the CTC prefix scoring of ESPnet"):
            OnnxSpeech2Text(root / "2-32-8bit", precision="float", ctc_window_margin=2, **conf)
        return
    wavs = [(np.random.default_rng(5).standard_normal(24000) * 0.1).astype(np.float32), *_wavs(2)]
    for margin in (0, 1, 100):
        want = Speech2Text(asr_train_config=str(config_file), asr_model_file=str(model_file), subnet="2-32-8bit",
                           ctc_window_margin=margin, **conf)
        got = OnnxSpeech2Text(root / "2-32-8bit", precision="float", ctc_window_margin=margin, **conf)
        assert got.beam_search.scorers["ctc"].window_margin == margin
        for wav in wavs:
            assert [r[:3] for r in got(wav)] == [r[:3] for r in want(wav)], margin
