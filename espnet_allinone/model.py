"""AllInOneASRModel: one ESPnet ASR model trained for every subnet of its encoder.

Training criterion (paper Eq. 2-4)::

    L = L_max + sum_{i in M} ( lambda1_i * L_i + lambda2_i * KL(SG(p_max) || p_i) )

where ``L_*`` is ESPnet's own hybrid CTC/attention loss of a subnet, ``M`` the sampled
smaller subnets, and the KL term is taken on both the CTC and the decoder posteriors,
interpolated with ``ctc_weight`` like the losses. Frontend, SpecAugment and
normalisation run once per batch (:meth:`AllInOneASRModel.encoder_input`); encoder,
CTC and the shared (uncompressed) decoder once per subnet, the losses computed by
ESPnet's own ``_calc_ctc_loss`` / ``_calc_att_loss``.
"""

import contextlib
import logging
import random
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_allinone.compat import frontend_autocast, make_pad_mask
from espnet_allinone.encoders.abs_allinone import is_allinone_encoder
from espnet_allinone.signature import extend_signature
from espnet_allinone.subnet import Subnet, SubnetSpace

ATTRIBUTES = ("depth", "width", "bits")

# (lambda1, lambda2) per compressed attribute, from the paper's footnotes.
LAMBDA_PRESETS: Dict[str, Tuple[Dict[str, float], Dict[str, float]]] = {
    # Footnote 4 (Conformer): 0.8 / 0.2 for depth, 1 / 1 for the other attributes.
    "conformer": ({"depth": 0.8, "width": 1.0, "bits": 1.0}, {"depth": 0.2, "width": 1.0, "bits": 1.0}),
    # Footnote 5 (wav2vec2.0): lambda1 = 1; lambda2 = 0.005 for depth, 0.1 otherwise.
    "ssl": ({"depth": 1.0, "width": 1.0, "bits": 1.0}, {"depth": 0.005, "width": 0.1, "bits": 0.1}),
    "uniform": ({a: 1.0 for a in ATTRIBUTES}, {a: 1.0 for a in ATTRIBUTES}),
}

# Per-subnet statistics copied from ESPnet's stats into "<key>_<subnet>".
SUBNET_STATS = ("loss", "acc", "cer", "cer_ctc", "kl", "nonfinite")


@contextlib.contextmanager
def _outputs_of(module: Optional[torch.nn.Module]) -> Iterator[List]:
    """Collect what ``module`` returns while the block runs (a forward hook)."""
    outputs: List = []
    if module is None:
        yield outputs
        return
    def record(module, args, output):
        outputs.append(output)

    handle = module.register_forward_hook(record)
    try:
        yield outputs
    finally:
        handle.remove()


@contextlib.contextmanager
def _ctc_logits_of(ctc) -> Iterator[List]:
    """Collect the logits ``ctc.ctc_lo`` computes inside ``ctc.forward`` (the CTC
    losses), not those of encoder-internal calls such as intermediate-CTC conditioning."""
    logits: List = []
    if ctc is None:
        yield logits
        return
    inside = []

    def enter(module, args):
        inside.append(True)

    def leave(module, args, output):
        inside.pop()

    def record(module, args, output):
        if inside:
            logits.append(output)

    handles = [
        ctc.register_forward_pre_hook(enter),
        ctc.register_forward_hook(leave),
        ctc.ctc_lo.register_forward_hook(record),
    ]
    try:
        yield logits
    finally:
        for h in handles:
            h.remove()


