"""Subnet names and subnet spaces.

A subnet of an all-in-one encoder is named ``DEPTH-WIDTH-BITSbit`` exactly as in the
paper's tables, e.g. ``12-1024-4bit``: the first 12 blocks, the first 1024 FFN
intermediate units, weights fake-quantized to 4 bits (``32bit`` = not quantized).

A layer-wise subnet gives each of its blocks its own FFN width and bit-width:
``DEPTH:WIDTHxBITS,WIDTHxBITS,...``, one entry per block, ``*N`` repeating an entry, e.g.
``6:576x8,576x8,288x4*4`` (blocks 1-2 at width 576 and 8 bits, blocks 3-6 at 288 and 4 bits).
The subsampling runs at the first block's bit-width. A layer-wise name whose blocks are all
alike names the uniform subnet.

This module is the one place where such names are parsed and formatted; everything
downstream receives a :class:`Subnet`.
"""

import functools
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
_LAYERWISE_RE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")
_BLOCK_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*(?:\*\s*(\d+))?\s*$")


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported weight bit-width (2..8 or 32)."""
    if bits != FULL_PRECISION and not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"unsupported bit-width {bits}: use {MIN_BITS}..{MAX_BITS} "
            f"or {FULL_PRECISION} (= not quantized)"
        )
    return bits


@functools.total_ordering
@dataclass(frozen=True)
class Subnet:
    """One nested system: the (FFN width, bits) of each of its ``depth`` blocks, ``blocks[i]`` for
    block i + 1 (the encoder's first ``depth`` blocks run).

    A uniform subnet (every block alike, :meth:`uniform`) is named ``DEPTH-WIDTH-BITSbit``; any other
    ``DEPTH:WIDTHxBITS,...`` (:attr:`name`). ``width`` and ``bits`` are the largest over the blocks
    (the stock encoder that holds it); the subsampling runs at ``front_bits``, the first block's.
    Ordered by (depth, width, bits), then blocks: sorting a space puts the largest last.
    """

    blocks: Tuple[Tuple[int, int], ...]

    def __post_init__(self):
        if not self.blocks:
            raise ValueError("a subnet needs at least one block")
        for width, bits in self.blocks:
            if width < 1:
                raise ValueError(f"block width must be positive: {width}")
            check_bits(bits)

    @classmethod
    def uniform(cls, depth: int, width: int, bits: int) -> "Subnet":
        """``depth`` blocks at FFN ``width`` and ``bits`` each: ``DEPTH-WIDTH-BITSbit``."""
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive: {depth}-{width}-{bits}bit")
        return cls(((width, bits),) * depth)

    @classmethod
    def parse(cls, name: Union[str, "Subnet"]) -> "Subnet":
        """Parse ``"12-1024-4bit"`` or ``"6:576x8,576x8,288x4*4"`` (``*N``: N blocks alike); a Subnet
        is returned unchanged. A layer-wise name whose blocks are all alike is that uniform subnet."""
        if isinstance(name, Subnet):
            return name
        if ":" not in str(name):
            m = _NAME_RE.match(str(name))
            if m is None:
                raise ValueError(
                    f"malformed subnet name {name!r}: expected DEPTH-WIDTH-BITSbit, "
                    "e.g. '12-1024-4bit' ('32bit' = not quantized), or DEPTH:WIDTHxBITS,... per block"
                )
            return cls.uniform(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        m = _LAYERWISE_RE.match(str(name))
        syntax = ("expected DEPTH:WIDTHxBITS,WIDTHxBITS,... with one entry per block (*N repeats one), "
                  "e.g. '6:576x8,576x8,288x4*4'")
        if m is None:
            raise ValueError(f"malformed layer-wise subnet name {name!r}: {syntax}")
        blocks = []
        for entry in m.group(2).split(","):
            b = _BLOCK_RE.match(entry)
            if b is None:
                raise ValueError(f"malformed block {entry!r} in {name!r}: {syntax}")
            blocks += [(int(b.group(1)), int(b.group(2)))] * int(b.group(3) or 1)
        if len(blocks) != int(m.group(1)):
            raise ValueError(f"{name!r} names depth {m.group(1)} but gives {len(blocks)} blocks: {syntax}")
        return cls(tuple(blocks))

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def width(self) -> int:
        return max(w for w, _ in self.blocks)

    @property
    def bits(self) -> int:
        return max(b for _, b in self.blocks)

    @property
    def front_bits(self) -> int:
        """Bit-width of the layers before the blocks (the subsampling): the first block's."""
        return self.blocks[0][1]

    @property
    def quantized(self) -> bool:
        return any(b != FULL_PRECISION for _, b in self.blocks)

    @property
    def is_uniform(self) -> bool:
        """Whether every block has the same (width, bits)."""
        return len(set(self.blocks)) == 1

    @property
    def name(self) -> str:
        if self.is_uniform:
            return f"{self.depth}-{self.width}-{self.bits}bit"
        runs = [(block, len(list(group))) for block, group in itertools.groupby(self.blocks)]
        return f"{self.depth}:" + ",".join(f"{w}x{b}" + (f"*{n}" if n > 1 else "") for (w, b), n in runs)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Subnet({self.name!r})"

    def _key(self) -> Tuple:
        return (self.depth, self.width, self.bits, self.blocks)

    def __lt__(self, other: "Subnet") -> bool:
        if not isinstance(other, Subnet):
            return NotImplemented
        return self._key() < other._key()


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
        subnets: Optional[Sequence[Union[str, Subnet]]] = None,
        depths: Optional[Sequence[int]] = None,
        widths: Optional[Sequence[int]] = None,
        bits: Optional[Sequence[int]] = None,
        num_blocks: Optional[int] = None,
        linear_units: Optional[int] = None,
    ):
        if subnets is not None:
            if depths or widths or bits:
                raise ValueError("give either `subnets` or depths/widths/bits, not both")
            specs = [Subnet.parse(s) for s in subnets]
            layerwise = [str(s) for s in specs if not s.is_uniform]
            if layerwise:
                raise ValueError(f"a subnet space holds uniform subnets (DEPTH-WIDTH-BITSbit): {layerwise}")
        else:
            depths = list(depths or [num_blocks])
            widths = list(widths or [linear_units])
            bits = list(bits or [FULL_PRECISION])
            if None in depths or None in widths:
                raise ValueError("depths/widths need num_blocks/linear_units defaults")
            specs = [
                Subnet.uniform(d, w, b) for d, w, b in itertools.product(depths, widths, bits)
            ]
        if not specs:
            raise ValueError("a subnet space needs at least one subnet")
        # Sorted largest first; duplicates removed.
        self.subnets: Tuple[Subnet, ...] = tuple(sorted(set(specs), reverse=True))
        for s in self.subnets:
            if num_blocks is not None and s.depth > num_blocks:
                raise ValueError(
                    f"subnet {s} is deeper than the encoder (num_blocks={num_blocks})"
                )
            if linear_units is not None and s.width > linear_units:
                raise ValueError(
                    f"subnet {s} is wider than the encoder (linear_units={linear_units})"
                )
        top = Subnet.uniform(
            max(s.depth for s in self.subnets),
            max(s.width for s in self.subnets),
            max(s.bits for s in self.subnets),
        )
        if top not in self.subnets:
            raise ValueError(
                f"the space must contain its largest subnet {top}; got {self.names}"
            )
        self.largest = top
        self.num_blocks, self.linear_units = num_blocks, linear_units
        # Smallest by weight volume (depth * width * bits), ties broken by name order.
        self.smallest = min(self.subnets, key=lambda s: (s.depth * s.width * s.bits, s))

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.subnets]

    @property
    def float_baseline(self) -> Subnet:
        """The uncompressed system the subnets are compared with: the largest depth and
        width at 32 bits (e.g. ``12-2048-32bit``; it need not be in the space)."""
        return Subnet.uniform(self.largest.depth, self.largest.width, FULL_PRECISION)

    def __len__(self) -> int:
        return len(self.subnets)

    def __iter__(self):
        return iter(self.subnets)

    def __contains__(self, spec) -> bool:
        try:
            return Subnet.parse(spec) in self.subnets
        except ValueError:
            return False

    def __repr__(self) -> str:
        return f"SubnetSpace({self.names})"

    def get(self, subnet: Union[None, str, Subnet]) -> Subnet:
        """Parse and validate ``subnet`` (None = the largest); ValueError lists the space.

        A ``DEPTH-WIDTH-BITSbit`` name must be a subnet of the space. A layer-wise name or a
        :class:`Subnet` outside the space is valid when it fits the encoder (depth <= num_blocks,
        widths <= linear_units) and every block's bit-width is one of the space's (the trained step
        sizes); whether its blocks' BatchNorm statistics exist is the encoder's check.
        """
        if subnet is None:
            return self.largest
        try:
            spec = Subnet.parse(subnet)
        except ValueError as e:
            raise ValueError(f"{e}; valid subnets: {', '.join(self.names)}") from None
        if spec in self.subnets:
            return spec
        if isinstance(subnet, str) and ":" not in subnet:
            raise ValueError(
                f"subnet {spec} is not in this model's subnet space; "
                f"valid subnets: {', '.join(self.names)}"
            )
        problems = []
        if self.num_blocks is not None and spec.depth > self.num_blocks:
            problems.append(f"depth {spec.depth} > num_blocks {self.num_blocks}")
        widths = sorted({w for w, _ in spec.blocks if self.linear_units is not None and w > self.linear_units})
        if widths:
            problems.append(f"widths {widths} > linear_units {self.linear_units}")
        bits = sorted({b for _, b in spec.blocks if b not in self.bit_widths})
        if bits:
            problems.append(f"bit-widths {bits} not trained (step sizes exist for {self.bit_widths})")
        if problems:
            raise ValueError(f"layer-wise subnet {spec} does not fit this model: {'; '.join(problems)}")
        return spec

    @property
    def bit_widths(self) -> List[int]:
        return sorted({s.bits for s in self.subnets})

    def sample(
        self, strategy: str = "sandwich", num_random: int = 1, rng: Optional[random.Random] = None
    ) -> List[Subnet]:
        """Subnets to train in one step, the largest first.

        ``all``: every subnet. ``sandwich``: largest + smallest + ``num_random``
        distinct others drawn uniformly (the paper's Table 2 setting with 1).
        ``sandwich_layerwise``: largest + smallest + ``num_random`` :meth:`random_layerwise` draws.
        """
        if strategy == "all":
            return list(self.subnets)
        fixed, rest = self._sandwich_parts()
        if strategy == "sandwich_layerwise":  # OFA-style: the random slots draw layer-wise subnets
            return fixed + [self.random_layerwise(rng) for _ in range(num_random)]
        if strategy != "sandwich":
            raise ValueError(f"unknown sampling strategy {strategy!r}: use all|sandwich|sandwich_layerwise")
        return fixed + (rng or random).sample(rest, min(num_random, len(rest)))

    def random_layerwise(self, rng: Optional[random.Random] = None) -> Subnet:
        """A layer-wise subnet drawn uniformly: a depth of the space, each block one of the space's
        (width, bits) pairs (whose step sizes and BatchNorm statistics the model trains); canonical form."""
        rng = rng or random
        pairs = sorted({(s.width, s.bits) for s in self.subnets})
        depth = rng.choice(sorted({s.depth for s in self.subnets}))
        return self.get(Subnet(tuple(rng.choice(pairs) for _ in range(depth))))

    def sandwich_draws(self, num_random: int = 1) -> List[List[Subnet]]:
        """Every list ``sample("sandwich", num_random)`` can return (as sets; all equally
        likely), e.g. to average a per-step cost over the sampling rule."""
        fixed, rest = self._sandwich_parts()
        return [fixed + list(c) for c in itertools.combinations(rest, min(num_random, len(rest)))]

    def _sandwich_parts(self) -> Tuple[List[Subnet], List[Subnet]]:
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
        return [Subnet.uniform(d, w, b).name for d, w, b in table.float().round().long().tolist()]

    def attributes_compressed(self, spec: Subnet) -> Iterable[str]:
        """Which attributes (depth/width/bits) ``spec`` reduces w.r.t. the largest (a layer-wise
        subnet: in any of its blocks)."""
        if spec.depth < self.largest.depth:
            yield "depth"
        if min(w for w, _ in spec.blocks) < self.largest.width:
            yield "width"
        if min(b for _, b in spec.blocks) < self.largest.bits:
            yield "bits"
