"""All-in-one wav2vec2.0 encoder over Hugging Face transformers' ``Wav2Vec2Model``.

The paper's second model family (Section 4.3): a CTC-fine-tuned wav2vec2.0 whose
Transformer encoder layers are compressed (depth, FFN width, weight precision) while
the CNN feature extractor, the feature projection and the positional convolution stay
float and uncompressed.
"""

import logging
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from typeguard import typechecked

from espnet_allinone.elastic import ElasticModuleList
from espnet_allinone.encoders.abs_allinone import AllInOneEncoderMixin, check_ffn_order
from espnet_allinone.subnet import Subnet, SubnetSpace


def load_wav2vec2(name_or_dir: str, weights: bool = True, **config_overrides: Any):
    """``Wav2Vec2Model.from_pretrained`` (float32) with ``config_overrides`` applied.

    Accepts a local directory or a hub name, holding a ``Wav2Vec2Model`` or a
    ``Wav2Vec2ForCTC`` (its ``lm_head`` is not loaded here). Raises ValueError if it
    is not a wav2vec2 checkpoint. ``weights=False`` builds the architecture from its
    ``config.json`` alone (randomly initialised; under ``torch.device("meta")``, no memory).
    """
    from transformers import AutoConfig, Wav2Vec2Model

    try:
        config = AutoConfig.from_pretrained(name_or_dir)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{name_or_dir!r} is not a Hugging Face wav2vec2 checkpoint (a directory or hub "
            f"name with config.json and weights): {e}"
        ) from None
    if config.model_type != "wav2vec2":
        raise ValueError(
            f"{name_or_dir!r} holds a {config.model_type!r} model, not 'wav2vec2' "
            "(e.g. facebook/wav2vec2-base-100h)"
        )
    if getattr(config, "add_adapter", False):
        raise ValueError(f"{name_or_dir!r}: wav2vec2 models with add_adapter are not supported")
    config.update(config_overrides)
    if not weights:
        return Wav2Vec2Model(config)
    return Wav2Vec2Model.from_pretrained(name_or_dir, config=config, dtype=torch.float32)


def valid_mask(lengths: torch.Tensor, maxlen: int) -> torch.Tensor:
    """(B,) lengths -> (B, maxlen) bool, True on valid positions.

    ESPnet's ``make_pad_mask`` takes its ONNX-traceable path for tensor lengths, which
    builds a (maxlen, maxlen) matrix: 2.3e9 elements for 3 s of 16 kHz audio. This is
    O(B maxlen).
    """
    return torch.arange(maxlen, device=lengths.device)[None, :] < lengths[:, None]


