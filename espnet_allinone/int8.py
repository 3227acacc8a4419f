"""Integer-kernel CPU inference of exported low-bit subnets.

The weights of an exported subnet are ``codes * step`` (int8 codes, one float step per
output channel). Here its layers compute with those codes on int8 kernels; 2..7-bit
codes run on the same int8 kernels:

- Linear -> :class:`IntegerLinear`: activations quantized to int8 per row (token),
  one int8 x int8 -> int32 GEMM (``torch._int_mm``), rescaled by row scale x step;
- Conv1d/Conv2d with ``groups=1`` (the convolutional subsampling, the Conformer
  convolution module's pointwise convolutions) -> :class:`IntegerConv`: activations
  quantized to int8 per tensor (per position for pointwise convolutions), one int8
  GEMM per kernel tap (or one over all taps).
  Depthwise convolutions stay float (on the dequantized codes).

Only the activations are quantized at run time (symmetric int8, scales from each
input's range), which is where outputs differ from the fake-quant model.
``torch.ao``'s dynamic quantized modules are not used: per-tensor 7-bit activations
made Linear outputs ~4x less accurate than per-row int8, and in torch 2.11 its
dynamic convolutions lose accuracy on inputs that are not centred on zero (relative
error ~0.7 after a ReLU, against ~0.01 here).
"""

from typing import Dict

import torch
import torch.nn.functional as F

from espnet_allinone.quant import QuantizedWeight


def _quantize_rows(x: torch.Tensor):
    """(M, K) float -> (M, K) int8 and (M, 1) scales, symmetric per row."""
    scale = x.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127
    return torch.round(x / scale).to(torch.int8), scale


class IntegerLinear(torch.nn.Module):
    """Linear computed with an int8 GEMM on the trained codes.

    Args:
        linear: float layer (its bias is kept in float).
        weight: codes (out, in) and steps (out,).
    Forward: (..., in) -> (..., out), as ``linear``.
    """

    def __init__(self, linear: torch.nn.Linear, weight: QuantizedWeight):
        super().__init__()
        self.register_buffer("codes", weight.codes.t().contiguous())  # (in, out)
        self.register_buffer("step", weight.step.float().clone())
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, scale = _quantize_rows(x.reshape(-1, x.size(-1)))
        y = torch._int_mm(xq, self.codes).float().mul_(scale * self.step)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.reshape(*x.shape[:-1], -1)


