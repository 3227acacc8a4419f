"""All-in-one Conformer encoder: elastic depth x FFN width x weight precision."""

import logging
from typing import Any, Iterable, List, Optional

import torch
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from typeguard import typechecked

from espnet_allinone.compat import MultiSequential, upgrade_subsampling_keys
from espnet_allinone.elastic import ElasticDepth, ElasticWeight, SubnetBatchNorm1d
from espnet_allinone.encoders.abs_allinone import AllInOneEncoderMixin, check_ffn_order
from espnet_allinone.sharing import PrefixSequential, PrefixSharing, active_configuration
from espnet_allinone.signature import extend_signature
from espnet_allinone.subnet import Subnet, SubnetSpace


class ElasticMultiSequential(ElasticDepth, MultiSequential):
    """ESPnet's MultiSequential whose first ``active_depth`` blocks run (:class:`ElasticDepth`)."""

    @classmethod
    def from_multisequential(cls, seq: MultiSequential,
                             sharing: Optional[PrefixSharing] = None) -> "ElasticMultiSequential":
        new = cls(*seq._modules.values(), layer_drop_rate=seq.layer_drop_rate)
        new.sharing = sharing
        new.train(seq.training)
        return new


class AllInOneConformerEncoder(AllInOneEncoderMixin, ConformerEncoder):
    """ESPnet's ConformerEncoder containing nested subnets ``DEPTH-WIDTH-BITSbit``.

    A subnet runs the first ``DEPTH`` blocks (then ``after_norm``), uses the first
    ``WIDTH`` intermediate units of every FFN (both macaron halves) by slicing the
    shared weights, and fake-quantizes every Linear/Conv weight of the encoder,
    subsampling included, to ``BITS`` with a learnable step per bit-width. The
    convolution modules' BatchNorm keeps private running statistics per subnet.
    Parameter names are stock ``ConformerEncoder``'s, so a stock checkpoint
    initialises this encoder, and at the largest 32-bit subnet both compute the same.

    Loading weights whose FFN order is not settled (a stock checkpoint given to
    ``--init_param``, asr.sh's ``--pretrained_model``) orders every FFN's hidden units
    by L2 importance as the load's last step, and logs it (paper footnote 1,
    :meth:`sort_ffn_units`: the same function, and a width-W subnet starts from the W
    most important units). The persistent buffer ``ffn_units_ordered`` records that the
    order is settled: by that load, or by the first training forward of a model trained
    from scratch; so a resumed run, a checkpoint of this encoder given to
    ``--init_param`` and decoding never reorder.

    Args:
        input_size: Input dimension.
        subnets: Explicit subnet names, e.g. ``["12-2048-8bit", "8-1024-4bit"]``.
        subnet_depths, subnet_widths, subnet_bits: Or the grid of the space
            (missing axes default to num_blocks, linear_units and 32 bits).
        ffn_order: ``"l2"``: order the FFN units of loaded stock weights by L2
            importance when they are loaded (above); ``"keep"``: never.
        **conformer_conf: Every ``ConformerEncoder`` argument (num_blocks,
            linear_units, macaron_style, ...), unchanged.

    Forward: (B, T, input_size), (B,) -> (B, T', output_size), (B,), None, exactly
    as ``ConformerEncoder``, for the subnet chosen with :meth:`set_subnet`. Inside
    :meth:`sharing_prefixes`, subnets forwarded on the same input share the
    subsampling's stages (``embed.conv``, ``embed.out``; a Sequential input layer as a
    whole) at equal bits, and the output of the first k blocks at equal width and bits (depth
    only truncates); in eval mode the outputs are bit-identical, in training the shared
    part draws its dropout masks once.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        subnets: Optional[List[str]] = None,
        subnet_depths: Optional[List[int]] = None,
        subnet_widths: Optional[List[int]] = None,
        subnet_bits: Optional[List[int]] = None,
        ffn_order: str = "l2",
        **conformer_conf: Any,
    ):
        check_ffn_order(ffn_order)
        super().__init__(input_size, **conformer_conf)
        blocks = list(self.encoders._modules.values())
        space = SubnetSpace(
            subnets,
            subnet_depths,
            subnet_widths,
            subnet_bits,
            num_blocks=len(blocks),
            linear_units=blocks[0].feed_forward.w_1.weight.size(0),
        )
        self.init_subnet_space(space, {"embed.": self.embed, "encoders.": self.encoders})
        shallow = min(s.depth for s in self.subnet_space)
        if any(i >= shallow for i in self.interctc_layer_idx):
            logging.warning(
                f"intermediate CTC layers {self.interctc_layer_idx}: subnets of depth "
                f"{shallow} have no intermediate output at layers >= {shallow}, so their "
                "loss has fewer (or no) intermediate-CTC terms"
            )
        self.encoders = ElasticMultiSequential.from_multisequential(self.encoders, self.sharing)
        for block in self.encoders._modules.values():
            if block.conv_module is not None:
                block.conv_module.norm = SubnetBatchNorm1d.from_batchnorm(
                    block.conv_module.norm, list(self.subnet_space)
                )
        # stock ConformerEncoder.forward runs unchanged; a step's subnets share the subsampling's stages
        # (equal bits) and the blocks' outputs (equal width and bits of the prefix): sharing.py
        if isinstance(self.embed, torch.nn.Sequential):  # input_layer: linear, or none
            self.embed = PrefixSequential.from_sequential(self.embed, self.sharing, "embed")
        else:  # Conv2dSubsampling*: its stages conv (Sequential), out (Sequential or Linear), pos_enc
            for name, stage in list(self.embed.named_children()):
                if isinstance(stage, torch.nn.Sequential):
                    setattr(self.embed, name, PrefixSequential.from_sequential(stage, self.sharing, f"embed.{name}"))
                elif isinstance(stage, ElasticWeight):
                    stage.prefix_part = f"embed.{name}"
        self.ffn_order = ffn_order
        self.register_buffer("ffn_units_ordered", torch.tensor(False))
        self._ordered = False  # the buffer's value, kept on the host (no device sync per forward)
        self.register_load_state_dict_post_hook(_settle_loaded_ffn_order)
        self.set_subnet(None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_subsampling_keys(state_dict, prefix + "embed.", self.embed)  # 202511 checkpoints
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor, *args, **kwargs):
        """``ConformerEncoder.forward``, on the step's batch when inside :meth:`sharing_prefixes`. The
        first training forward of a model trained from scratch settles its FFN order as it is."""
        if self.training and not self._ordered:
            self.settle_ffn_order()
        with self.sharing.forward((xs_pad, ilens), self.training, active_configuration(self.embed)):
            return super().forward(xs_pad, ilens, *args, **kwargs)

    def settle_ffn_order(self):
        """Record that the FFN units are in the order training uses (``ffn_units_ordered``)."""
        self.ffn_units_ordered.fill_(True)
        self._ordered = True

    def ffn_pairs(self):
        for block in self.encoders._modules.values():  # every block, whatever the active depth
            for ffn in (block.feed_forward, block.feed_forward_macaron):
                if ffn is not None:
                    yield ffn.w_1, ffn.w_2

    @property
    def elastic_layers(self) -> "ElasticMultiSequential":
        return self.encoders

    def subnet_modules(self, spec: Subnet) -> Iterable[torch.nn.Module]:
        yield self.embed
        yield from list(self.encoders._modules.values())[: spec.depth]
        if self.normalize_before:
            yield self.after_norm


@torch.no_grad()
def _settle_loaded_ffn_order(encoder: AllInOneConformerEncoder, incompatible_keys) -> None:
    """After a load (the encoder's or a parent's ``load_state_dict``, as ``--init_param`` does): weights
    whose FFN order is not settled get their units ordered by L2 importance (``ffn_order: l2``)."""
    if not bool(encoder.ffn_units_ordered):
        if encoder.ffn_order == "l2":
            encoder.sort_ffn_units()
            logging.info("ordered the FFN units of the loaded encoder weights by L2 importance (paper footnote 1)")
    encoder.settle_ffn_order()


extend_signature(AllInOneConformerEncoder, ConformerEncoder.__init__)
