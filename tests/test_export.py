"""Exporting subnets: stock ESPnet model, packed low-bit artifact, zip (ONNX: test_onnx_export.py)."""

import math
import os
import re
import subprocess
import sys
import sysconfig

import pytest
import soundfile
import torch
import yaml

from espnet_allinone.export import (
    build_packed_model,
    build_stock_model,
    export_packed,
    export_stock,
    load_allinone,
    load_packed,
    pack_allinone,
    stock_config,
    subnet_weights,
)
from espnet_allinone.quant import pack_codes, qmax, unpack_codes
from tests.conftest import make_allinone_files, write_tone_data

SUBNETS = ["2-32-32bit", "2-32-8bit", "2-16-4bit", "1-16-8bit", "1-32-4bit"]


@pytest.fixture(scope="module")
def allinone(tmp_path_factory):
    config_file, model_file = make_allinone_files(tmp_path_factory.mktemp("allinone"))
    model = load_allinone(config_file, model_file)
    return model, yaml.safe_load(config_file.read_text()), config_file, model_file


def _speech(t=8000):
    """(2, t) waveforms and their lengths (``model.encode`` runs frontend and MVN)."""
    torch.manual_seed(1)
    return torch.randn(2, t) * 0.1, torch.tensor([t, t - 1700])


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_codes_round_trip_dense(bits):
    q = qmax(bits)
    codes = torch.randint(-q, q + 1, (37, 11), dtype=torch.int8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, codes.shape), codes)


