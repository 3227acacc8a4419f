"""Symmetric weight quantization: LSQ fake-quant for training; integer codes, their
packing, and the packed state-dict codec for export.

A weight ``w`` quantized to ``b`` bits with per-output-channel step ``s`` is
``clamp(round(w / s), -Q, Q) * s`` with ``Q = 2**(b-1) - 1`` (a symmetric grid of
``2Q + 1`` levels). Training uses the straight-through estimator for ``round`` and
learns ``s`` as in LSQ (Esser et al., 2020), whose gradient is scaled by
``1 / sqrt(numel_per_channel * Q)``.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from espnet_allinone.subnet import FULL_PRECISION, check_bits


def qmax(bits: int) -> int:
    """Largest integer code of the symmetric ``bits`` grid (``2**(bits-1) - 1``)."""
    return 2 ** (check_bits(bits) - 1) - 1


class _LSQFakeQuantize(torch.autograd.Function):
    """``clamp(round(w / s), -Q, Q) * s`` with the straight-through estimator for
    ``round`` and LSQ's step gradient, in one op: fewer passes over the weight than
    composing it from autograd ops (it runs once per layer, subnet and step).

    Gradients: ``dL/dw = dL/dwq`` where ``|w / s| <= Q`` (else 0);
    ``dL/ds = grad_scale * sum(dL/dwq * (round(clamp(w / s)) - w / s * inside))``
    over the elements sharing a step, i.e. ``round(v) - v`` inside, ``+-Q`` outside.
    """

    @staticmethod
    def forward(ctx, weight, step, q: int, grad_scale: float):
        ctx.save_for_backward(weight, step)
        ctx.q, ctx.grad_scale = q, grad_scale
        return torch.clamp(weight / step, -q, q).round_().mul_(step)

    @staticmethod
    def backward(ctx, grad):
        weight, step = ctx.saved_tensors
        q = ctx.q
        v = weight / step
        inside = (v >= -q) & (v <= q)
        grad_w = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            per_elem = (torch.clamp(v, -q, q).round_() - v * inside).mul_(grad)
            dims = [d for d in range(weight.dim()) if step.shape[d] == 1 and weight.shape[d] != 1]
            grad_s = (per_elem.sum(dim=dims, keepdim=True) if dims else per_elem) * ctx.grad_scale
            grad_s = grad_s.sum_to_size(step.shape)
        return grad_w, grad_s, None, None


def init_step(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """LSQ initial step per output channel: ``2 * mean|w_c| / sqrt(Q)``.

    Args:
        weight: (out, ...) float weight.
    Returns:
        (out, 1, ...) step sizes, strictly positive.
    """
    w = weight.detach().reshape(weight.size(0), -1).abs().mean(dim=1)
    step = 2.0 * w / math.sqrt(qmax(bits))
    step = step.clamp_min(1e-8)
    return step.reshape((-1,) + (1,) * (weight.dim() - 1))


def fake_quantize(weight: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize ``weight`` on the symmetric ``bits`` grid (STE + LSQ).

    Args:
        weight: (out, ...) float weight (possibly a slice of a shared weight).
        step: (out, 1, ...) positive step sizes, broadcastable to ``weight``.
        bits: 2..8, or 32 for no quantization.
    Returns:
        Tensor of ``weight``'s shape whose values lie on ``step * {-Q..Q}``; the step's
        gradient is scaled by ``1 / sqrt(numel_per_channel * Q)`` (LSQ).
    """
    if bits == FULL_PRECISION:
        return weight
    q = qmax(bits)
    return _LSQFakeQuantize.apply(weight, step, q, 1.0 / math.sqrt(weight[0].numel() * q))


