"""Elastic layers: compute with a slice of a shared weight at a chosen bit-width.

Each layer keeps the parameter names of the PyTorch module it replaces (``weight``,
``bias``, BatchNorm's ``running_mean``...), so a stock checkpoint loads into it, and
adds only what the all-in-one model needs (per-bit-width step sizes, per-subnet
BatchNorm statistics). A parent sets the active configuration top-down with
``set_active``; layers never parse subnet names or look up at the model.
"""

import itertools
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from espnet_allinone.quant import (
    QuantizedWeight,
    fake_quantize,
    grid_factors,
    init_step,
    integer_codes,
    scale_channels,
)
from espnet_allinone.sharing import PrefixCall, PrefixSharing
from espnet_allinone.subnet import FULL_PRECISION, Subnet

WIDTH_AXES = (None, "out", "in")


class NeverTrainedError(ValueError):
    """A subnet would compute with state that training never set: the step sizes of a
    bit-width, or BatchNorm statistics that no training batch updated."""


class ElasticWeight:
    """Mixin for Linear/Conv layers: slice ``weight`` along one axis, then fake-quantize.

    Attributes:
        width_axis: ``"out"`` slices output rows (an FFN's first layer), ``"in"``
            slices input columns (an FFN's second layer), None never slices.
        weight_log_step: ParameterDict ``{"4bit": (out, 1, ...)}``, the log of one
            learnable LSQ step per output channel and bit-width, shared by every
            width. The log keeps steps positive and makes Adam's updates relative
            (a raw step of ~1e-2 would be moved by ~lr per update and collapse).
    """

    def _init_elastic(self, bits: Iterable[int], width_axis: Optional[str] = None, name: str = ""):
        if width_axis not in WIDTH_AXES:
            raise ValueError(f"width_axis must be one of {WIDTH_AXES}: {width_axis}")
        self.width_axis = width_axis
        self.layer_name = name  # for error messages: the path below the encoder
        self.active_width: Optional[int] = None
        self.active_bits = FULL_PRECISION
        shape = (self.weight.size(0),) + (1,) * (self.weight.dim() - 1)
        # Set from the weight statistics by the first training forward that uses them, i.e.
        # after any checkpoint or ESPnet `--init` has set the weights. Zero until then: what
        # marks them initialised is weight_log_step_ready, and a zero adds nothing to the sum
        # ESPnet's checkpoint averaging takes (see _load_from_state_dict).
        self.weight_log_step = torch.nn.ParameterDict(
            {
                f"{b}bit": torch.nn.Parameter(
                    torch.zeros(shape, device=self.weight.device, dtype=self.weight.dtype)
                )
                for b in sorted(set(bits))
                if b != FULL_PRECISION
            }
        )
        for p in self.weight_log_step.values():
            # no weight decay (a decayed log-step drifts to step 1): honoured by ESPnet's
            # optimizer builder with `exclude_weight_decay: true`
            p._optim = {"weight_decay": 0.0}
        # 1.0 where the step sizes of weight_log_step's i-th bit-width are initialised: in
        # the state dict, so it travels with checkpoints (a float buffer: ESPnet's checkpoint
        # averaging averages it, as it does the steps themselves)
        self.register_buffer(
            "weight_log_step_ready", torch.zeros(len(self.weight_log_step), device=self.weight.device)
        )
        # per bit-width, how many output channels (the first ones) a training forward has run with
        # those steps: a layer sliced along its outputs trains the steps of its first `width` only
        self.register_buffer(
            "weight_log_step_width", torch.zeros(len(self.weight_log_step), device=self.weight.device)
        )
        self._steps_checked = set()
        self._widths_trained: Dict[str, int] = {}  # host copy of weight_log_step_width, as read or written

    def espnet_initialization_fn(self):
        """Called by ESPnet's ``initialize`` after ``--init`` has reset the weights."""
        with torch.no_grad():
            for p in self.weight_log_step.values():
                p.zero_()
            self.weight_log_step_ready.zero_()
            self.weight_log_step_width.zero_()
        self._steps_checked = set()
        self._widths_trained = {}

    def _bit_index(self, key: str) -> int:
        return list(self.weight_log_step).index(key)

    def _not_finite(self, name: str, key: str, log_step: torch.Tensor) -> Optional[str]:
        """Why the trained steps ``log_step`` of ``key`` are unusable, or None."""
        bad = ~torch.isfinite(log_step.reshape(-1))
        if not bool(bad.any()):
            return None
        channels = bad.nonzero().reshape(-1).tolist()
        return (
            f"{name or type(self).__name__}: the trained {key} step sizes (weight_log_step."
            f"{key}) are NaN/inf in {len(channels)} of {bad.numel()} output channels "
            f"(first: {channels[:5]}); the training diverged. They are not re-initialised "
            "silently: resume from an earlier checkpoint or lower the learning rate"
        )

    @property
    def full_width(self) -> int:
        return self.weight.size(0 if self.width_axis == "out" else 1)

    def set_active(self, width: Optional[int] = None, bits: int = FULL_PRECISION):
        """Use the first ``width`` units along ``width_axis`` (None = all) at ``bits``."""
        if width is not None:
            if self.width_axis is None:
                raise ValueError(f"{type(self).__name__} has no width axis to slice")
            if not 0 < width <= self.full_width:
                raise ValueError(f"width {width} outside 1..{self.full_width}")
            if width == self.full_width:
                width = None
        if bits != FULL_PRECISION and f"{bits}bit" not in self.weight_log_step:
            raise ValueError(
                f"no step size for {bits} bits; this layer has {list(self.weight_log_step)}"
            )
        self.active_width = width
        self.active_bits = bits

    def sliced(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The float weight and bias of the active width (views, no copy)."""
        w, b, n = self.weight, self.bias, self.active_width
        if n is not None:
            if self.width_axis == "out":
                w = w[:n]
                b = None if b is None else b[:n]
            else:
                w = w[:, :n]
        return w, b

    def step(self, bits: int) -> torch.Tensor:
        """Step sizes for ``bits`` (all output channels). A training forward initialises them
        at first use (:meth:`init_steps`); outside training, steps that were never initialised
        are a :class:`NeverTrainedError`."""
        key = f"{bits}bit"
        log_step = self.weight_log_step[key]
        if key not in self._steps_checked:
            with torch.no_grad():
                if not self.steps_ready(bits):
                    if not self.training:
                        raise NeverTrainedError(
                            f"{self.layer_name or type(self).__name__}: the {bits}-bit step sizes were never "
                            f"trained (no training step ran a {bits}-bit subnet through this layer)"
                        )
                    self.init_steps(bits)
                else:
                    problem = self._not_finite(self.layer_name, key, log_step)
                    if problem:
                        raise FloatingPointError(problem)
            self._steps_checked.add(key)
        return log_step.exp()

    def steps_ready(self, bits: int) -> bool:
        """Whether the step sizes of ``bits`` were initialised (by training or :meth:`init_steps`)."""
        return bool(self.weight_log_step_ready[self._bit_index(f"{bits}bit")])

    @torch.no_grad()
    def init_steps(self, bits: int):
        """Initialise the step sizes of ``bits`` from the weights (LSQ, :func:`init_step`), as the
        first training forward that uses them does."""
        if getattr(self, "_is_replica", False):
            raise RuntimeError(
                "step sizes cannot be initialised inside torch.nn.DataParallel "
                "replicas: train with DDP (--multiprocessing_distributed true)"
            )
        key = f"{bits}bit"
        self.weight_log_step[key].copy_(init_step(self.weight.float(), bits).log())
        self.weight_log_step_ready[self._bit_index(key)] = 1.0
        self._steps_checked.discard(key)

    def _output_channels(self) -> int:
        """Output channels the active configuration computes (and whose steps it uses)."""
        if self.width_axis == "out" and self.active_width is not None:
            return self.active_width
        return self.weight.size(0)

    def width_trained(self, bits: int) -> int:
        """How many output channels (the first ones) a training forward has run at ``bits``."""
        key = f"{bits}bit"
        if key not in self._widths_trained:
            self._widths_trained[key] = int(self.weight_log_step_width[self._bit_index(key)])
        return self._widths_trained[key]

    def active_step(self) -> Optional[torch.Tensor]:
        if self.active_bits == FULL_PRECISION:
            return None
        step = self.step(self.active_bits)
        channels = self._output_channels()
        if self.training and channels > self.width_trained(self.active_bits):
            with torch.no_grad():
                self.weight_log_step_width[self._bit_index(f"{self.active_bits}bit")] = float(channels)
            self._widths_trained[f"{self.active_bits}bit"] = channels
        return step[:channels] if channels < step.size(0) else step

    # the encoder's step memo (:class:`~espnet_allinone.sharing.PrefixSharing`): within a step, the
    # weight is fake-quantized once per (width, bits); None (a layer on its own): every forward
    sharing: Optional[PrefixSharing] = None

    def configuration(self) -> Tuple[Optional[int], int]:
        """(width, bits) the layer computes with."""
        return self.active_width, self.active_bits

    def _reused(self, what: str, compute):
        if self.sharing is None:
            return compute()
        return self.sharing.reuse((what, self.layer_name, self.active_width, self.active_bits), compute)

    def active_weight(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight (sliced, fake-quantized) and bias the layer computes with."""
        w, b = self.sliced()
        if self.active_bits == FULL_PRECISION:
            return w, b
        return self._reused("weight", lambda: fake_quantize(w, self.active_step(), self.active_bits)), b

    def active_grid(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The quantized active weight as :func:`~espnet_allinone.quant.grid_factors`: integer codes
        times a power of two per output channel, and the float32 scale per output channel."""
        return self._reused("grid", lambda: grid_factors(self.sliced()[0], self.active_step(), self.active_bits))

    _channel_dim = 1  # of the output: (B, C, ...) for a convolution; Linear: the last

    # the name of the part of a step's prefix this layer is on its own (e.g. a subsampling's output
    # Linear): inside a forward on the step's batch it computes through ``sharing.call``
    prefix_part: Optional[str] = None

    def _compute(self, op, x: torch.Tensor) -> torch.Tensor:
        if self.prefix_part is not None and self.sharing is not None:
            return self.sharing.call(self.prefix_part, self, self._compute_active, op, x)
        return self._compute_active(op, x)

    def _compute_active(self, op, x: torch.Tensor) -> torch.Tensor:
        """``op(x, weight, bias)`` (F.linear or the convolution) with the active weight.

        Under autocast (fp16/bf16) a quantized layer's matmul takes the unit codes of
        :meth:`active_grid`, exact in the autocast dtype, so it computes with the grid the export
        stores; the float32 scale and the bias are applied to its output in float32, returned in the
        matmul's dtype, as autocast's own matmul returns it. Outside autocast, and
        at 32 bits, the layer computes with :meth:`active_weight` in the input's dtype."""
        if self.active_bits == FULL_PRECISION or not torch.is_autocast_enabled(x.device.type):
            return op(x, *self.active_weight())
        codes, scale = self.active_grid()
        return scale_channels(op(x, codes, None), scale, self.sliced()[1], self._channel_dim)

    @torch.no_grad()
    def integer_weight(self) -> Optional[QuantizedWeight]:
        """The active weight's integer codes and steps (None at 32 bits):
        ``integer_weight().dequantize()`` is exactly the weight forward computes with."""
        if self.active_bits == FULL_PRECISION:
            return None
        return integer_codes(self.sliced()[0], self.active_step(), self.active_bits)

    @torch.no_grad()
    def export(self) -> torch.nn.Module:
        """The stock layer (Linear/Conv1d/Conv2d) of the active configuration: the
        sliced, fake-quantized weight forward computes with, and the bias."""
        weight, bias = (None if t is None else t.detach().clone() for t in self.active_weight())
        stock_cls = _STOCK_OF[type(self)]
        kwargs = _ELASTIC_TWINS[stock_cls][1](self)
        if stock_cls is torch.nn.Linear:
            kwargs.update(in_features=weight.size(1), out_features=weight.size(0))
        else:
            kwargs.update(in_channels=weight.size(1) * self.groups, out_channels=weight.size(0))
        stock = stock_cls(**kwargs, device="meta")
        stock.weight = torch.nn.Parameter(weight)
        stock.bias = None if bias is None else torch.nn.Parameter(bias)
        return stock.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Loads the steps with ``weight_log_step_ready`` and ``weight_log_step_width``.

        An average of checkpoints (ESPnet's ``average_nbest_models``) holds a fraction r in (0, 1)
        where only some of them had the steps initialised: uninitialised steps are zero, so the mean
        log-step over those that had them is the average / r, and the trained width the average
        width / r (the mean over them, at most their widest; rounded down). Trained steps that are
        not finite are an error.
        """
        ready_key, width_key = f"{prefix}weight_log_step_ready", f"{prefix}weight_log_step_width"
        step_keys = {k: f"{prefix}weight_log_step.{k}" for k in self.weight_log_step}
        if ready_key in state_dict and width_key in state_dict:
            ready, widths = state_dict[ready_key].clone(), state_dict[width_key].clone()
            for i, (k, key) in enumerate(step_keys.items()):
                r = float(ready[i]) if i < ready.numel() else 1.0
                if r <= 0.0:
                    continue
                widths[i] = float(int(float(widths[i]) / r + 1e-6))  # whole channels
                if r < 1.0:
                    if key in state_dict:
                        state_dict[key] = state_dict[key] / r
                    ready[i] = 1.0
            state_dict[ready_key], state_dict[width_key] = ready, widths
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # the steps are loaded after this (by the ParameterDict child): check the incoming ones
        for k, key in step_keys.items():
            v = state_dict.get(key)
            if v is not None and bool(self.weight_log_step_ready[self._bit_index(k)]):
                problem = self._not_finite(prefix.rstrip("."), k, v)
                if problem:
                    raise ValueError(problem)
        self._steps_checked = set()  # re-check loaded steps at next use
        self._widths_trained = {}

    def never_trained(self) -> Optional[str]:
        """What of the active configuration training never set (its step sizes, or those of output
        channels beyond the widest a training forward ran at this bit-width), or None."""
        bits = self.active_bits
        if bits == FULL_PRECISION:
            return None
        if not (f"{bits}bit" in self._steps_checked or self.steps_ready(bits)):
            return f"{bits}-bit step sizes"
        have, need = self.width_trained(bits), self._output_channels()
        if have < need:
            return f"{bits}-bit step sizes of output channels {have}..{need - 1} (trained: the first {have})"
        return None

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, width_axis={self.width_axis}, "
            f"bits={list(self.weight_log_step) or ['32bit']}"
        )


class ElasticLinear(ElasticWeight, torch.nn.Linear):
    _channel_dim = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compute(F.linear, x)


class ElasticConv1d(ElasticWeight, torch.nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compute(self._conv_forward, x)


class ElasticConv2d(ElasticWeight, torch.nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compute(self._conv_forward, x)


def _conv_kwargs(m: torch.nn.modules.conv._ConvNd) -> Dict:
    return dict(
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        kernel_size=m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
        padding_mode=m.padding_mode,
    )


_ELASTIC_TWINS = {
    torch.nn.Linear: (
        ElasticLinear,
        lambda m: dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None),
    ),
    torch.nn.Conv1d: (ElasticConv1d, _conv_kwargs),
    torch.nn.Conv2d: (ElasticConv2d, _conv_kwargs),
}


_STOCK_OF = {elastic: stock for stock, (elastic, _) in _ELASTIC_TWINS.items()}


def to_elastic(module: torch.nn.Module, bits: Sequence[int], name: str = "",
               sharing: Optional[PrefixSharing] = None) -> ElasticWeight:
    """An elastic twin of a Linear/Conv1d/Conv2d sharing its Parameter objects (and, within a
    training step, its fake-quantized weights through ``sharing``)."""
    cls, kwargs = _ELASTIC_TWINS[type(module)]
    new = cls(**kwargs(module), device="meta")
    new.weight = module.weight
    new.bias = module.bias
    new.train(module.training)
    new._init_elastic(bits, name=name)
    new.sharing = sharing
    return new


@torch.no_grad()
def sort_units(first: torch.nn.Module, second: torch.nn.Module) -> torch.Tensor:
    """Reorder the hidden units between two layers (``first``'s outputs = ``second``'s
    inputs, e.g. an FFN's two Linear layers) by decreasing L2 importance.

    A unit's importance is the L2 norm of its row of ``first.weight`` times that of its
    column of ``second.weight`` (paper footnote 1: rows/columns of small L2 norm matter
    least), so slicing the first W units keeps the W most important ones. The pair
    computes the same function afterwards (``first``'s bias and per-output-channel step
    sizes move with its rows).

    Returns:
        (units,) the permutation applied (new unit i = old unit order[i]).
    """
    w1, w2 = first.weight, second.weight
    importance = w1.reshape(w1.size(0), -1).norm(dim=1) * w2.transpose(0, 1).reshape(w2.size(1), -1).norm(dim=1)
    order = importance.argsort(descending=True, stable=True)
    w1.copy_(w1[order])
    if first.bias is not None:
        first.bias.copy_(first.bias[order])
    for step in getattr(first, "weight_log_step", {}).values():
        step.copy_(step[order])
    w2.copy_(w2[:, order])
    return order


def make_elastic(root: torch.nn.Module, bits: Sequence[int], prefix: str = "",
                 sharing: Optional[PrefixSharing] = None) -> torch.nn.Module:
    """Replace, in place, every Linear/Conv1d/Conv2d below ``root`` by its elastic twin
    (named ``prefix`` + its path below ``root``: in error messages and in ``sharing``'s keys).

    State-dict keys of the replaced weights and biases are unchanged.
    """
    for name, child in list(root.named_children()):
        if type(child) in _ELASTIC_TWINS:
            setattr(root, name, to_elastic(child, bits, f"{prefix}{name}", sharing))
        else:
            make_elastic(child, bits, f"{prefix}{name}.", sharing)
    return root


class SubnetBatchNorm1d(torch.nn.BatchNorm1d):
    """BatchNorm1d with shared affine parameters and private running statistics per
    (width, bits) of the subnets.

    The input of a BatchNorm in block k depends on the FFN width and the bit-width of
    blocks 1..k, never on how many blocks run after it, so subnets that differ only
    in depth see the same input there and share statistics. The stock buffers
    (``running_mean``, ``running_var``, ``num_batches_tracked``) hold the statistics
    of the largest subnet's (width, bits), so stock checkpoints map onto it; every
    other (width, bits) has ``running_mean_w<width>-<bits>bit`` etc. Training or
    evaluating one subnet never touches the statistics of another (width, bits).
    """

    _STATS = ("running_mean", "running_var", "num_batches_tracked")

    @staticmethod
    def stats_key(spec: Subnet) -> str:
        return f"w{spec.width}-{spec.bits}bit"

    @classmethod
    def from_batchnorm(cls, bn: torch.nn.BatchNorm1d, specs: Sequence[Subnet]):
        """``specs``: the subnets of the space, the largest first."""
        if not (bn.track_running_stats and bn.affine):
            raise ValueError("SubnetBatchNorm1d needs affine=True, track_running_stats=True")
        new = cls(bn.num_features, bn.eps, bn.momentum, device="meta")
        new.weight, new.bias = bn.weight, bn.bias
        keys = list(dict.fromkeys(cls.stats_key(s) for s in specs))
        for stat in cls._STATS:
            setattr(new, stat, getattr(bn, stat))
            for key in keys[1:]:
                new.register_buffer(f"{stat}_{key}", getattr(bn, stat).detach().clone())
        new.stats_keys = tuple(keys)
        new.active_key = keys[0]
        new.train(bn.training)
        return new

    def set_active(self, spec: Subnet):
        key = self.stats_key(spec)
        if key not in self.stats_keys:
            raise ValueError(f"no BatchNorm statistics for subnet {spec.name}")
        self.active_key = key

    def configuration(self) -> str:
        """The key of the statistics the layer normalises with."""
        return self.active_key

    def set_active_key(self, key: str):
        """Use the statistics stored under ``key`` (one of :attr:`stats_keys`)."""
        if key not in self.stats_keys:
            raise ValueError(f"no BatchNorm statistics {key!r} (have: {', '.join(self.stats_keys)})")
        self.active_key = key

    def add_stats(self, key: str):
        """New (or reset) running statistics under ``key`` (mean 0, variance 1, no batch seen), e.g. for
        recalibrating a subnet whose statistics were never trained; the others are untouched."""
        if key == self.stats_keys[0] or "." in key:
            raise ValueError(f"cannot (re)create the statistics {key!r}")
        device = self.weight.device
        for stat, value in (("running_mean", torch.zeros(self.num_features, device=device)),
                            ("running_var", torch.ones(self.num_features, device=device)),
                            ("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))):
            self.register_buffer(f"{stat}_{key}", value)
        if key not in self.stats_keys:
            self.stats_keys = self.stats_keys + (key,)
        self._updated = self._updated - {key}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        head = prefix + "running_mean_"
        for name in list(state_dict):  # statistics recalibrated after training: stored with the model
            if name.startswith(head) and name[len(head):] not in self.stats_keys:
                self.add_stats(name[len(head):])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._updated = frozenset()

    # keys whose statistics are known to be updated (a host-side record: no device read per check)
    _updated: frozenset = frozenset()

    def never_trained(self) -> Optional[str]:
        """What of the active statistics training never set (no batch updated them), or None."""
        if self.active_key in self._updated:
            return None
        if int(self._stat("num_batches_tracked")) > 0:
            self._updated = self._updated | {self.active_key}
            return None
        return f"BatchNorm statistics {self.active_key} (no batch updated them)"

    def reset_running_stats(self):
        """torch's: the stock buffers (the largest's statistics) start again, counted as never updated."""
        super().reset_running_stats()
        if hasattr(self, "stats_keys"):  # torch's constructor calls this before from_batchnorm sets them
            self._updated = self._updated - {self.stats_keys[0]}

    def _stat(self, stat: str) -> torch.Tensor:
        if self.active_key == self.stats_keys[0]:
            return getattr(self, stat)
        return getattr(self, f"{stat}_{self.active_key}")

    # a list while a step's shared part computes (PrefixSharing.call): the (key, input) of each update,
    # for repeat_update when another subnet reuses the part's output
    updates: Optional[list] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T), normalised with the active subnet's statistics."""
        self._check_input_dim(x)
        mean, var, count = (self._stat(s) for s in self._STATS)
        momentum = self.momentum
        if self.training:
            count.add_(1)
            if momentum is None:
                momentum = 1.0 / float(count)
            if self.updates is not None:
                self.updates.append((self.active_key, x.detach()))
        return F.batch_norm(
            x, mean, var, self.weight, self.bias, self.training, momentum or 0.0, self.eps
        )

    @torch.no_grad()
    def export(self) -> torch.nn.BatchNorm1d:
        """The stock BatchNorm1d of the active subnet: shared affine parameters, its own
        running statistics."""
        bn = torch.nn.BatchNorm1d(self.num_features, self.eps, self.momentum, device=self.weight.device)
        bn.load_state_dict({"weight": self.weight, "bias": self.bias, **{s: self._stat(s) for s in self._STATS}})
        return bn.train(self.training)

    @torch.no_grad()
    def repeat_update(self, update: Tuple[str, torch.Tensor]):
        """Update the running statistics of ``update``'s (width, bits) once more with the
        batch statistics of its input, as a training forward on that input does."""
        key, x = update
        previous, self.active_key = self.active_key, key
        try:
            mean, var, count = (self._stat(s) for s in self._STATS)
            count.data.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(count)
            dims = [0, *range(2, x.dim())]
            # through .data, as F.batch_norm updates them: without a version bump (the
            # step's graph saved these buffers; training-mode backward does not use them)
            x = x.float()  # as F.batch_norm accumulates, also under autocast
            mean.data.mul_(1 - momentum).add_(x.mean(dims).to(mean.dtype), alpha=momentum)
            var.data.mul_(1 - momentum).add_(x.var(dims, unbiased=True).to(var.dtype), alpha=momentum)
        finally:
            self.active_key = previous


class ElasticDepth:
    """Mixin for a container of blocks (``torch.nn.Sequential``, ``ModuleList``, ESPnet's
    ``MultiSequential``) that runs and iterates over only its first ``active_depth``
    blocks (all when None). Every block stays registered and indexable (``len`` and
    ``[i]`` see them all), so the state dict is stock. Iteration is what encoders loop
    over (ESPnet's ``for layer in self.encoders``, HF's ``for layer in self.layers``),
    so their forward needs no change."""

    active_depth: Optional[int] = None
    # the encoder's step memo: inside a forward on a step's batch, the blocks are yielded as
    # :class:`~espnet_allinone.sharing.PrefixCall` (block i is part ``block<i>`` of the prefix)
    sharing: Optional[PrefixSharing] = None

    @property
    def num_layers(self) -> int:
        return len(self._modules)

    def set_depth(self, depth: Optional[int]):
        if depth is not None and not 0 < depth <= self.num_layers:
            raise ValueError(f"depth {depth} outside 1..{self.num_layers}")
        self.active_depth = None if depth == self.num_layers else depth

    def __iter__(self):
        depth = self.num_layers if self.active_depth is None else self.active_depth
        blocks = itertools.islice(iter(self._modules.values()), depth)
        if self.sharing is None or not self.sharing.in_forward:
            return blocks
        return (PrefixCall(self.sharing, f"block{i}", block) for i, block in enumerate(blocks))


class ElasticModuleList(ElasticDepth, torch.nn.ModuleList):
    """A ModuleList of blocks whose first ``active_depth`` run (:class:`ElasticDepth`)."""