def normalize_waveform(xs: torch.Tensor, ilens: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples, padding zeroed:
    what Hugging Face's ``Wav2Vec2FeatureExtractor(do_normalize=True)`` feeds the model.

    (B, L), (B,) -> (B, L)
    """
    valid = valid_mask(ilens.to(xs.device), xs.size(1))
    n = ilens.to(xs.dtype).clamp_min(1).unsqueeze(1)
    mean = (xs * valid).sum(1, keepdim=True) / n
    var = (((xs - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return ((xs - mean) / torch.sqrt(var + 1e-7)).masked_fill(~valid, 0.0)


class AllInOneWav2Vec2Encoder(AllInOneEncoderMixin, AbsEncoder):
    """A pretrained wav2vec2.0 (raw waveform in, frontend none) holding nested subnets.

    A subnet ``DEPTH-WIDTH-BITSbit`` runs the first ``DEPTH`` Transformer layers, the
    first ``WIDTH`` FFN intermediate units of each (sliced; at construction the units
    are sorted by L2 importance, see :meth:`sort_ffn_units`) and fake-quantizes every
    Linear weight of those layers (attention projections and FFN) to ``BITS``. The CNN
    feature extractor, the feature projection and the positional convolution stay
    float in every subnet. Parameter names are the HF model's under ``wav2vec2.``.
    With the checkpoint's vocabulary as token list, ``espnet_allinone.bin.hf_token_list``
    writes its CTC head (``lm_head``) for ESPnet's ``init_param``.

    Args:
        input_size: Must be 1 (raw waveform): use ``frontend: none``, ``input_size: 1``.
        hf_model: Local directory or hub name of a wav2vec2 (or Wav2Vec2ForCTC) checkpoint
            (default: the paper's facebook/wav2vec2-base-100h).
        subnets, subnet_depths, subnet_widths, subnet_bits: The subnet space, as for
            ``allinone_conformer`` (missing axes: all layers, all units, 32 bits).
        ffn_order: ``l2`` sorts the FFN units by importance at construction;
            ``keep`` keeps the checkpoint's order.
        normalize_waveform: Zero-mean unit-variance per utterance (as the HF feature
            extractor with ``do_normalize``; True for the facebook/wav2vec2-* models).
        use_attention_mask: Hide padded frames from self-attention. HF's group-norm
            base models were fine-tuned without a mask (their feature extractor has
            ``return_attention_mask: false``).
        layerdrop: Probability of skipping a layer in training (HF ``layerdrop``;
            wav2vec2-base-100h ships 0.1). It also skips layers of the largest subnet,
            the KL reference, so the default is 0.
        mask_time_prob, mask_time_length, mask_feature_prob, mask_feature_length:
            HF's SpecAugment on the projected features in training (HF defaults:
            0.05, 10, 0, 10). The mask is drawn once per batch and shared by every
            subnet of a training step.
        freeze_feature_encoder: No gradient for the CNN feature extractor (as HF's
            fine-tuning recipes).
        hf_conf: Further ``Wav2Vec2Config`` overrides, e.g. ``{hidden_dropout: 0.1}``.
        load_weights: False builds the architecture from ``hf_model``'s config.json
            alone, without its weights and without reordering the FFN units: for a
            model whose ESPnet checkpoint (already reordered) is loaded afterwards, and
            for counting sizes on the meta device.

    Forward: (B, L) waveform, (B,) lengths -> (B, T, hidden_size), (B,), None.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        hf_model: str = "facebook/wav2vec2-base-100h",
        subnets: Optional[List[str]] = None,
        subnet_depths: Optional[List[int]] = None,
        subnet_widths: Optional[List[int]] = None,
        subnet_bits: Optional[List[int]] = None,
        ffn_order: str = "l2",
        normalize_waveform: bool = True,
        use_attention_mask: bool = True,
        layerdrop: float = 0.0,
        mask_time_prob: float = 0.05,
        mask_time_length: int = 10,
        mask_feature_prob: float = 0.0,
        mask_feature_length: int = 10,
        freeze_feature_encoder: bool = True,
        hf_conf: Optional[Dict[str, Any]] = None,
        load_weights: bool = True,
    ):
        super().__init__()
        if input_size != 1:
            raise ValueError(
                f"allinone_wav2vec2 takes the raw waveform: set `frontend: none` and "
                f"`input_size: 1` (got input_size={input_size})"
            )
        check_ffn_order(ffn_order)
        overrides = dict(
            layerdrop=layerdrop,
            mask_time_prob=mask_time_prob,
            mask_time_length=mask_time_length,
            mask_feature_prob=mask_feature_prob,
            mask_feature_length=mask_feature_length,
            apply_spec_augment=mask_time_prob > 0 or mask_feature_prob > 0,
        )
        overrides.update(hf_conf or {})
        self.wav2vec2 = load_wav2vec2(hf_model, weights=load_weights, **overrides)
        self.normalize_waveform = normalize_waveform
        self.use_attention_mask = use_attention_mask
        if freeze_feature_encoder:
            self.wav2vec2.freeze_feature_encoder()

        config = self.wav2vec2.config
        space = SubnetSpace(
            subnets,
            subnet_depths,
            subnet_widths,
            subnet_bits,
            num_blocks=config.num_hidden_layers,
            linear_units=config.intermediate_size,
        )
        encoder = self.wav2vec2.encoder
        self.init_subnet_space(
            space, {f"wav2vec2.encoder.layers.{i}.": layer for i, layer in enumerate(encoder.layers)}
        )
        if ffn_order == "l2" and load_weights:
            self.sort_ffn_units()
            logging.info(f"ordered the FFN units of {hf_model} by L2 importance (paper footnote 1)")
        # HF's encoder loops `for layer in self.layers`: iterating ElasticModuleList
        # yields the subnet's first DEPTH layers; the state-dict keys stay `layers.<i>.`.
        encoder.layers = ElasticModuleList(encoder.layers)
        encoder.layers.sharing = self.sharing
        self.set_subnet(None)

    def ffn_pairs(self):
        for layer in self.wav2vec2.encoder.layers._modules.values():
            yield layer.feed_forward.intermediate_dense, layer.feed_forward.output_dense

    def output_size(self) -> int:
        return self.wav2vec2.config.hidden_size

    @property
    def elastic_layers(self) -> ElasticModuleList:
        return self.wav2vec2.encoder.layers

    def subnet_modules(self, spec: Subnet) -> Iterable[torch.nn.Module]:
        # masked_spec_embed (training-time masking only) is not part of any subnet
        w2v = self.wav2vec2
        yield w2v.feature_extractor
        yield w2v.feature_projection
        yield w2v.encoder.pos_conv_embed
        yield w2v.encoder.layer_norm
        yield from list(w2v.encoder.layers._modules.values())[: spec.depth]

    def front_end(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Subnet-independent part: normalisation, CNN, projection, time masking.

        (B, L), (B,) -> hidden (B, T, hidden_size), frame mask (B, T) or None, (B,)
        """
        w2v = self.wav2vec2
        if self.normalize_waveform:
            xs_pad = normalize_waveform(xs_pad, ilens)
        feats = w2v.feature_extractor(xs_pad).transpose(1, 2)
        olens = w2v._get_feat_extract_output_lengths(ilens).to(torch.long)
        frame_mask = None
        if self.use_attention_mask:
            frame_mask = valid_mask(olens.to(feats.device), feats.size(1))
        hidden, _ = w2v.feature_projection(feats)
        hidden = w2v._mask_hidden_states(hidden, attention_mask=frame_mask)
        return hidden, frame_mask, olens

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Encode with the active subnet.

        Args:
            xs_pad: (B, L) or (B, L, 1) raw waveform, zero-padded.
            ilens: (B,) numbers of samples.
        Returns:
            (B, T, hidden_size) encoder output, (B,) frame counts, None.
        """
        with self.sharing.forward((xs_pad, ilens), self.training):
            # a step's subnets share the front end (sharing_prefixes), and the first k layers at equal
            # (width, bits)
            waveform = xs_pad.squeeze(-1) if xs_pad.dim() == 3 else xs_pad
            hidden, frame_mask, olens = self.sharing.call("front_end", None, self.front_end, waveform, ilens)
            # clone: HF's encoder zeroes padded frames in place
            out = self.wav2vec2.encoder(hidden.clone(), attention_mask=frame_mask)
        return out.last_hidden_state, olens, None
