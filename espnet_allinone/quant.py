"""Symmetric weight quantization: LSQ fake-quant for training, integer codes for export.

A weight ``w`` quantized to ``b`` bits with per-output-channel step ``s`` is
``clamp(round(w / s), -Q, Q) * s`` with ``Q = 2**(b-1) - 1`` (a symmetric grid of
``2Q + 1`` levels). Training uses the straight-through estimator for ``round`` and
learns ``s`` as in LSQ (Esser et al., 2020), whose gradient is scaled by
``1 / sqrt(numel_per_channel * Q)``.
"""

import math
from typing import Tuple

import torch

from espnet_allinone.subnet import FULL_PRECISION, check_bits


def qmax(bits: int) -> int:
    """Largest integer code of the symmetric ``bits`` grid (``2**(bits-1) - 1``)."""
    return 2 ** (check_bits(bits) - 1) - 1


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` exactly in the forward pass; identity gradient (STE)."""
    return x.round().detach() + (x - x.detach())


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale``."""
    y = x * scale
    return x.detach() + (y - y.detach())


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
        Tensor of ``weight``'s shape whose values lie on ``step * {-Q..Q}``.
    """
    if bits == FULL_PRECISION:
        return weight
    q = qmax(bits)
    s = _scale_grad(step, 1.0 / math.sqrt(weight[0].numel() * q))
    return _round_ste(torch.clamp(weight / s, -q, q)) * s


@torch.no_grad()
def integer_codes(
    weight: torch.Tensor, step: torch.Tensor, bits: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (int8) and float steps that rebuild ``fake_quantize``'s output."""
    q = qmax(bits)
    codes = torch.clamp((weight / step).round(), -q, q).to(torch.int8)
    return codes, step.detach().clone()
