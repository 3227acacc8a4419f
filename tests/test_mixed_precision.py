"""Mixed precision: under autocast (fp16 on CUDA, as ESPnet's ``use_amp: true``; bf16 here on CPU)
a quantized layer's matmul computes with the integer grid the export stores, steps and BatchNorm
statistics stay float32, and training learns. The CUDA fp16 + GradScaler run is
``benchmarks/gpu_check.py`` (a GPU machine)."""

import random

import pytest
import torch
import torch.nn.functional as F
import yaml

from espnet_allinone.elastic import ElasticConv1d, ElasticConv2d, ElasticLinear, make_elastic
from espnet_allinone.quant import fake_quantize, grid_factors, init_step
from tests.conftest import as_trained, batch, make_allinone_files, make_model

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_grid_factors_are_fake_quantize_with_its_gradients(bits):
    torch.manual_seed(bits)
    w = torch.randn(6, 40, requires_grad=True)
    s = init_step(w, bits).mul_(0.7).requires_grad_()  # some weights clip at +-Q
    x, r = torch.randn(5, 40), torch.randn(5, 6)
    (F.linear(x, fake_quantize(w, s, bits)) * r).sum().backward()
    want_w, want_s = w.grad.clone(), s.grad.clone()
    w.grad = s.grad = None
    codes, scale = grid_factors(w, s, bits)
    assert torch.equal(codes * scale, fake_quantize(w, s, bits))  # the same values, exactly
    (F.linear(x, codes) * scale.reshape(-1) * r).sum().backward()
    torch.testing.assert_close(w.grad, want_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s.grad, want_s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_unit_codes_are_exact_in_the_autocast_dtype(dtype, bits):
    w = torch.randn(64, 256)
    s = init_step(w, bits)
    codes, scale = grid_factors(w, s, bits)
    assert torch.equal(codes.to(dtype).float(), codes)
    assert ((scale >= 0.7) & (scale < 1.5)).all()  # the codes carry the weight's magnitude: stock's range
    if dtype == torch.bfloat16 and bits == 8:  # what autocast would do to the fake-quantized weight
        wq = fake_quantize(w, s, bits)
        assert not torch.equal(wq.to(dtype).float(), wq)


@pytest.mark.parametrize("dim, shape", [(-1, (3, 5, 6)), (1, (3, 6, 7)), (1, (2, 6, 4, 5))])
def test_scale_channels_gradients(dim, shape):
    torch.manual_seed(0)
    out = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(6, 1, dtype=torch.float64).add_(0.5).requires_grad_()
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    view = [1] * len(shape)
    view[dim] = -1
    r = torch.randn(*shape, dtype=torch.float64)
    (r * (out * scale.reshape(view) + bias.reshape(view))).sum().backward()
    want = [t.grad.clone() for t in (out, scale, bias)]
    for t in (out, scale, bias):
        t.grad = None
    from espnet_allinone.quant import scale_channels

    (r * scale_channels(out, scale, bias, dim)).sum().backward()
    for t, w in zip((out, scale, bias), want):
        torch.testing.assert_close(t.grad, w, rtol=1e-6, atol=1e-6)  # float32 inside


def _layer(kind: str, bits: int):
    torch.manual_seed(0)
    stock = {"linear": torch.nn.Linear(48, 24),
             "conv1d": torch.nn.Conv1d(24, 24, 5, padding=2, groups=24),  # Conformer's depthwise conv
             "conv2d": torch.nn.Conv2d(1, 8, 3, 2)}[kind]  # the subsampling's
    layer = make_elastic(torch.nn.Sequential(stock), [bits])[0]
    layer.set_active(None, bits)
    layer.init_steps(bits)
    x = {"linear": torch.randn(4, 30, 48), "conv1d": torch.randn(4, 24, 30),
         "conv2d": torch.randn(4, 1, 30, 20)}[kind] * 3
    return layer, x


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
def test_under_bf16_autocast_the_matmul_takes_the_exported_grid(kind, monkeypatch):
    """The weight the matmul receives, cast to bf16 by autocast, times the float32 scale applied to its
    output, is exactly the exported weight (codes * step); the output is bf16, as autocast's own."""
    layer, x = _layer(kind, 8)
    seen = []
    if kind == "linear":
        linear = F.linear

        def op(x, weight, bias):
            seen.append(weight)
            return linear(x, weight, bias)
        monkeypatch.setattr(F, "linear", op)
    else:
        conv = layer._conv_forward

        def record(x, weight, bias):
            seen.append(weight)
            return conv(x, weight, bias)
        monkeypatch.setattr(layer, "_conv_forward", record)
    exported = layer.integer_weight().dequantize()
    with torch.autocast(**BF16):
        got = layer(x)
        _, scale = layer.active_grid()
    monkeypatch.undo()
    (weight,) = seen
    as_bf16 = weight.to(torch.bfloat16).float()
    assert torch.equal(as_bf16 * scale, exported)  # exactly the grid, after autocast's cast
    assert got.dtype == torch.bfloat16
    op = F.linear if kind == "linear" else layer._conv_forward
    exact = op(x.double(), exported.double(), layer.bias.double())
    assert ((got.double() - exact).abs() <= 2 ** -6 * exact.abs().max()).all()  # bf16-level rounding
    # what autocast makes of the fake-quantized weight itself: off the grid
    wq = fake_quantize(layer.weight, layer.active_step(), 8)
    assert not torch.equal(wq.to(torch.bfloat16).float(), exported)


def _train(autocast: bool, steps: int = 25):
    torch.manual_seed(0)
    random.seed(0)  # the same sandwich draws in both runs
    model = make_model()  # sandwich: largest, smallest and one random subnet per step
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = batch(b=3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with torch.autocast(**BF16, enabled=autocast):
            loss, stats, _ = model(*data)
        loss.backward()
        assert torch.isfinite(loss)
        grads = [p.grad for n, p in model.named_parameters() if "weight_log_step" in n and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(float(loss))
    return model, losses


def test_bf16_training_learns_as_float32_does():
    model, bf16 = _train(True)
    _, fp32 = _train(False)
    assert max(bf16[-3:]) < 0.65 * bf16[0], bf16
    assert abs(bf16[-1] - fp32[-1]) < 0.05 * fp32[-1], (bf16, fp32)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # steps and weights stay float32
    norms = [b for n, b in model.named_buffers() if "running_" in n]
    assert norms and all(b.dtype == torch.float32 and torch.isfinite(b).all() for b in norms)


def test_codes_trained_under_bf16_are_the_codes_exported(tmp_path):
    from espnet_allinone.export import load_allinone, subnet_weights

    config, model_file = make_allinone_files(tmp_path)
    model = load_allinone(config, model_file).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    speech, text = torch.randn(2, 8000), torch.randint(2, 7, (2, 4))
    for _ in range(2):
        opt.zero_grad()
        with torch.autocast(**BF16):
            loss = model(speech, torch.tensor([8000, 7000]), text, torch.tensor([4, 3]))[0]
        loss.backward()
        opt.step()
    model.eval()
    train_config = yaml.safe_load(config.read_text())
    _, quantized = subnet_weights(model, train_config, "1-16-4bit", pad=False)
    encoder = model.encoder
    with encoder.using_subnet("1-16-4bit"), torch.autocast(**BF16):
        layers = {f"encoder.{n}": m for n, m in encoder.named_modules()
                  if isinstance(m, (ElasticLinear, ElasticConv1d, ElasticConv2d)) and m.active_bits == 4}
        checked = 0
        for name, m in layers.items():
            if f"{name}.weight" in quantized:
                codes, scale = m.active_grid()  # what the autocast forward multiplies with
                exported = quantized[f"{name}.weight"]
                assert torch.equal(codes.to(torch.bfloat16).float() * scale, exported.dequantize()), name
                assert torch.equal(exported.step, m.active_step().reshape(-1))
                checked += 1
    assert checked >= 10


def test_a_decode_under_autocast_matches_the_fp32_decode_of_the_same_codes():
    """Eval-mode encoder output under bf16 autocast stays close to fp32 (same codes; bf16 activations)."""
    torch.manual_seed(0)
    model = as_trained(make_model()).eval()
    x, xl, _, _ = batch()
    with torch.no_grad():
        model.encoder.set_subnet("2-16-4bit")
        ref = model.encoder(x, xl)[0]
        with torch.autocast(**BF16):
            got = model.encoder(x, xl)[0]
    rel = (got.float() - ref).norm() / ref.norm()
    assert rel < 0.05, float(rel)
