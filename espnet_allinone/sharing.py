"""What the subnets of one training step compute alike, computed once.

AllInOneASRModel encodes one batch with several subnets in a step (Eq. 4). An encoder part
(the subsampling, a block) computes a function of that batch and of the configuration of the
parts that ran up to it, its *prefix*: subnets of equal bits agree on the subsampling, subnets
of equal (width, bits) on their first blocks. :class:`PrefixSharing` is a step's memo of part
outputs keyed by that prefix, and of fake-quantized weights keyed by (layer, width, bits).

The encoder opens it around a step (:meth:`PrefixSharing.step`) and around each forward on the
step's batch (:meth:`PrefixSharing.forward`); the parts run through :meth:`PrefixSharing.call`:
a block of an :class:`~espnet_allinone.elastic.ElasticDepth` stack as the stock encoder loops
over it (:class:`PrefixCall`), a subsampling stage as the stock encoder calls it (a
:class:`PrefixSequential`, or an elastic layer with ``prefix_part``), wav2vec2's front end. A part
that does not run (layer drop) is not in the prefix of the parts after it. Outside a step every
call computes. Autograd sees one graph, so gradients are those of computing each subnet alone; a
shared part draws its dropout masks once.
"""

import contextlib
import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch


def active_configuration(module: Optional[torch.nn.Module]) -> Tuple:
    """What the elastic layers below ``module`` are set to compute, each layer's ``configuration()``:
    (width, bits) of a weight layer, the statistics key of a BatchNorm (host-side, no device read)."""
    if module is None:
        return ()
    return tuple(m.configuration() for m in module.modules() if hasattr(m, "configuration"))


def _mode() -> Tuple:
    """What else decides a part's output: whether autograd records, and autocast per device."""
    autocast = tuple((torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda"))
    return (torch.is_grad_enabled(), autocast)


def _versions(out: Any) -> List[int]:
    if isinstance(out, torch.Tensor):
        return [out._version]
    if isinstance(out, (tuple, list)):
        return [v for o in out for v in _versions(o)]
    return []


class _Step:
    """A step's state (one per thread): part outputs by prefix, reused values by key, the batch
    the part outputs were computed from, and the prefix of the forward running now."""

    def __init__(self):
        self.parts: Dict[Tuple, Tuple[Any, List[int], List]] = {}
        self.values: Dict[Hashable, Any] = {}
        self.batch: Tuple[torch.Tensor, ...] = ()
        self.batch_versions: Tuple[int, ...] = ()
        self.prefix: Optional[Tuple] = None  # None: no forward on the batch is running


class PrefixSharing:
    """The memo of one training step (see the module docstring). One per encoder; the state is
    per thread, so ``torch.nn.DataParallel``'s replicas, which share this object, keep their own."""

    def __init__(self):
        self._local = threading.local()

    @property
    def _step(self) -> Optional[_Step]:
        return getattr(self._local, "step", None)

    @property
    def in_step(self) -> bool:
        return self._step is not None

    @property
    def in_forward(self) -> bool:
        """Whether a forward on the step's batch is running (its parts are shared)."""
        step = self._step
        return step is not None and step.prefix is not None

    @contextlib.contextmanager
    def step(self):
        """Share, until the context closes, what the forwards in it compute alike."""
        previous, self._local.step = self._step, _Step()
        try:
            yield
        finally:
            self._local.step = previous

    @contextlib.contextmanager
    def forward(self, batch: Sequence[torch.Tensor], training: bool, front: Hashable = ()):
        """One encoder forward on ``batch`` (the encoder's input tensors) in training mode or not,
        whose modules before its first part are configured as ``front`` says. Inside a step, a batch
        that is not the very tensors of the previous forward (the same objects, unmodified) starts
        the memo of part outputs anew."""
        step = self._step
        if step is None:
            yield
            return
        batch, versions = tuple(batch), tuple(t._version for t in batch)
        same = len(batch) == len(step.batch) and all(a is b for a, b in zip(batch, step.batch))
        if not same or versions != step.batch_versions:
            step.parts.clear()
            step.batch, step.batch_versions = batch, versions  # held: the objects stay distinct
        previous, step.prefix = step.prefix, (training, _mode(), front)
        try:
            yield
        finally:
            step.prefix = previous

    def call(self, part: str, module: Optional[torch.nn.Module], fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``, the output of ``part`` (computed by ``module``), or inside a forward
        on the step's batch the output an earlier forward computed for the same prefix. A reused
        output updates the BatchNorm running statistics in ``module`` again, with the batch
        statistics of the call that computed it, so they are updated as often as without sharing."""
        step = self._step
        if step is None or step.prefix is None:
            return fn(*args, **kwargs)
        key = step.prefix + ((part, active_configuration(module)),)
        step.prefix = key
        hit = step.parts.get(key)
        if hit is not None and _versions(hit[0]) == hit[1]:  # not modified in place since
            for norm, update in hit[2]:
                norm.repeat_update(update)
            return hit[0]
        norms = [m for m in module.modules() if hasattr(m, "repeat_update")] if module is not None else []
        for norm in norms:
            norm.updates = []
        try:
            out = fn(*args, **kwargs)
            updates = [(norm, u) for norm in norms for u in norm.updates]
        finally:
            for norm in norms:
                norm.updates = None
        step.parts[key] = (out, _versions(out), updates)
        return out

    def reuse(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per step for ``key`` (e.g. a layer's fake-quantized weight
        at one (width, bits): the weights do not change within a step); outside a step, every time."""
        step = self._step
        if step is None:
            return compute()
        if key not in step.values:
            step.values[key] = compute()
        return step.values[key]

    def __getstate__(self):  # a copy or an unpickled encoder starts outside a step
        return {}

    def __setstate__(self, state):
        self.__init__()


class PrefixCall:
    """A block as an :class:`~espnet_allinone.elastic.ElasticDepth` stack yields it to the
    encoder's loop inside a forward on the step's batch: calling it calls the block through
    :meth:`PrefixSharing.call`."""

    def __init__(self, sharing: PrefixSharing, part: str, block: torch.nn.Module):
        self.sharing, self.part, self.block = sharing, part, block

    def __call__(self, *args, **kwargs):
        return self.sharing.call(self.part, self.block, self.block, *args, **kwargs)


class PrefixSequential(torch.nn.Sequential):
    """A ``torch.nn.Sequential`` (same children, same state-dict keys) that is one part of the
    prefix: inside a forward on the step's batch it computes through :meth:`PrefixSharing.call`."""

    def __init__(self, *modules: torch.nn.Module, sharing: PrefixSharing, part: str):
        super().__init__(*modules)
        self.sharing, self.part = sharing, part

    @classmethod
    def from_sequential(cls, seq: torch.nn.Sequential, sharing: PrefixSharing, part: str) -> "PrefixSequential":
        new = cls(sharing=sharing, part=part)
        for name, module in seq._modules.items():  # the same names, so the same state-dict keys
            new.add_module(name, module)
        return new.train(seq.training)

    def forward(self, x):
        return self.sharing.call(self.part, self, super().forward, x)