class _ScaleGrad(torch.autograd.Function):
    """Identity whose backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class _LSQUnitCodes(torch.autograd.Function):
    """``clamp(round(w / s), -Q, Q) * unit``: the integer codes times a power of two per output channel
    (``unit``, a constant), with the gradients that make ``codes * unit * (s / unit)`` train as
    :func:`fake_quantize` does: ``dL/dw = dL/du * unit / s`` where ``|w / s| <= Q`` (else 0), and this
    path's share of the step's gradient, ``dL/ds = -sum(dL/du * unit * (w / s) / s)`` over the elements
    inside (the other share comes through the factor ``s / unit`` the caller multiplies by)."""

    @staticmethod
    def forward(ctx, weight, step, q: int, unit: torch.Tensor):
        ctx.save_for_backward(weight, step, unit)
        ctx.q = q
        return torch.clamp(weight / step, -q, q).round_().mul_(unit)

    @staticmethod
    def backward(ctx, grad):
        weight, step, unit = ctx.saved_tensors
        v = weight / step
        inside = ((v >= -ctx.q) & (v <= ctx.q)).to(weight.dtype)
        g = grad.to(weight.dtype) * inside * (unit / step)
        grad_w = g if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad_s = (-g * v).sum_to_size(step.shape)
        return grad_w, grad_s, None, None


class _ScaleChannels(torch.autograd.Function):
    """``out * scale + bias`` per channel (``dim``), computed in float32 and returned in ``out``'s dtype;
    saves ``out`` in its own (autocast) dtype, not a float32 copy."""

    @staticmethod
    def forward(ctx, out, scale, bias, dim: int):
        shape = [1] * out.dim()
        shape[dim] = -1
        scale = scale.reshape(shape)
        y = out.float() * scale
        if bias is not None:
            y = y + bias.float().reshape(shape)
        ctx.save_for_backward(out, scale)
        ctx.has_bias, ctx.dims = bias is not None, [d for d in range(out.dim()) if d != dim % out.dim()]
        return y.to(out.dtype)

    @staticmethod
    def backward(ctx, grad):
        out, scale = ctx.saved_tensors
        g = grad.float()
        grad_out = (g * scale).to(out.dtype) if ctx.needs_input_grad[0] else None
        grad_scale = (g * out.float()).sum(ctx.dims).reshape(-1) if ctx.needs_input_grad[1] else None
        grad_bias = g.sum(ctx.dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_out, grad_scale, grad_bias, None


def scale_channels(out: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor], dim: int) -> torch.Tensor:
    """``out * scale + bias`` along channel ``dim`` of ``out`` (scale: (C, ...) broadcastable as (C,);
    bias: (C,) or None), in float32, returned in ``out``'s dtype."""
    return _ScaleChannels.apply(out, scale.reshape(-1), bias, dim)


