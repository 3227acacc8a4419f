"""Symmetric weight quantization: LSQ fake-quant for training; integer codes and their
packing for export.

A weight ``w`` quantized to ``b`` bits with per-output-channel step ``s`` is
``clamp(round(w / s), -Q, Q) * s`` with ``Q = 2**(b-1) - 1`` (a symmetric grid of
``2Q + 1`` levels). Training uses the straight-through estimator for ``round`` and
learns ``s`` as in LSQ (Esser et al., 2020), whose gradient is scaled by
``1 / sqrt(numel_per_channel * Q)``.
"""

import math
from typing import Sequence, Tuple

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


@torch.no_grad()
def integer_codes(
    weight: torch.Tensor, step: torch.Tensor, bits: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (int8) and float steps that rebuild ``fake_quantize``'s output."""
    q = qmax(bits)
    codes = torch.clamp((weight / step).round(), -q, q).to(torch.int8)
    return codes, step.detach().clone()


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
