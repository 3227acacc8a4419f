import pytest
import torch

from espnet_allinone.quant import fake_quantize, init_step, integer_codes, qmax


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("shape", [(8, 5), (6, 3, 4), (4, 2, 3, 3)])
def test_values_on_symmetric_grid(bits, shape):
    w = torch.randn(shape) * 3
    step = init_step(w, bits)
    assert step.shape == (shape[0],) + (1,) * (len(shape) - 1) and (step > 0).all()
    wq = fake_quantize(w, step, bits)
    codes = wq / step
    q = 2 ** (bits - 1) - 1
    assert qmax(bits) == q
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.round().abs().max() <= q
    # symmetric: at most 2q+1 distinct levels per channel
    for c in range(shape[0]):
        assert len(torch.unique(codes[c].round())) <= 2 * q + 1
    # the export path rebuilds exactly the same values
    codes_and_steps = integer_codes(w, step, bits)
    assert codes_and_steps.codes.dtype == torch.int8 and codes_and_steps.bits == bits
    assert torch.equal(codes_and_steps.codes.float() * step, wq)
    assert torch.equal(codes_and_steps.dequantize(), wq)


def test_full_precision_is_identity():
    w = torch.randn(4, 4)
    assert fake_quantize(w, torch.ones(4, 1), 32) is w


def test_ste_gradient_reaches_weight_and_step():
    w = torch.randn(6, 10, requires_grad=True)
    step = init_step(w, 4).requires_grad_()
    w.data[0, 0] = 100.0  # clipped: no weight gradient there
    fake_quantize(w, step, 4).pow(2).sum().backward()
    assert w.grad is not None and step.grad is not None
    assert w.grad[0, 0] == 0
    inside = (w.detach() / step.detach()).abs() < qmax(4)
    # straight-through: d(wq)/dw = 1 inside the clipping range
    expected = 2 * fake_quantize(w.detach(), step.detach(), 4)
    assert torch.allclose(w.grad[inside], expected[inside])
    assert step.grad.abs().sum() > 0


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_step_gradient_is_lsq(bits):
    """d wq / d s = round(w/s) - w/s inside the range, +-Q outside, times 1/sqrt(n Q)."""
    w = torch.randn(5, 12) * 2
    step = init_step(w, bits).requires_grad_()
    fake_quantize(w, step, bits).sum().backward()
    q = qmax(bits)
    v = w / step.detach()
    d = torch.where(v.abs() < q, v.round() - v, torch.sign(v) * q)
    want = d.sum(dim=1, keepdim=True) / (12 * q) ** 0.5
    assert torch.allclose(step.grad, want, atol=1e-5)


def test_bits_below_two_rejected():
    with pytest.raises(ValueError, match="bit-width"):
        fake_quantize(torch.randn(2, 2), torch.ones(2, 1), 1)