def grid_factors(weight: torch.Tensor, step: torch.Tensor, bits: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`fake_quantize` split in two factors, for a matmul under autocast (fp16/bf16).

    ``unit_codes * scale`` (per output channel) is ``fake_quantize(weight, step, bits)``, with the same
    gradients (STE, LSQ's step gradient and its scale). ``unit_codes`` are the integer codes times a
    power of two per output channel, the one nearest the step: exact in fp16 and bf16 (``|code| <= 127``
    needs 7 significant bits, and a power of two changes only the exponent; fp16: steps above 2**-17,
    its normal range), and of the weight's magnitude, so the matmul's output keeps stock autocast's
    range. A matmul in the autocast dtype thus computes with the very grid the export stores; cast to
    bf16, the products ``code * step`` would not be (8 significant bits). The scale, ``step / unit``
    in [0.7, 1.5), stays float32 and is applied to the matmul's output (:func:`scale_channels`).

    Args:
        weight: (out, ...) float32 weight; step: (out, 1, ...) positive float32 steps; bits: 2..8.
    Returns:
        unit_codes of ``weight``'s shape (float32), scale (out, 1, ...) float32.
    """
    q = qmax(bits)
    unit = torch.exp2(torch.round(torch.log2(step.detach())))
    g = 1.0 / math.sqrt(weight[0].numel() * q)
    scaled = _ScaleGrad.apply(step, g)  # the value of step; its gradient times g (LSQ)
    return _LSQUnitCodes.apply(weight, scaled, q, unit), scaled / unit


@dataclass
class QuantizedWeight:
    """A weight on its integer grid: ``codes * step``.

    codes: (out, ...) int8 in ``-Q..Q``; step: (out,) float32; bits: 2..8.
    """

    codes: torch.Tensor
    step: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        """(out, ...) float32: exactly :func:`fake_quantize`'s output for these codes."""
        shape = (-1,) + (1,) * (self.codes.dim() - 1)
        return self.codes.float() * self.step.reshape(shape)


@torch.no_grad()
def integer_codes(weight: torch.Tensor, step: torch.Tensor, bits: int) -> QuantizedWeight:
    """The integer codes (int8) and float steps that rebuild ``fake_quantize``'s output.

    Args:
        weight: (out, ...) float weight; step: (out, 1, ...) positive steps; bits: 2..8.
    """
    q = qmax(bits)
    codes = torch.clamp((weight / step).round(), -q, q).to(torch.int8)
    return QuantizedWeight(codes, step.detach().reshape(-1).float().clone(), bits)


def _check_codes(codes: torch.Tensor, bits: int) -> int:
    q = qmax(bits)
    if codes.numel() and (int(codes.min()) < -q or int(codes.max()) > q):
        raise ValueError(f"integer codes outside the {bits}-bit grid -{q}..{q}")
    return q


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes densely, ``bits`` bits each, into bytes.

    Every code ``c`` in ``-Q..Q`` is stored as the unsigned field ``c + Q`` of
    ``bits`` bits; fields follow each other in flattened order, least significant
    bit first, with no padding but at the very end. So 4-bit codes take two per
    byte (the first in the low nibble), 8-bit codes one byte each, 2-bit codes four
    per byte, and 3/5/6/7-bit codes straddle byte boundaries.

    Args:
        codes: integer codes of any shape (e.g. from :func:`integer_codes`).
        bits: 2..8.
    Returns:
        (ceil(codes.numel() * bits / 8),) uint8.
    """
    if bits == FULL_PRECISION:
        raise ValueError("32-bit weights have no integer codes to pack")
    q = _check_codes(codes, bits)
    fields = (codes.reshape(-1).to(torch.int16) + q).to(torch.uint8)
    if bits == 8:
        return fields.clone()
    bitstream = (fields.unsqueeze(1) >> torch.arange(bits, dtype=torch.uint8)) & 1
    bitstream = torch.nn.functional.pad(bitstream.reshape(-1), (0, (-bitstream.numel()) % 8))
    weights = torch.arange(8, dtype=torch.uint8)
    return (bitstream.reshape(-1, 8) << weights).sum(dim=1, dtype=torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: (nbytes,) uint8 -> int8 codes of ``shape``."""
    if bits == FULL_PRECISION:
        raise ValueError("32-bit weights have no integer codes to unpack")
    q = qmax(bits)
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(numel * bits / 8):
        raise ValueError(
            f"{packed.numel()} {packed.dtype} bytes cannot hold {numel} {bits}-bit codes"
        )
    if bits == 8:
        fields = packed.to(torch.int16)
    else:
        bitstream = (packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1
        bitstream = bitstream.reshape(-1)[: numel * bits].reshape(numel, bits)
        fields = (bitstream.to(torch.int16) << torch.arange(bits, dtype=torch.int16)).sum(1)
    return (fields - q).to(torch.int8).reshape(tuple(shape))


PACKED_FORMAT = "espnet_allinone.packed_encoder/1"


def pack_state(state: Dict[str, torch.Tensor], quantized: Dict[str, QuantizedWeight],
               pad_to: Optional[Dict[str, Sequence[int]]] = None) -> Dict:
    """A state dict with its quantized weights stored low-bit (inverse: :func:`unpack_state`).

    Args:
        state: float32 tensors (and integer ones, e.g. ``num_batches_tracked``).
        quantized: for some keys of ``state``, the codes that rebuild that tensor.
        pad_to: for some keys, the shape :func:`unpack_state` zero-pads the stored tensor to (the
            narrower FFNs of a layer-wise subnet are stored at their own size).
    Returns:
        ``{format, index, codes, floats}``: every quantized tensor's codes packed at its
        bits (:func:`pack_codes`) in one uint8 buffer, every float32 tensor (steps
        included) in one float buffer, integer tensors as lists in ``index``.
    """
    index: List[Dict] = []
    codes: List[torch.Tensor] = []
    floats: List[torch.Tensor] = []
    n_codes = n_floats = 0

    def add_floats(t: torch.Tensor) -> int:
        nonlocal n_floats
        if t.dtype != torch.float32:
            raise ValueError(f"only float32 tensors can be packed, got {t.dtype}")
        floats.append(t.reshape(-1))
        n_floats += t.numel()
        return n_floats - t.numel()

    pad_to = pad_to or {}
    for key, value in state.items():
        if key in pad_to:
            index.append(dict(key=key, kind="pad", shape=list(pad_to[key])))
        if key in quantized:
            q = quantized[key]
            packed = pack_codes(q.codes, q.bits)
            index.append(dict(key=key, kind="codes", shape=list(q.codes.shape), bits=q.bits,
                              offset=n_codes, step_offset=add_floats(q.step)))
            codes.append(packed)
            n_codes += packed.numel()
        elif value.is_floating_point():
            index.append(dict(key=key, kind="float", shape=list(value.shape), offset=add_floats(value)))
        else:  # e.g. BatchNorm's num_batches_tracked: a few integers
            index.append(dict(key=key, kind="int", shape=list(value.shape), value=value.reshape(-1).tolist()))
    return dict(
        format=PACKED_FORMAT,
        index=index,
        codes=torch.cat(codes) if codes else torch.zeros(0, dtype=torch.uint8),
        floats=torch.cat(floats) if floats else torch.zeros(0),
    )


def unpack_state(blob: Dict) -> Tuple[Dict[str, torch.Tensor], Dict[str, QuantizedWeight]]:
    """Inverse of :func:`pack_state`: the state dict (quantized weights rebuilt as
    ``codes * step``, bit-exactly) and the codes of every quantized weight."""
    if blob.get("format") != PACKED_FORMAT:
        raise ValueError(f"not a {PACKED_FORMAT} state (format {blob.get('format')!r})")
    codes_buf, floats = blob["codes"], blob["floats"]
    state: Dict[str, torch.Tensor] = {}
    quantized: Dict[str, QuantizedWeight] = {}
    pad_to = {t["key"]: tuple(t["shape"]) for t in blob["index"] if t["kind"] == "pad"}
    for t in blob["index"]:
        shape, numel = t["shape"], math.prod(t["shape"])
        if t["kind"] == "pad":
            continue
        if t["kind"] == "codes":
            nbytes = math.ceil(numel * t["bits"] / 8)
            codes = unpack_codes(codes_buf[t["offset"]: t["offset"] + nbytes], t["bits"], shape)
            step = floats[t["step_offset"]: t["step_offset"] + shape[0]].clone()
            quantized[t["key"]] = q = QuantizedWeight(codes, step, t["bits"])
            state[t["key"]] = q.dequantize()
        elif t["kind"] == "float":
            state[t["key"]] = floats[t["offset"]: t["offset"] + numel].reshape(shape).clone()
        else:
            state[t["key"]] = torch.tensor(t["value"], dtype=torch.long).reshape(shape)
    for key, shape in pad_to.items():
        value = state[key]
        state[key] = value.new_zeros(shape)
        state[key][tuple(slice(0, n) for n in value.shape)] = value
        if key in quantized:
            q = quantized[key]
            codes = q.codes.new_zeros(shape)
            codes[tuple(slice(0, n) for n in q.codes.shape)] = q.codes
            quantized[key] = QuantizedWeight(codes, q.step, q.bits)
    return state, quantized