class IntegerConv(torch.nn.Module):
    """Conv1d/Conv2d (groups 1, zero padding) computed with int8 GEMMs.

    The input is quantized symmetrically per tensor to int8 (so zero padding stays
    exact), laid out channels-last, and each kernel tap ``(i, j)`` adds
    ``x[:, i::stride, j::stride] @ codes[:, :, i, j].T`` to an int32 accumulator (for
    few input channels, all taps are concatenated into one GEMM instead);
    the result is scaled by ``input_scale * step`` per output channel, plus the bias.
    A pointwise convolution (kernel 1, no padding) is a Linear over channels: its
    input gets one scale per position, as in :class:`IntegerLinear`.

    Args:
        conv: float layer (hyper-parameters and bias taken from it).
        weight: codes (out, in, *kernel) and steps (out,).
    Forward: (B, C_in, [H,] W) -> (B, C_out, [H',] W'), as ``conv``.
    """

    # below this many input channels all taps go into one GEMM (im2col) instead
    MIN_TAP_CHANNELS = 64

    def __init__(self, conv: torch.nn.Module, weight: QuantizedWeight):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"{conv}: IntegerConv needs groups=1 and numeric zero padding")
        self.dim = len(conv.kernel_size)

        def as2d(t, unit):  # a Conv1d is a Conv2d of height 1
            return ((unit,) if self.dim == 1 else ()) + tuple(t)

        self.stride, self.padding = as2d(conv.stride, 1), as2d(conv.padding, 0)
        self.dilation = as2d(conv.dilation, 1)
        codes = weight.codes if self.dim == 2 else weight.codes.unsqueeze(2)
        self.kernel_size = tuple(codes.shape[2:])
        # (kh * kw * in, out): rows ordered tap by tap, channels within a tap
        codes = codes.permute(2, 3, 1, 0).reshape(-1, codes.size(0)).contiguous()
        self.register_buffer("codes", codes)
        self.register_buffer("step", weight.step.float().clone())
        bias = None if conv.bias is None else conv.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim == 1:
            x = x.unsqueeze(2)
        (ph, pw), (sh, sw) = self.padding, self.stride
        (dh, dw), (kh, kw) = self.dilation, self.kernel_size
        if (kh, kw, ph, pw) == (1, 1, 0, 0):  # pointwise: a Linear over channels per position
            x = x[:, :, ::sh, ::sw].permute(0, 2, 3, 1)
            b, ho, wo, c = x.shape
            xq, scale = _quantize_rows(x.reshape(-1, c))
            acc = torch._int_mm(xq, self.codes)
        else:
            lo, hi = torch.aminmax(x.detach())
            scale = max(-float(lo), float(hi), 1e-8) / 127
            # (B, H, W, C) int8, contiguous: the quantizer writes the permuted layout
            xq = torch.quantize_per_tensor(x.permute(0, 2, 3, 1), scale, 0, torch.qint8).int_repr()
            if ph or pw:
                xq = F.pad(xq, (0, 0, pw, pw, ph, ph))
            b, h, w, c = xq.shape
            ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
            rows, cols = sh * (ho - 1) + 1, sw * (wo - 1) + 1
            taps = [
                xq[:, i * dh: i * dh + rows: sh, j * dw: j * dw + cols: sw]
                for i in range(kh)
                for j in range(kw)
            ]
            if c < self.MIN_TAP_CHANNELS:  # few channels: one GEMM over all taps (im2col)
                acc = torch._int_mm(torch.cat(taps, dim=-1).reshape(-1, c * len(taps)), self.codes)
            else:  # one GEMM per tap, no im2col copy
                acc = None
                for t, tap in enumerate(taps):
                    out = torch._int_mm(tap.reshape(-1, c), self.codes[t * c: (t + 1) * c])
                    acc = out if acc is None else acc.add_(out)
        y = acc.float().mul_(scale * self.step)
        if self.bias is not None:
            y = y.add_(self.bias)
        y = y.reshape(b, ho, wo, -1).permute(0, 3, 1, 2)  # a channels-last view, no copy
        return y.squeeze(2) if self.dim == 1 else y


def integer_module(module: torch.nn.Module, weight: QuantizedWeight) -> torch.nn.Module:
    """The integer-kernel twin of a Linear, or of a Conv1d/Conv2d with groups 1, whose
    weight is ``weight``'s codes (``weight.dequantize()`` must be its float weight).

    Args:
        module: float layer (bias and hyper-parameters taken from it).
        weight: codes (out, ...) int8 of the layer's weight shape and steps (out,).
    """
    if tuple(weight.codes.shape) != tuple(module.weight.shape):
        raise ValueError(f"codes {tuple(weight.codes.shape)} do not fit {module}")
    if type(module) is torch.nn.Linear:
        return IntegerLinear(module, weight)
    if type(module) in (torch.nn.Conv1d, torch.nn.Conv2d):
        return IntegerConv(module, weight)
    raise ValueError(f"no integer kernel for {type(module).__name__}: use Linear, Conv1d, Conv2d")


def _runs_on_integers(module: torch.nn.Module) -> bool:
    return type(module) is torch.nn.Linear or (
        type(module) in (torch.nn.Conv1d, torch.nn.Conv2d) and module.groups == 1
    )


def to_integer_kernels(model: torch.nn.Module, quantized: Dict[str, QuantizedWeight]) -> int:
    """Replace, in place, every Linear and Conv1d/Conv2d (groups 1) of ``model`` whose
    ``<name>.weight`` is in ``quantized`` (as :func:`espnet_allinone.export.load_packed`
    returns) by its :func:`integer_module`. Returns how many were replaced."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if _runs_on_integers(module) and f"{name}.weight" in quantized:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, integer_module(module, quantized[f"{name}.weight"]))
            replaced += 1
    return replaced