def _kl(ref_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over valid positions of KL(softmax(ref) || softmax(logits)).

    Args:
        ref_logits, logits: (B, L, V); ref_logits is already detached.
        mask: (B, L) True where a position counts.
    """
    kl = F.kl_div(
        F.log_softmax(logits.float(), dim=-1),
        F.log_softmax(ref_logits.float(), dim=-1),
        reduction="none",
        log_target=True,
    ).sum(-1)
    return kl.masked_fill(~mask, 0.0).sum()


def _stats_name(spec: Subnet, space: SubnetSpace) -> str:
    """The stats key suffix of a subnet: its name; ``layerwise`` for every draw outside the space (one key)."""
    return str(spec) if spec in space.subnets else "layerwise"


class AllInOneASRModel(ESPnetASRModel):
    """ESPnetASRModel over an all-in-one encoder (e.g. ``allinone_conformer``).

    Args (in addition to every ESPnetASRModel argument, unchanged):
        subnet_sampling: ``sandwich`` (largest + smallest + ``num_random_subnets``
            others per step, the paper's Table 2 setting), ``all``, or ``sandwich_layerwise``
            (the random slots draw layer-wise subnets: a depth of the space, each block one of its
            (width, bits) pairs, OFA-style; their stats are reported as ``*_layerwise``).
        num_random_subnets: k of the sandwich rule (paper: 1).
        use_kl: add the KL regularisation (paper's "+KL" / systems K).
        lambda_preset: ``conformer`` (footnote 4), ``ssl`` (footnote 5) or ``uniform``.
        lambda1, lambda2: per-attribute overrides, e.g. ``{depth: 0.8}``. A subnet
            that compresses several attributes takes the smallest of their lambdas.
        max_nonfinite_steps: stop the training (FloatingPointError naming the subnet) when a
            subnet's loss was NaN/inf in this many consecutive training batches that computed it
            (ESPnet skips each such update); 0: never stop.
        share_prefixes: the subnets of a batch compute what they share once (the encoder's
            ``sharing_prefixes``: subsampling per bit-width, first blocks per (width, bits), each
            quantized weight per (width, bits)); the same losses and gradients, less time. False:
            every subnet computes its encoder from scratch.

    In training, the sampled subnets are forwarded; in evaluation (ESPnet's
    validation) every subnet of the space whose state training has set (the others are
    left out, with a warning: :meth:`_trained_subnets`). Stats: ESPnet's usual keys are the
    largest subnet's, ``loss`` is the total criterion, and ``loss_<subnet>``,
    ``acc_<subnet>``, ``cer_<subnet>``, ``cer_ctc_<subnet>``, ``kl_<subnet>`` are
    reported for every subnet (NaN in steps that did not sample it), with
    ``nonfinite_<subnet>``: 1 in a step whose loss (+ KL) of that subnet was NaN/inf, else 0.
    """

    @typechecked
    def __init__(
        self,
        *args,
        subnet_sampling: str = "sandwich",
        num_random_subnets: int = 1,
        use_kl: bool = True,
        lambda_preset: str = "conformer",
        lambda1: Optional[Dict[str, float]] = None,
        lambda2: Optional[Dict[str, float]] = None,
        max_nonfinite_steps: int = 10,
        share_prefixes: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if not is_allinone_encoder(self.encoder):
            raise ValueError(
                f"model 'allinone' needs an all-in-one encoder (e.g. "
                f"'allinone_conformer'), got {type(self.encoder).__name__}"
            )
        if self.use_transducer_decoder or self.use_linear_decoder:
            raise NotImplementedError("allinone supports CTC/attention models only")
        if getattr(self, "aux_ctc", None):
            raise NotImplementedError("allinone does not support aux_ctc")
        if self.interctc_weight != 0.0 and self.ctc_weight == 0.0:
            raise ValueError("interctc_weight > 0 needs ctc_weight > 0 (a CTC branch to interpolate with)")
        if subnet_sampling not in ("sandwich", "all", "sandwich_layerwise"):
            raise ValueError(f"subnet_sampling must be sandwich|all|sandwich_layerwise: {subnet_sampling}")
        if num_random_subnets < 0:
            raise ValueError("num_random_subnets must be >= 0")
        if max_nonfinite_steps < 0:
            raise ValueError("max_nonfinite_steps must be >= 0 (0: never stop)")
        if lambda_preset not in LAMBDA_PRESETS:
            raise ValueError(f"lambda_preset must be one of {list(LAMBDA_PRESETS)}")
        lam1, lam2 = (dict(d) for d in LAMBDA_PRESETS[lambda_preset])
        for given, into in ((lambda1, lam1), (lambda2, lam2)):
            unknown = set(given or {}) - set(ATTRIBUTES)
            if unknown:
                raise ValueError(f"unknown lambda attributes {unknown}; use {ATTRIBUTES}")
            into.update(given or {})
        self.subnet_sampling = subnet_sampling
        self.num_random_subnets = num_random_subnets
        self.use_kl = use_kl
        self._lam1, self._lam2 = lam1, lam2
        self.lambdas: Dict[Subnet, Tuple[float, float]] = {s: self.lambdas_of(s) for s in self.encoder.subnet_space}
        self._said_never_trained = set()  # subnets validation has warned about
        self._never_trained: Optional[Dict] = None  # {subnet: never_trained parts} of the evaluation pass
        self.max_nonfinite_steps = max_nonfinite_steps
        self.share_prefixes = share_prefixes
        self._nonfinite_run: Dict[str, int] = {}  # subnet: batches in the current run of NaN/inf losses

    def lambdas_of(self, spec) -> Tuple[float, float]:
        """(lambda1, lambda2) of a subnet: the smallest over the attributes it compresses."""
        attrs = list(self.encoder.subnet_space.attributes_compressed(spec))
        return (min((self._lam1[a] for a in attrs), default=1.0),
                min((self._lam2[a] for a in attrs), default=0.0) if self.use_kl else 0.0)

    def subnets_for_step(self) -> List[Subnet]:
        """The subnets one forward computes, the largest first.

        In training they are drawn with Python's ``random`` (which ESPnet seeds with
        ``seed + epoch`` at every epoch, so a resumed run draws the same). Under
        ``torch.distributed`` every rank trains rank 0's draw: the sandwich rule holds
        for each global step (its largest, smallest and random subnets see the whole
        global batch), as in a single-process run with that batch, whatever else
        consumes ``random`` differently on the ranks.
        """
        space = self.encoder.subnet_space
        if not self.training:
            return list(space)
        return self._as_on_rank0(space.sample(self.subnet_sampling, self.num_random_subnets, random))

    def _trained_subnets(self, subnets: List[Subnet]) -> List[Subnet]:
        """The subnets an evaluation forward (ESPnet's validation) computes: those whose step sizes
        and BatchNorm statistics training has set. One that training has not run yet (or never will:
        ``num_random_subnets: 0``) is left out, its stats None, with a warning the first time.
        NeverTrainedError if the largest is among them (there is nothing to evaluate against)."""
        if self._never_trained is None:  # once per evaluation pass (reset by train()/eval())
            self._never_trained = {}
        kept = []
        for spec in subnets:
            if spec not in self._never_trained:
                self._never_trained[spec] = self.encoder.never_trained(spec)
            parts = self._never_trained[spec]
            if not parts:
                kept.append(spec)
                continue
            if spec == self.encoder.subnet_space.largest:
                self.encoder.check_trained(spec)  # the error, naming what and the ways out
            if spec.name not in self._said_never_trained:
                self._said_never_trained.add(spec.name)
                logging.warning(f"validation leaves out subnet {spec}: it computes with state training has "
                                f"not set yet ({'; '.join(parts[:2])}{'; ...' if len(parts) > 2 else ''})")
        return kept

    def train(self, mode: bool = True):
        """torch's ``train``/``eval``; a new evaluation pass re-reads which subnets training has set."""
        self._never_trained = None
        return super().train(mode)

    def _as_on_rank0(self, subnets: List[Subnet]) -> List[Subnet]:
        """``subnets`` as drawn on rank 0 (one broadcast of a few integers per step)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return subnets
        device = next(self.parameters()).device  # NCCL broadcasts CUDA tensors only
        width = 1 + 2 * max(s.depth for s in self.encoder.subnet_space)  # depth, then (width, bits) per block
        rows = torch.full((len(subnets), width), -1, dtype=torch.long, device=device)
        for i, s in enumerate(subnets):
            rows[i, : 1 + 2 * s.depth] = torch.tensor([s.depth, *(v for wb in s.blocks for v in wb)])
        dist.broadcast(rows, src=0)
        space = self.encoder.subnet_space
        out = []
        for row in rows.tolist():
            pairs = row[1: 1 + 2 * row[0]]
            out.append(space.get(Subnet(tuple(zip(pairs[0::2], pairs[1::2])))))
        return out

    def encoder_input(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The part of ESPnet's ``encode`` before the encoder, once per batch: frontend,
        SpecAugment (training), normalisation, preencoder.

        (B, L, ...) -> feats (B, T, D), lengths (B,)
        """
        with frontend_autocast(self.autocast_frontend):
            feats, feats_lengths = self._extract_feats(speech, speech_lengths)
            if self.specaug is not None and self.training:
                feats, feats_lengths = self.specaug(feats, feats_lengths)
            if self.normalize is not None:
                feats, feats_lengths = self.normalize(feats, feats_lengths)
        if self.preencoder is not None:
            feats, feats_lengths = self.preencoder(feats, feats_lengths)
        return feats, feats_lengths

    def encode_subnet(
        self, feats: torch.Tensor, feats_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List]:
        """The active subnet's encoder (+ postencoder) on :meth:`encoder_input`'s output,
        as ESPnet's ``encode`` calls them.

        Returns (B, T', D') output, (B,) lengths, [(layer, (B, T', D'))] intermediate outputs.
        """
        if getattr(self.encoder, "interctc_use_conditioning", False) or getattr(self.encoder, "ctc_trim", False):
            out, lens, _ = self.encoder(feats, feats_lengths, ctc=self.ctc)
        else:
            out, lens, _ = self.encoder(feats, feats_lengths)
        intermediate = []
        if isinstance(out, tuple):
            out, intermediate = out
        if self.postencoder is not None:
            out, lens = self.postencoder(out, lens)
        return out, lens, intermediate

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Eq. 4 over the subnets of this step; same contract as ESPnetASRModel."""
        batch_size = speech.shape[0]
        feats, feats_lengths = self.encoder_input(speech, speech_lengths)
        subnets = self.subnets_for_step()
        if not self.training:
            subnets = self._trained_subnets(subnets)
        space = self.encoder.subnet_space
        layerwise = self.training and self.subnet_sampling == "sandwich_layerwise"  # validation: the grid only
        names = [str(s) for s in space] + (["layerwise"] if layerwise else [])
        stats: Dict[str, Optional[torch.Tensor]] = {f"{k}_{n}": None for n in names for k in SUBNET_STATS}
        total, ref, parts = None, None, []
        sharing = self.encoder.sharing_prefixes() if self.share_prefixes else contextlib.nullcontext()
        with self.encoder.using_subnet(None), sharing:
            for spec in subnets:
                self.encoder.set_subnet(spec)
                loss, sub_stats, outs = self._subnet_forward(
                    feats, feats_lengths, text, text_lengths, **kwargs
                )
                name = _stats_name(spec, space)
                for k in SUBNET_STATS:
                    stats[f"{k}_{name}"] = sub_stats.get(k)
                parts.append((name, loss.detach()))
                if spec == space.largest:
                    stats.update({k: v for k, v in sub_stats.items() if k != "loss"})
                    total = loss
                    ref = {k: v.detach() for k, v in outs.items() if k != "lens"}
                    ref["lens"] = outs["lens"]
                    continue
                lam1, lam2 = self.lambdas[spec] if spec in self.lambdas else self.lambdas_of(spec)
                total = total + lam1 * loss
                if self.use_kl:
                    kl = self._kl_regulariser(ref, outs, text_lengths)
                    stats[f"kl_{name}"] = kl.detach()
                    parts[-1] = (name, parts[-1][1] + kl.detach())
                    total = total + lam2 * kl
        self._check_finite(parts, stats)
        stats["acc_mean"] = self._mean_of(stats, "acc", subnets)
        stats["loss"] = total.detach()
        return force_gatherable((total, stats, batch_size), total.device)

    def _check_finite(self, parts: List[Tuple[str, torch.Tensor]], stats: Dict) -> None:
        """Record which subnets' loss (+ KL) was NaN/inf: ``nonfinite_<subnet>`` is 1.0 in such a step,
        0.0 in a finite one (one device read per step, where ESPnet's trainer reads every stat before the
        backward anyway; under torch.distributed the ranks agree, as on the update they skip together).
        ESPnet skips an update whose gradient norm is not finite and goes on; when a subnet's loss was
        NaN/inf in ``max_nonfinite_steps`` consecutive training batches that computed it, this raises
        FloatingPointError naming the subnet, which stops the training."""
        flags = torch.stack([~torch.isfinite(p) for _, p in parts]).float()
        dist = torch.distributed
        if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad = []
        for (name, _), flag in zip(parts, flags.tolist()):
            stats[f"nonfinite_{name}"] = torch.tensor(flag)
            if flag:
                bad.append(name)
        if not self.training:
            return
        for name, _ in parts:  # a subnet's run: the batches that computed it, in a row
            self._nonfinite_run[name] = self._nonfinite_run.get(name, 0) + 1 if name in bad else 0
        if not bad:
            return
        runs = {n: self._nonfinite_run[n] for n in bad}
        said = ", ".join(f"subnet {n} ({c} in a row)" for n, c in runs.items())
        logging.warning(f"NaN/inf loss in this batch: {said}; ESPnet skips the update")
        over = {n: c for n, c in runs.items() if self.max_nonfinite_steps and c >= self.max_nonfinite_steps}
        if over:
            raise FloatingPointError(
                "training stopped: NaN/inf loss in " + ", ".join(f"the last {c} batches of subnet {n}" for n, c in
                                                                 over.items())
                + f" that computed it (max_nonfinite_steps: {self.max_nonfinite_steps}); ESPnet skipped those "
                "updates. Resume from an earlier checkpoint with a lower learning rate (or gradient clipping), "
                "or raise max_nonfinite_steps (0: never stop)")

    def _subnet_forward(self, feats, feats_lengths, text, text_lengths, **kwargs):
        """ESPnet's loss of the active subnet on precomputed features: its CTC loss
        (intermediate CTC included) and attention loss (ESPnet's ``_calc_ctc_loss`` and
        ``_calc_att_loss``) interpolated with ``ctc_weight``, and ESPnet's stats.

        Returns the loss, the stats, and the outputs the KL needs: encoder output
        lengths (B,), CTC logits (B, T, V) and decoder logits (B, L, V).
        """
        text = text.masked_fill(text == -1, self.ignore_id)[:, : text_lengths.max()]
        with _ctc_logits_of(self.ctc) as ctc, _outputs_of(self.decoder) as dec:
            enc, enc_lens, intermediate = self.encode_subnet(feats, feats_lengths)
            stats: Dict[str, Optional[torch.Tensor]] = {}
            loss_ctc = loss_att = None
            if self.ctc_weight != 0.0:
                loss_ctc, stats["cer_ctc"] = self._calc_ctc_loss(enc, enc_lens, text, text_lengths)
                stats["loss_ctc"] = loss_ctc.detach()
                if self.interctc_weight != 0.0 and intermediate:
                    loss_inter = 0.0
                    for layer, out in intermediate:
                        loss_ic, cer_ic = self._calc_ctc_loss(out, enc_lens, text, text_lengths)
                        loss_inter = loss_inter + loss_ic
                        stats[f"loss_interctc_layer{layer}"] = loss_ic.detach()
                        stats[f"cer_interctc_layer{layer}"] = cer_ic
                    loss_inter = loss_inter / len(intermediate)
                    loss_ctc = (1 - self.interctc_weight) * loss_ctc + self.interctc_weight * loss_inter
            stats.update(loss_att=None, acc=None, cer=None, wer=None)  # ESPnet's keys, also at ctc_weight 1
            if self.ctc_weight != 1.0:
                # text_lengths is cloned: ESPnet increments it in place for a language token
                loss_att, stats["acc"], stats["cer"], stats["wer"] = self._calc_att_loss(
                    enc, enc_lens, text, text_lengths.clone()
                )
                stats["loss_att"] = loss_att.detach()
        if loss_att is None:
            loss = loss_ctc
        elif loss_ctc is None:
            loss = loss_att
        else:
            loss = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * loss_att
        stats["loss"] = loss.detach()
        outs = {"lens": enc_lens}
        if ctc:
            outs["ctc"] = ctc[0]  # the first CTC loss is the final encoder output's
        if dec:
            outs["att"] = dec[0][0]
        return loss, stats, outs

    def _kl_regulariser(self, ref, outs, text_lengths) -> torch.Tensor:
        """Omega_i = KL(SG(p_max) || p_i), CTC and decoder terms interpolated by
        ``ctc_weight`` and normalised like the corresponding ESPnet losses."""
        omega = 0.0
        batch_size = text_lengths.size(0)
        if "ctc" in outs:
            mask = ~make_pad_mask(outs["lens"], outs["ctc"][..., 0])
            kl_ctc = _kl(ref["ctc"], outs["ctc"], mask) / batch_size
            omega = omega + self.ctc_weight * kl_ctc
        if "att" in outs:
            logits = outs["att"]
            # decoder positions: tokens + <eos> (+ a prompt token when used)
            extra = 1 + (logits.size(1) - 1 - int(text_lengths.max()))
            mask = ~make_pad_mask(text_lengths + extra, logits[..., 0])
            denom = mask.sum() if self.criterion_att.normalize_length else batch_size
            kl_att = _kl(ref["att"], logits, mask) / denom
            omega = omega + (1.0 - self.ctc_weight) * kl_att
        return omega

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As torch's, but encoder keys must match exactly even with ``strict=False``
        (ESPnet's loader uses it): per-subnet BatchNorm statistics and per-bit-width
        step sizes that are missing or unexpected mean the checkpoint was trained with
        another subnet space or encoder shape, and a partial load would be silent."""
        table = state_dict.get("encoder.subnet_space_table")
        ours = self.encoder.subnet_space.names
        own = self.state_dict()
        same_shapes = all(  # otherwise torch's size-mismatch error says more
            own[k].shape == v.shape
            for k, v in state_dict.items()
            if k.startswith("encoder.") and k in own and k != "encoder.subnet_space_table"
        )
        if table is not None and same_shapes and SubnetSpace.names_of_table(table) != ours:
            raise ValueError(
                "checkpoint was trained with another subnet space: "
                f"{', '.join(SubnetSpace.names_of_table(table))}; this model's subnets: "
                f"{', '.join(ours)}"
            )
        self._never_trained = None
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if k.startswith("encoder.")]
        unexpected = [k for k in result.unexpected_keys if k.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(
                "checkpoint does not match this all-in-one encoder (another subnet "
                f"space or architecture?): {len(missing)} missing keys {missing[:4]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:4]}. This model's "
                f"subnets: {', '.join(self.encoder.subnet_space.names)}. To start from "
                "a stock ESPnet checkpoint use --init_param (asr.sh --pretrained_model)."
            )
        if strict and (result.missing_keys or result.unexpected_keys):
            raise RuntimeError(
                f"Error(s) in loading state_dict: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}"
            )
        return result

    def _mean_of(self, stats, key: str, subnets: List[Subnet]) -> Optional[torch.Tensor]:
        names = [_stats_name(s, self.encoder.subnet_space) for s in subnets]
        values = [stats[f"{key}_{n}"] for n in names if stats[f"{key}_{n}"] is not None]
        if not values:
            return None
        return torch.stack([torch.as_tensor(v, dtype=torch.float) for v in values]).mean()


extend_signature(AllInOneASRModel, ESPnetASRModel.__init__)