def test_pack_codes_layout_and_errors():
    # 4 bits: two codes per byte, first in the low nibble, stored as code + 7
    codes = torch.tensor([-7, 7, 0, 1], dtype=torch.int8)
    assert pack_codes(codes, 4).tolist() == [14 << 4, 7 | 8 << 4]
    assert pack_codes(torch.tensor([-127, 127], dtype=torch.int8), 8).tolist() == [0, 254]
    with pytest.raises(ValueError, match="outside the 4-bit grid"):
        pack_codes(torch.tensor([8], dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_codes(torch.zeros(3, dtype=torch.uint8), 4, (7,))


@pytest.mark.parametrize("subnet", SUBNETS)
def test_stock_model_computes_the_subnet(allinone, subnet):
    model, train_config, _, _ = allinone
    depth, width = (int(v) for v in subnet.split("-")[:2])
    config = stock_config(train_config, model, subnet)
    assert (config["encoder"], config["model"]) == ("conformer", "espnet")
    encoder_conf = config["encoder_conf"]
    assert (encoder_conf["num_blocks"], encoder_conf["linear_units"]) == (depth, width)
    assert not any(k.startswith("subnet") for k in config["encoder_conf"])
    state, quantized = subnet_weights(model, train_config, subnet)
    assert not any("log_step" in k or "running_mean_" in k for k in state)
    assert bool(quantized) == (not subnet.endswith("32bit"))
    stock = build_stock_model(config)
    stock.load_state_dict(state, strict=True)
    x, xl = _speech()
    with torch.no_grad(), model.encoder.using_subnet(subnet):
        ref = model.encode(x, xl)[0]
    with torch.no_grad():
        out = stock.encode(x, xl)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # the subnet's own BatchNorm statistics, not the largest subnet's
    bn = "encoder.encoders.0.conv_module.norm.running_mean"
    largest = model.state_dict()[bn]
    assert torch.equal(state[bn], largest) == (subnet == "2-32-32bit")


@pytest.mark.parametrize("subnet", ["2-32-8bit", "1-16-4bit", "2-16-32bit"])
def test_packed_artifact_is_bit_exact(allinone, subnet, tmp_path):
    model, train_config, _, _ = allinone
    export_stock(model, train_config, subnet, tmp_path / "stock")
    export_packed(model, train_config, subnet, tmp_path / "packed")
    ref = torch.load(tmp_path / "stock" / "model.pth")
    config, state, quantized = load_packed(tmp_path / "packed")
    written = yaml.safe_load((tmp_path / "stock" / "config.yaml").read_text())
    # each directory refers to its own copy of the normalisation statistics
    for conf, d in [(config, "packed"), (written, "stock")]:
        assert conf["normalize_conf"].pop("stats_file") == str(tmp_path / d / "feats_stats.npz")
    assert config == written
    assert state.keys() == ref.keys()
    for key in ref:
        assert torch.equal(state[key], ref[key]), key
    bits = int(subnet.split("-")[2][:-3])
    blob = torch.load(tmp_path / "packed" / "encoder.packed")
    dense = sum(math.ceil(q.codes.numel() * bits / 8) for q in quantized.values())
    assert blob["codes"].numel() == dense
    assert all(q.bits == bits for q in quantized.values())
    built = build_packed_model(tmp_path / "packed").state_dict()  # the stock model it rebuilds
    assert built.keys() == ref.keys() and all(torch.equal(built[k], ref[k]) for k in ref)


@pytest.mark.parametrize("bits", [4, 8])
def test_packed_size_reaches_the_bit_ratio(tmp_path, bits):
    """On an encoder of realistic width the packed file is within 5% of the bit bound."""
    config_file, model_file = make_allinone_files(
        tmp_path, output_size=256, attention_heads=4, linear_units=1024,
        subnet_widths=[512, 1024], subnet_bits=[bits, 32],
    )
    model = load_allinone(config_file, model_file)
    subnet = f"2-512-{bits}bit"
    export_packed(model, yaml.safe_load(config_file.read_text()), subnet, tmp_path / "packed")
    size = (tmp_path / "packed" / "encoder.packed").stat().st_size
    ratio = model.encoder.subnet_size(None).params * 4 / size
    # the bit bound of a packed export: biases, norms and steps at 32 bits
    assert ratio >= 0.95 * model.encoder.compression_ratio(subnet, storage=True)


def test_zip_holds_every_subnet(allinone, tmp_path, monkeypatch):
    import espnet_model_zoo.downloader as zoo

    from espnet_allinone.inference import Speech2Text

    model, _, config_file, model_file = allinone
    zip_path = pack_allinone(config_file, model_file, tmp_path / "allinone.zip")
    real = zoo.ModelDownloader
    monkeypatch.setattr(zoo, "ModelDownloader", lambda: real(cachedir=tmp_path / "cache"))
    x, xl = _speech()
    for subnet in ["2-32-32bit", "1-16-4bit"]:
        s2t = Speech2Text.from_pretrained(str(zip_path), subnet=subnet, beam_size=1)
        assert str(s2t.asr_model.encoder.active_subnet) == subnet
        with torch.no_grad(), model.encoder.using_subnet(subnet):
            ref = model.encode(x, xl)[0]
            out = s2t.asr_model.encode(x, xl)[0]
        assert torch.equal(out, ref)


def test_bad_subnet_names_the_valid_ones(allinone, tmp_path, capsys):
    from espnet_allinone.bin.export import main

    _, _, config_file, model_file = allinone
    with pytest.raises(SystemExit) as e:
        main(["--asr_train_config", str(config_file), "--asr_model_file", str(model_file),
              "--subnet", "2-64-4bit", "--out_dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "valid subnets" in err and all(s in err for s in SUBNETS)
    assert not any(tmp_path.iterdir())


STOCK_DECODE = """
import sys
from espnet2.bin.asr_inference import main
main(sys.argv[1:])
assert not any(m.startswith("espnet_allinone") for m in sys.modules), "plugin loaded"
try:
    import espnet_allinone
except ImportError:
    pass
else:
    raise AssertionError("espnet_allinone importable")
"""


def _stock_decode(cwd, model_dir, out, *extra):
    """Decode dev/ with stock ESPnet in a process that cannot see the plugin: no site
    processing (-S), so no .pth file (neither the plugin's hook nor its install path)."""
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", STOCK_DECODE,
         "--asr_train_config", str(model_dir / "config.yaml"),
         "--asr_model_file", str(model_dir / "model.pth"),
         "--data_path_and_name_and_type", "dev/wav.scp,speech,sound",
         "--beam_size", "2", "--ctc_weight", "0.3", "--maxlenratio", "0.5",
         "--output_dir", str(out), "--ngpu", "0", *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = dict(line.split(" ", 1) if " " in line else (line, "")
                for line in (out / "1best_recog" / "text").read_text().splitlines())
    return text, proc.stderr


def _scores(out) -> dict:
    """{utterance: score} of an ESPnet decode dir (``1best_recog/score``: ``key tensor(-1.23)`` or ``key -1.23``)."""
    lines = (out / "1best_recog" / "score").read_text().splitlines()
    return {key: float(re.search(r"-?[0-9.]+(?:e[-+]?[0-9]+)?", value)[0])
            for key, value in (line.split(" ", 1) for line in lines)}


@pytest.mark.slow
@pytest.mark.parametrize("subnet", ["1-16-4bit"])
def test_stock_espnet_decodes_the_export_like_the_plugin(allinone, subnet, tmp_path):
    from espnet_allinone.bin.export import main
    from espnet_allinone.inference import Speech2Text

    _, _, config_file, model_file = allinone
    write_tone_data(tmp_path / "dev", 3, 1)
    main(["--asr_train_config", str(config_file), "--asr_model_file", str(model_file),
          "--subnet", subnet, "--out_dir", str(tmp_path / "export"), "--formats", "stock"])
    model_dir = tmp_path / "export" / subnet / "stock"
    stock, _ = _stock_decode(tmp_path, model_dir, tmp_path / "stock_decode")
    s2t = Speech2Text(
        config_file, model_file, subnet=subnet, beam_size=2, ctc_weight=0.3, maxlenratio=0.5
    )
    plugin = {}
    for line in (tmp_path / "dev" / "wav.scp").read_text().splitlines():
        key, path = line.split()
        plugin[key] = s2t(soundfile.read(path, dtype="float32")[0])[0][0]
    assert stock == plugin and len(plugin) == 3 and all(plugin.values())
    # stock dynamic quantization of the exported model (torch's quantize_dynamic: every Linear's weight
    # re-rounded to int8 per tensor, its input activations at run time) decodes as the plugin's fake-quant
    # subnet: measured the same hypotheses, scores moved by up to 0.014; bound 0.05
    quantized, log = _stock_decode(
        tmp_path, model_dir, tmp_path / "q_decode", "--quantize_asr_model", "true"
    )
    assert "Use quantized asr model" in log
    assert quantized == plugin
    float_scores, int8_scores = (_scores(tmp_path / d) for d in ("stock_decode", "q_decode"))
    assert float_scores.keys() == int8_scores.keys() == plugin.keys()
    moved = [abs(int8_scores[k] - float_scores[k]) for k in plugin]
    assert 1e-4 < max(moved) <= 0.05  # the quantized model decoded (its scores moved), and by little
