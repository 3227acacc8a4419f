"""What every all-in-one encoder offers: choose, enter and measure a subnet.

Size accounting lives here once: :func:`measure` counts the parameters and bits of
the modules a subnet computes with, and :func:`compression_ratio` turns two such
counts into the ratio the paper's tables report. The encoders, the report and the
export all go through these two functions.
"""

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch

from espnet_allinone.elastic import (
    ElasticDepth,
    ElasticWeight,
    NeverTrainedError,
    SubnetBatchNorm1d,
    make_elastic,
    sort_units,
)
from espnet_allinone.sharing import PrefixSharing
from espnet_allinone.subnet import FULL_PRECISION, Subnet, SubnetSpace


@dataclass(frozen=True)
class SubnetSize:
    """Size of one subnet's encoder.

    params: parameters the subnet computes with (sliced weights, biases, norms; no
        step sizes); equals the parameter count of a stock encoder of that depth and width.
    bits: storage of a packed export: quantized weights at ``weight_bits``, everything
        else (biases, norms, unquantized modules, the weights' step sizes) at 32 bits.
    quantized_params: the part of ``params`` in modules whose weights are quantized.
    weight_bits: the subnet's weight bit-width (32 = float; a layer-wise subnet: the largest).
    quantized_bits: each quantized module's parameters times its bit-width, summed (default
        ``quantized_params * weight_bits``; differs for a layer-wise subnet of mixed bit-widths).
    """

    params: int
    bits: int
    quantized_params: int = 0
    weight_bits: int = FULL_PRECISION
    quantized_bits: Optional[int] = None

    def __post_init__(self):
        if self.quantized_bits is None:
            object.__setattr__(self, "quantized_bits", self.quantized_params * self.weight_bits)

    @property
    def paper_bits(self) -> int:
        """Storage as the paper's tables count it: every parameter of a quantized module
        (biases and norms included) at its bit-width, the rest at 32 bits."""
        rest = self.params - self.quantized_params
        return self.quantized_bits + FULL_PRECISION * rest


def measure(modules: Iterable[torch.nn.Module]) -> SubnetSize:
    """Size of the active configuration (width, bits) of ``modules``.

    Args:
        modules: the units of storage a subnet computes with, each yielded once
            (e.g. the subsampling, each of the first ``depth`` blocks, the final
            norm). A unit holding quantized weights counts as quantized as a whole
            in :attr:`SubnetSize.paper_bits`; so a float part (e.g. wav2vec2's CNN
            feature extractor) must be a unit of its own.
    Returns:
        SubnetSize; nothing is initialised or changed (works on ``meta`` tensors).
    """
    params = bits = quantized = quantized_bits = 0
    weight_bits = None
    for unit in modules:
        unit_params, unit_bits = 0, None
        for m in unit.modules():
            if isinstance(m, torch.nn.ParameterDict):
                continue  # step sizes: counted with their layer below
            own = dict(m.named_parameters(recurse=False))
            if isinstance(m, ElasticWeight):
                w, b = m.sliced()
                own.pop("weight")
                own.pop("bias", None)
                n_b = 0 if b is None else b.numel()
                unit_params += w.numel() + n_b
                bits += w.numel() * m.active_bits + n_b * FULL_PRECISION
                if m.active_bits != FULL_PRECISION:
                    unit_bits = max(unit_bits or 0, m.active_bits)
                    bits += w.size(0) * FULL_PRECISION  # one step per output channel
            n = sum(p.numel() for p in own.values())
            unit_params += n
            bits += n * FULL_PRECISION
        params += unit_params
        if unit_bits is not None:
            quantized += unit_params
            quantized_bits += unit_params * unit_bits
            weight_bits = max(weight_bits or 0, unit_bits)
    return SubnetSize(params=params, bits=bits, quantized_params=quantized,
                      weight_bits=weight_bits or FULL_PRECISION, quantized_bits=quantized_bits)


def compression_ratio(reference: SubnetSize, subnet: SubnetSize, storage: bool = False) -> float:
    """32-bit storage of ``reference`` (the float baseline) over the storage of ``subnet``.

    By default storage is counted as in the paper's Tables 2 and 4
    (:attr:`SubnetSize.paper_bits`); ``storage=True`` counts what a packed export
    holds (:attr:`SubnetSize.bits`: biases, norms and step sizes at 32 bits).
    """
    return FULL_PRECISION * reference.params / (subnet.bits if storage else subnet.paper_bits)


