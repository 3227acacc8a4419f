"""What every all-in-one encoder offers: choose, enter and measure a subnet."""

import contextlib
from dataclasses import dataclass
from typing import Iterable, Optional, Union

import torch

from espnet_allinone.elastic import ElasticSequential, ElasticWeight, SubnetBatchNorm1d
from espnet_allinone.subnet import FULL_PRECISION, SubnetSpace, SubnetSpec


@dataclass(frozen=True)
class SubnetSize:
    """Size of one subnet's encoder.

    params: parameters the subnet computes with (sliced weights, biases, norms);
        equals the parameter count of a stock encoder of that depth and width.
    bits: storage of those parameters, quantized weights at the subnet's bit-width,
        everything else (biases, norms, and the weights' step sizes) at 32 bits.
    """

    params: int
    bits: int


class AllInOneEncoderMixin:
    """Subnet selection for encoders built from ``elastic`` layers.

    A subclass sets ``self.subnet_space``, implements :attr:`elastic_layers` (the
    :class:`ElasticSequential` whose first ``depth`` blocks run) and
    :meth:`subnet_modules`, and calls :meth:`set_subnet` once at the end of its
    constructor.
    """

    subnet_space: SubnetSpace

    @property
    def elastic_layers(self) -> ElasticSequential:
        """The stack of blocks whose first ``depth`` run."""
        raise NotImplementedError

    def subnet_modules(self, spec: SubnetSpec) -> Iterable[torch.nn.Module]:
        """Top-level modules the subnet ``spec`` computes with (for counting)."""
        raise NotImplementedError

    @property
    def active_subnet(self) -> SubnetSpec:
        return self._active_subnet

    def set_subnet(self, subnet: Union[None, str, SubnetSpec] = None) -> SubnetSpec:
        """Make ``subnet`` (name or spec; None = the largest) the one forward computes.

        Raises ValueError, listing the valid names, if it is not in the space.
        """
        spec = self.subnet_space.get(subnet)
        self.elastic_layers.set_depth(spec.depth)
        for m in self.modules():
            if isinstance(m, ElasticWeight):
                m.set_active(spec.width if m.width_axis else None, spec.bits)
            elif isinstance(m, SubnetBatchNorm1d):
                m.set_active(spec.name)
        self._active_subnet = spec
        return spec

    @contextlib.contextmanager
    def using_subnet(self, subnet: Union[None, str, SubnetSpec]):
        """Context manager: run ``subnet``, then restore the previously active one."""
        previous = self._active_subnet
        try:
            yield self.set_subnet(subnet)
        finally:
            self.set_subnet(previous)

    def subnet_size(self, subnet: Union[None, str, SubnetSpec] = None) -> SubnetSize:
        """Parameter count and weight storage (bits) of ``subnet``'s encoder."""
        spec = self.subnet_space.get(subnet)
        params = bits = 0
        with self.using_subnet(spec):
            for top in self.subnet_modules(spec):
                for m in top.modules():
                    if isinstance(m, torch.nn.ParameterDict):
                        continue  # step sizes: counted with their layer below
                    own = dict(m.named_parameters(recurse=False))
                    if isinstance(m, ElasticWeight):
                        w, b = m.sliced()
                        own.pop("weight")
                        own.pop("bias", None)
                        params += w.numel()
                        bits += w.numel() * m.active_bits
                        if b is not None:
                            params += b.numel()
                            bits += b.numel() * FULL_PRECISION
                        step = m.active_step()
                        if step is not None:
                            bits += step.numel() * FULL_PRECISION
                    n = sum(p.numel() for p in own.values())
                    params += n
                    bits += n * FULL_PRECISION
        return SubnetSize(params=params, bits=bits)

    def compression_ratio(self, subnet: Union[None, str, SubnetSpec] = None) -> float:
        """Storage of the float (32-bit) largest encoder over that of ``subnet``."""
        largest = self.subnet_size(None).params
        return largest * FULL_PRECISION / self.subnet_size(subnet).bits
