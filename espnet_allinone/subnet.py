"""Subnet names and subnet spaces.

A subnet of an all-in-one encoder is named ``DEPTH-WIDTH-BITSbit`` exactly as in the
paper's tables, e.g. ``12-1024-4bit``: the first 12 blocks, the first 1024 FFN
intermediate units, weights fake-quantized to 4 bits (``32bit`` = not quantized).

This module is the one place where such names are parsed and formatted; everything
downstream receives a :class:`SubnetSpec`.
"""

import itertools
import random
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

FULL_PRECISION = 32
MIN_BITS = 2
MAX_BITS = 8

_NAME_RE = re.compile(r"^\s*(\d+)-(\d+)-(\d+)bit\s*$")


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported weight bit-width (2..8 or 32)."""
    if bits != FULL_PRECISION and not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"unsupported bit-width {bits}: use {MIN_BITS}..{MAX_BITS} "
            f"or {FULL_PRECISION} (= not quantized)"
        )
    return bits


@dataclass(frozen=True, order=True)
class SubnetSpec:
    """One nested system: ``depth`` blocks, FFN ``width`` units, ``bits`` per weight."""

    depth: int
    width: int
    bits: int

    def __post_init__(self):
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"depth and width must be positive: {self!r}")
        check_bits(self.bits)

    @classmethod
    def parse(cls, name: Union[str, "SubnetSpec"]) -> "SubnetSpec":
        """Parse ``"12-1024-4bit"``; a SubnetSpec is returned unchanged."""
        if isinstance(name, SubnetSpec):
            return name
        m = _NAME_RE.match(str(name))
        if m is None:
            raise ValueError(
                f"malformed subnet name {name!r}: expected DEPTH-WIDTH-BITSbit, "
                "e.g. '12-1024-4bit' ('32bit' = not quantized)"
            )
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    @property
    def name(self) -> str:
        return f"{self.depth}-{self.width}-{self.bits}bit"

    @property
    def quantized(self) -> bool:
        return self.bits != FULL_PRECISION

    def __str__(self) -> str:
        return self.name


class SubnetSpace:
    """The set of subnets an all-in-one model is trained to contain.

    Built either from explicit names or as the grid ``depths x widths x bits``.
    The space must contain its largest member (max depth, width and bits): the
    paper's ``L_max`` term trains it.

    Args:
        subnets: explicit names, e.g. ``["12-2048-8bit", "8-1024-4bit"]``.
        depths, widths, bits: grid axes (used when ``subnets`` is None).
        num_blocks, linear_units: the encoder's size; members must fit in it.
    """

    def __init__(
        self,
        subnets: Optional[Sequence[Union[str, SubnetSpec]]] = None,
        depths: Optional[Sequence[int]] = None,
        widths: Optional[Sequence[int]] = None,
        bits: Optional[Sequence[int]] = None,
        num_blocks: Optional[int] = None,
        linear_units: Optional[int] = None,
    ):
        if subnets is not None:
            if depths or widths or bits:
                raise ValueError("give either `subnets` or depths/widths/bits, not both")
            specs = [SubnetSpec.parse(s) for s in subnets]
        else:
            depths = list(depths or [num_blocks])
            widths = list(widths or [linear_units])
            bits = list(bits or [FULL_PRECISION])
            if None in depths or None in widths:
                raise ValueError("depths/widths need num_blocks/linear_units defaults")
            specs = [
                SubnetSpec(d, w, b) for d, w, b in itertools.product(depths, widths, bits)
            ]
        if not specs:
            raise ValueError("a subnet space needs at least one subnet")
        # Sorted largest first; duplicates removed.
        self.subnets: Tuple[SubnetSpec, ...] = tuple(sorted(set(specs), reverse=True))
        for s in self.subnets:
            if num_blocks is not None and s.depth > num_blocks:
                raise ValueError(
                    f"subnet {s} is deeper than the encoder (num_blocks={num_blocks})"
                )
            if linear_units is not None and s.width > linear_units:
                raise ValueError(
                    f"subnet {s} is wider than the encoder (linear_units={linear_units})"
                )
        top = SubnetSpec(
            max(s.depth for s in self.subnets),
            max(s.width for s in self.subnets),
            max(s.bits for s in self.subnets),
        )
        if top not in self.subnets:
            raise ValueError(
                f"the space must contain its largest subnet {top}; got {self.names}"
            )
        self.largest = top
        # Smallest by weight volume (depth * width * bits), ties broken by name order.
        self.smallest = min(self.subnets, key=lambda s: (s.depth * s.width * s.bits, s))

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.subnets]

    @property
    def float_baseline(self) -> SubnetSpec:
        """The uncompressed system the subnets are compared with: the largest depth and
        width at 32 bits (e.g. ``12-2048-32bit``; it need not be in the space)."""
        return SubnetSpec(self.largest.depth, self.largest.width, FULL_PRECISION)

    def __len__(self) -> int:
        return len(self.subnets)

    def __iter__(self):
        return iter(self.subnets)

    def __contains__(self, spec) -> bool:
        try:
            return SubnetSpec.parse(spec) in self.subnets
        except ValueError:
            return False

    def __repr__(self) -> str:
        return f"SubnetSpace({self.names})"

    def get(self, subnet: Union[None, str, SubnetSpec]) -> SubnetSpec:
        """Parse and validate ``subnet`` (None = the largest); ValueError lists the space."""
        if subnet is None:
            return self.largest
        try:
            spec = SubnetSpec.parse(subnet)
        except ValueError as e:
            raise ValueError(f"{e}; valid subnets: {', '.join(self.names)}") from None
        if spec not in self.subnets:
            raise ValueError(
                f"subnet {spec} is not in this model's subnet space; "
                f"valid subnets: {', '.join(self.names)}"
            )
        return spec

    def sample(
        self, strategy: str = "sandwich", num_random: int = 1, rng: Optional[random.Random] = None
    ) -> List[SubnetSpec]:
        """Subnets to train in one step, the largest first.

        ``all``: every subnet. ``sandwich``: largest + smallest + ``num_random``
        distinct others drawn uniformly (the paper's Table 2 setting with 1).
        """
        if strategy == "all":
            return list(self.subnets)
        if strategy != "sandwich":
            raise ValueError(f"unknown sampling strategy {strategy!r}: use all|sandwich")
        fixed, rest = self._sandwich_parts()
        return fixed + (rng or random).sample(rest, min(num_random, len(rest)))

    def sandwich_draws(self, num_random: int = 1) -> List[List[SubnetSpec]]:
        """Every list ``sample("sandwich", num_random)`` can return (as sets; all equally
        likely), e.g. to average a per-step cost over the sampling rule."""
        fixed, rest = self._sandwich_parts()
        return [fixed + list(c) for c in itertools.combinations(rest, min(num_random, len(rest)))]

    def _sandwich_parts(self) -> Tuple[List[SubnetSpec], List[SubnetSpec]]:
        """(largest [+ smallest], the others), the two parts of a sandwich step."""
        fixed = [self.largest] + ([self.smallest] if self.smallest != self.largest else [])
        return fixed, [s for s in self.subnets if s not in fixed]

    @classmethod
    def from_encoder_conf(cls, encoder_conf: Dict[str, Any]) -> "SubnetSpace":
        """The space an ``encoder_conf`` (of a training YAML) declares."""
        return cls(
            encoder_conf.get("subnets"),
            encoder_conf.get("subnet_depths"),
            encoder_conf.get("subnet_widths"),
            encoder_conf.get("subnet_bits"),
            num_blocks=encoder_conf.get("num_blocks"),
            linear_units=encoder_conf.get("linear_units"),
        )

    def table(self) -> torch.Tensor:
        """(N, 3) float tensor of (depth, width, bits), the largest first: stored in
        checkpoints (a float buffer, so that ESPnet's checkpoint averaging keeps it)."""
        return torch.tensor([[s.depth, s.width, s.bits] for s in self.subnets], dtype=torch.float)

    @staticmethod
    def names_of_table(table: torch.Tensor) -> List[str]:
        """Subnet names stored by :meth:`table`."""
        return [SubnetSpec(d, w, b).name for d, w, b in table.float().round().long().tolist()]

    def attributes_compressed(self, spec: SubnetSpec) -> Iterable[str]:
        """Which attributes (depth/width/bits) ``spec`` reduces w.r.t. the largest."""
        for attr in ("depth", "width", "bits"):
            if getattr(spec, attr) < getattr(self.largest, attr):
                yield attr