def recalibrated_key(spec: Subnet, block: int) -> Optional[str]:
    """Key of the BatchNorm statistics recalibrated for a subnet outside the space (a layer-wise one) at
    block ``block`` (0-based): they depend on the (width, bits) of blocks 1..block+1 (the subsampling runs
    at the first's bits), so subnets sharing that prefix share them. None past the subnet's depth."""
    if block >= spec.depth:
        return None
    return "p" + "_".join(f"{w}x{b}" for w, b in spec.blocks[: block + 1])


# ``ffn_order`` of every all-in-one encoder: ``l2`` orders the FFN units of loaded pretrained weights by L2
# importance (paper footnote 1), so that a narrow subnet keeps the most important units; ``keep`` never reorders
FFN_ORDERS = ("l2", "keep")


def check_ffn_order(ffn_order: str) -> str:
    if ffn_order not in FFN_ORDERS:
        raise ValueError(f"ffn_order must be one of {', '.join(FFN_ORDERS)}: {ffn_order!r}")
    return ffn_order


def is_allinone_encoder(module: Any) -> bool:
    """Whether ``module`` is an all-in-one encoder (has a subnet space to choose from)."""
    return isinstance(module, AllInOneEncoderMixin)


class AllInOneEncoderMixin:
    """Subnet selection for encoders built from ``elastic`` layers.

    A subclass calls :meth:`init_subnet_space` in its constructor, implements
    :attr:`elastic_layers` (the :class:`ElasticDepth` container whose first ``depth``
    blocks run), :meth:`subnet_modules` and :meth:`ffn_pairs`, runs its forward inside
    ``self.sharing.forward(...)`` (:class:`~espnet_allinone.sharing.PrefixSharing`, the parts a
    step's subnets share), and calls :meth:`set_subnet` once at the end of its constructor.
    """

    subnet_space: SubnetSpace

    def init_subnet_space(self, space: SubnetSpace, parts: Dict[str, torch.nn.Module]):
        """Hold ``space``: its table travels with the checkpoint (a buffer checked by
        AllInOneASRModel.load_state_dict); every Linear/Conv below ``parts`` (name prefix ->
        module) becomes elastic at the space's bit-widths; each :meth:`ffn_pairs` pair is
        sliced along its hidden units (``out`` of the first layer, ``in`` of the second)."""
        self.subnet_space = space
        self.register_buffer("subnet_space_table", space.table())
        self.sharing = PrefixSharing()
        bits = sorted({s.bits for s in space})
        for prefix, part in parts.items():
            make_elastic(part, bits, prefix, self.sharing)
        for first, second in self.ffn_pairs():
            first.width_axis, second.width_axis = "out", "in"

    def ffn_pairs(self) -> Iterable[Tuple[ElasticWeight, ElasticWeight]]:
        """(first, second) layer of every FFN whose hidden units the width slices."""
        raise NotImplementedError

    def sort_ffn_units(self):
        """Order every FFN's hidden units by L2 importance (paper footnote 1,
        :func:`~espnet_allinone.elastic.sort_units`): same function, and a width-W subnet
        keeps the W most important units of pretrained weights."""
        for first, second in self.ffn_pairs():
            sort_units(first, second)

    @property
    def elastic_layers(self) -> ElasticDepth:
        """The stack of blocks whose first ``depth`` run."""
        raise NotImplementedError

    def subnet_modules(self, spec: Subnet) -> Iterable[torch.nn.Module]:
        """The units of storage the subnet ``spec`` computes with (see :func:`measure`)."""
        raise NotImplementedError

    sharing: PrefixSharing

    def sharing_prefixes(self):
        """Context manager: one training step. Forwards of several subnets on the same input
        inside it compute what they share once (:mod:`espnet_allinone.sharing`): the parts run
        once per prefix (the subsampling per bit-width, the first k blocks per (width, bits)),
        and each layer fake-quantizes its weight once per (width, bits). AllInOneASRModel opens
        it around the subnets of a batch (``share_prefixes: true``); outside it nothing is kept."""
        return self.sharing.step()

    @property
    def active_subnet(self) -> Subnet:
        return self._active_subnet

    def _configure(self, spec: Subnet, batchnorm: bool = True):
        """Set every elastic layer to ``spec``: block i's layers to its (width, bits) (a block past
        the depth, which does not run, to the last one's), the layers outside the blocks (the
        subsampling) to ``spec.front_bits``."""
        self.elastic_layers.set_depth(spec.depth)
        blocks = list(self.elastic_layers._modules.values())
        per_block = list(spec.blocks) + [spec.blocks[-1]] * (len(blocks) - spec.depth)
        for m, i in self._configurable_modules():
            width, bits = per_block[i] if i is not None else (spec.width, spec.front_bits)
            if isinstance(m, ElasticWeight):
                m.set_active(width if m.width_axis else None, bits)
            elif batchnorm and isinstance(m, SubnetBatchNorm1d):
                # a subnet of the space uses its trained statistics; one outside them recalibrated
                own = recalibrated_key(spec, i) if i is not None and spec not in self.subnet_space.subnets else None
                key = SubnetBatchNorm1d.stats_key(Subnet.uniform(spec.depth, width, bits))
                if own in m.stats_keys:  # recalibrated for this subnet's blocks 1..i
                    key = own
                elif key not in m.stats_keys:
                    trained = ", ".join(k for k in m.stats_keys)
                    raise ValueError(
                        f"subnet {spec}: block {i + 1} (width {width}, {bits} bit) has no BatchNorm statistics "
                        f"(it has: {trained}); recalibrate them for this subnet first "
                        "(python -m espnet_allinone.bin.recalibrate)")
                m.set_active_key(key)

    def _configurable_modules(self) -> List[Tuple[torch.nn.Module, Optional[int]]]:
        """(module, index of its block or None) of every elastic layer and BatchNorm, computed once."""
        found = getattr(self, "_configurable", None)
        if found is None:
            block_of = {id(m): i for i, block in enumerate(self.elastic_layers._modules.values())
                        for m in block.modules()}
            found = [(m, block_of.get(id(m))) for m in self.modules()
                     if isinstance(m, (ElasticWeight, SubnetBatchNorm1d))]
            self._configurable = found
        return found

    def set_subnet(self, subnet: Union[None, str, Subnet] = None) -> Subnet:
        """Make ``subnet`` (name or spec; None = the largest) the one forward computes: a subnet of
        the space or a layer-wise one that fits the model (:meth:`SubnetSpace.get`).

        Raises ValueError, listing the valid names, if it is neither.
        """
        spec = self.subnet_space.get(subnet)
        self._configure(spec)
        self._active_subnet = spec
        return spec

    @contextlib.contextmanager
    def using_subnet(self, subnet: Union[None, str, Subnet]):
        """Context manager: run ``subnet``, then restore the previously active one."""
        previous = self._active_subnet
        try:
            yield self.set_subnet(subnet)
        finally:
            self.set_subnet(previous)

    def subnet_size(self, subnet: Union[None, str, Subnet] = None) -> SubnetSize:
        """Parameters and storage of ``subnet``'s encoder (None = the largest).

        ``subnet`` may also be an architecture outside the space that fits the
        encoder (e.g. ``12-2048-32bit``, the float baseline, or a separately trained
        system's shape): it is counted, never run. ValueError if it does not fit.
        """
        try:
            spec = self.subnet_space.get(subnet)
        except ValueError as e:  # outside the space: counted if it fits
            try:
                spec = Subnet.parse(subnet)
            except ValueError:
                raise e from None
        previous = self._active_subnet
        try:
            self._configure(spec, batchnorm=False)
            return measure(self.subnet_modules(spec))
        except ValueError as e:
            raise ValueError(f"{spec} does not fit this encoder: {e}") from None
        finally:
            self.set_subnet(previous)

    def never_trained(self, subnet: Union[None, str, Subnet] = None) -> List[str]:
        """What ``subnet`` (None = the active one) computes with that training never set, one
        ``"<layer>: <what>"`` each: step sizes of a bit-width no training step ran through the
        layer, BatchNorm statistics no batch updated (e.g. the subnets ``num_random_subnets: 0``
        never samples). Empty when everything it uses was trained. Reads the state, changes nothing."""
        spec = self._active_subnet if subnet is None else self.subnet_space.get(subnet)
        names = {id(m): n for n, m in self.named_modules()}
        found = []
        with self.using_subnet(spec):
            for unit in self.subnet_modules(spec):
                for m in unit.modules():
                    if isinstance(m, (ElasticWeight, SubnetBatchNorm1d)):
                        what = m.never_trained()
                        if what:
                            found.append(f"{names[id(m)]}: {what}")
        return found

    def check_trained(self, subnet: Union[None, str, Subnet] = None, allow_untrained: bool = False) -> List[str]:
        """Refuse a subnet that computes with never-trained state (:meth:`never_trained`):
        :class:`~espnet_allinone.elastic.NeverTrainedError` naming the subnet, the layers, what
        was never trained and the ways out. With ``allow_untrained`` it is a warning instead,
        and never-trained step sizes are initialised from the weights (LSQ's rule); never-updated
        BatchNorm statistics stay at their initial values. Returns what was never trained."""
        spec = self._active_subnet if subnet is None else self.subnet_space.get(subnet)
        parts = self.never_trained(spec)
        if not parts:
            return parts
        listed = "; ".join(parts[:4]) + (f"; and {len(parts) - 4} more" if len(parts) > 4 else "")
        if not allow_untrained:
            ways = []
            if any("step sizes" in p for p in parts):
                ways.append("train with a subnet sampling that reaches it (e.g. num_random_subnets >= 1)")
            elif any("BatchNorm" in p for p in parts):  # statistics alone: recalibration sets them
                ways.append(f"estimate its BatchNorm statistics with python -m espnet_allinone.bin.recalibrate "
                            f"--subnet {spec}")
            ways.append("or pass --allow_untrained (allow_untrained=True) to use it anyway: never-trained step "
                        "sizes initialised from the weights, BatchNorm statistics at their initial values")
            raise NeverTrainedError(
                f"subnet {spec} computes with state that training never set: {listed}. "
                f"Ways out: {'; '.join(ways)}")
        logging.warning(f"subnet {spec} uses never-trained state (allowed): {listed}")
        with self.using_subnet(spec):
            for unit in self.subnet_modules(spec):
                for m in unit.modules():
                    # steps never initialised; those of channels beyond the trained width keep the
                    # values the training's initialisation gave every channel
                    bits = getattr(m, "active_bits", FULL_PRECISION)
                    if isinstance(m, ElasticWeight) and bits != FULL_PRECISION and not m.steps_ready(bits):
                        m.init_steps(bits)
        return parts

    @torch.no_grad()
    def recalibrate_batchnorm(self, subnet: Union[str, Subnet],
                              batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Estimate BatchNorm statistics for ``subnet`` from ``batches`` of (B, T, D) features and (B,)
        lengths (as OFA and US-Nets do: a few hundred training utterances, the cumulative average of every
        batch's statistics); no other statistics or weights change. Returns the number of batches seen.

        A layer-wise subnet gets statistics of its own under :func:`recalibrated_key`, so that they travel
        with the state dict and serve every subnet sharing the blocks' prefix. A uniform subnet of the space
        gets the statistics that training never updated (:meth:`never_trained`), in place; one whose
        statistics were all trained is refused.
        """
        spec = self.subnet_space.get(subnet)
        blocks = list(self.elastic_layers._modules.values())[: spec.depth]
        norms = []
        if spec not in self.subnet_space.subnets:
            for i, block in enumerate(blocks):
                for m in block.modules():
                    if isinstance(m, SubnetBatchNorm1d):
                        m.add_stats(recalibrated_key(spec, i))
                        norms.append((m, m.momentum, m.training))
        else:
            steps = [p for p in self.never_trained(spec) if "step sizes" in p]
            if steps:
                raise NeverTrainedError(
                    f"{spec}: recalibration estimates BatchNorm statistics, but the subnet's step sizes were "
                    f"never trained either: {'; '.join(steps[:3])}{'; ...' if len(steps) > 3 else ''}")
            with self.using_subnet(spec):
                norms = [(m, m.momentum, m.training) for block in blocks for m in block.modules()
                         if isinstance(m, SubnetBatchNorm1d) and m.never_trained()]
        if not norms:
            raise ValueError(f"{spec} is a subnet of the space whose BatchNorm statistics were all trained")
        previous, training = self._active_subnet, self.training
        self.eval()
        try:
            self.set_subnet(spec)
            for m, _, _ in norms:
                m.momentum = None  # cumulative average over the batches
                m.train()
            n = 0
            for feats, lengths in batches:
                self(feats, lengths)
                n += 1
        finally:
            for m, momentum, was_training in norms:
                m.momentum = momentum
                m.train(was_training)
            self.train(training)
            self.set_subnet(previous)
        if n == 0:
            raise ValueError("recalibration needs at least one batch")
        return n

    def compression_ratio(
        self, subnet: Union[None, str, Subnet] = None, storage: bool = False
    ) -> float:
        """:func:`compression_ratio` of ``subnet`` against the float largest encoder."""
        reference = self.subnet_size(self.subnet_space.largest)
        return compression_ratio(reference, self.subnet_size(subnet), storage=storage)
