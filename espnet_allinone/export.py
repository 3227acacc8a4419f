"""Take one subnet out of an all-in-one ASR model, or ship the whole model.

Three artifacts (``python -m espnet_allinone.bin.export`` writes all of them):

- :func:`export_stock`: a plain ESPnet model directory (``config.yaml`` naming the
  stock encoder, e.g. ``encoder: conformer`` with the subnet's ``num_blocks`` and
  ``linear_units``, and ``model.pth``). It holds the weights the subnet computes
  with (sliced, dequantized from its grid) and the subnet's own BatchNorm
  statistics, so stock ``espnet2.bin.asr_inference`` decodes it without the plugin.
- :func:`export_packed`: the same model with the encoder stored low-bit
  (``encoder.packed``: integer codes packed by :func:`~espnet_allinone.quant.pack_codes`,
  one float32 step per output channel, and the encoder's float parts), the rest of
  the model in ``rest.pth``. :func:`load_packed` rebuilds bit-exactly the weights
  of ``model.pth``.
- :func:`pack_allinone`: an ESPnet model-zoo zip (as ``espnet2.bin.pack`` makes) of
  the all-in-one model itself: ``Speech2Text.from_pretrained(zip, subnet=...)``.
"""

import argparse
import copy
import inspect
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import yaml

from espnet_allinone.elastic import ElasticWeight, SubnetBatchNorm1d
from espnet_allinone.encoders.abs_allinone import is_allinone_encoder
from espnet_allinone.fileio import atomic_dir, atomic_path
from espnet_allinone.quant import PACKED_FORMAT, QuantizedWeight, pack_state, unpack_state
from espnet_allinone.subnet import FULL_PRECISION, Subnet

# Config entries naming files the model needs at construction or decoding time.
FILE_ENTRIES = (("normalize_conf", "stats_file"), ("bpemodel",))


def load_allinone(config_file: Union[str, Path], model_file: Union[str, Path]):
    """Build the all-in-one ESPnet model of a training ``config.yaml`` and checkpoint."""
    from espnet2.tasks.asr import ASRTask

    from espnet_allinone.checkpoint import loading_model_file
    from espnet_allinone.register import register_asr_task

    register_asr_task()
    with loading_model_file(model_file):
        model, _ = ASRTask.build_model_from_file(config_file, model_file, "cpu")
    if not is_allinone_encoder(model.encoder):
        name = type(model.encoder).__name__
        raise ValueError(f"{config_file}: the encoder {name} is not an all-in-one encoder")
    return model.eval()


def _stock_choice(choices, cls) -> Tuple[str, type]:
    """(name, class) of the first stock ESPnet class in ``cls``'s MRO registered in ``choices``."""
    names = {v: k for k, v in reversed(list(choices.classes.items()))}
    for base in cls.__mro__:
        if base in names and not base.__module__.startswith("espnet_allinone"):
            return names[base], base
    raise ValueError(f"{cls.__name__} derives from no stock {choices.name} choice")


def _stock_conf(conf: Optional[Dict], cls: type) -> Dict:
    """The entries of ``conf`` that ``cls.__init__`` accepts."""
    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in (conf or {}).items() if k in accepted}


def stock_config(train_config: Dict, model, subnet: Union[str, Subnet]) -> Dict:
    """The stock ESPnet training config of one subnet.

    ``encoder: allinone_conformer`` becomes ``conformer`` with the subnet's
    ``num_blocks``/``linear_units``, ``model: allinone`` becomes ``espnet``, and
    options the stock classes do not know (subnet space, sampling, lambdas) are
    dropped. Everything else (frontend, decoder, token list...) is unchanged.
    """
    import espnet2.tasks.asr as asr

    spec = model.encoder.subnet_space.get(subnet)
    config = copy.deepcopy(train_config)
    config["encoder"], encoder_cls = _stock_choice(asr.encoder_choices, type(model.encoder))
    accepted = inspect.signature(encoder_cls.__init__).parameters
    if not {"num_blocks", "linear_units"} <= set(accepted):
        raise ValueError(
            f"cannot export {type(model.encoder).__name__}: its stock twin "
            f"{encoder_cls.__name__} has no num_blocks/linear_units (supported: conformer)"
        )
    encoder_conf = _stock_conf(config.get("encoder_conf"), encoder_cls)
    encoder_conf.update(num_blocks=spec.depth, linear_units=spec.width)
    inter = [i for i in encoder_conf.get("interctc_layer_idx") or [] if i < spec.depth]
    if "interctc_layer_idx" in encoder_conf:
        encoder_conf["interctc_layer_idx"] = inter
    config["encoder_conf"] = encoder_conf
    config["model"], model_cls = _stock_choice(asr.model_choices, type(model))
    config["model_conf"] = _stock_conf(config.get("model_conf"), model_cls)
    return config


@torch.no_grad()
def _pad(value: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """``value`` zero-padded at the end of each dimension to ``shape``."""
    out = value.new_zeros(shape)
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out


def subnet_weights(
    model, train_config: Dict, subnet: Union[str, Subnet], pad: bool = True, allow_untrained: bool = False
) -> Tuple[Dict[str, torch.Tensor], Dict[str, QuantizedWeight]]:
    """What the subnet computes with, under stock parameter names.

    Args:
        model: all-in-one ESPnet model; train_config: its training config (dict).
        pad: a layer-wise subnet's narrower FFNs zero-padded to the widest block's width, so that
            a stock encoder (one ``linear_units``) holds them and computes the same (a zero hidden
            unit adds nothing: its pre-activation is 0, every ESPnet activation maps 0 to 0, its
            output column is 0); False: their true shapes (:func:`padded_shapes` lists them).
    Returns:
        state: state dict of the stock model of the subnet (blocks beyond its depth,
            step sizes and other subnets' BatchNorm statistics left out; weights
            sliced and dequantized; BatchNorm statistics the subnet's own). With ``pad``
            it is checked to load strictly into the model of :func:`stock_config`.
        quantized: for every quantized weight key of ``state``, its integer codes
            and steps; ``quantized[k].dequantize()`` equals ``state[k]`` bit-exactly.
    """
    encoder = model.encoder
    spec = encoder.subnet_space.get(subnet)
    encoder.check_trained(spec, allow_untrained)
    prefix = next(n for n, m in model.named_modules() if m is encoder)
    used = {id(m) for top in encoder.subnet_modules(spec) for m in top.modules()}
    own: Dict[str, torch.Tensor] = {}
    quantized: Dict[str, QuantizedWeight] = {}
    with encoder.using_subnet(spec):
        for name, m in encoder.named_modules(prefix=prefix):
            if id(m) not in used or not isinstance(m, (ElasticWeight, SubnetBatchNorm1d)):
                continue
            for key, value in m.export().state_dict().items():  # the layer's stock twin
                own[f"{name}.{key}"] = value
            q = m.integer_weight() if isinstance(m, ElasticWeight) else None
            if q is not None:
                if not torch.equal(q.dequantize(), own[f"{name}.weight"]):
                    raise RuntimeError(f"{name}: integer codes do not rebuild the weight")
                quantized[f"{name}.weight"] = q
    stock = build_stock_model(stock_config(train_config, model, spec))
    state, full = {}, model.state_dict()
    narrower = padded_shapes(model, spec)
    for key, ref in stock.state_dict().items():
        value = own[key] if key in own else full.get(key)
        if value is None or value.shape != (narrower.get(key) or ref.shape):
            raise RuntimeError(f"cannot map {key} {tuple(ref.shape)} from the all-in-one model")
        state[key] = value.detach().clone()
        if pad and key in narrower:
            state[key] = _pad(state[key], tuple(ref.shape))
            if key in quantized:
                q = quantized[key]
                quantized[key] = QuantizedWeight(_pad(q.codes, tuple(ref.shape)), q.step, q.bits)
    if pad:
        stock.load_state_dict(state, strict=True)  # the stock model takes exactly these
    return state, quantized


def padded_shapes(model, subnet: Union[str, Subnet]) -> Dict[str, Tuple[int, ...]]:
    """{state key: true shape} of the FFN tensors of a layer-wise subnet's blocks that are narrower
    than its widest (what :func:`subnet_weights` pads); empty for a uniform subnet."""
    encoder = model.encoder
    spec = encoder.subnet_space.get(subnet)
    prefix = next(n for n, m in model.named_modules() if m is encoder)
    names = {id(m): n for n, m in encoder.named_modules(prefix=prefix)}
    blocks = list(encoder.elastic_layers._modules.values())[: spec.depth]
    out: Dict[str, Tuple[int, ...]] = {}
    with encoder.using_subnet(spec):
        for block, (width, _) in zip(blocks, spec.blocks):
            if width == spec.width:
                continue
            for first, second in encoder.ffn_pairs():
                if not any(first is m for m in block.modules()):
                    continue
                for layer in (first, second):
                    for kind, value in zip(("weight", "bias"), layer.sliced()):
                        if value is not None and value.shape != getattr(layer, kind).shape:
                            out[f"{names[id(layer)]}.{kind}"] = tuple(value.shape)
    return out


def build_stock_model(config: Dict):
    """The stock ESPnet ASR model of ``config`` (randomly initialised)."""
    from espnet2.tasks.asr import ASRTask

    return ASRTask.build_model(argparse.Namespace(**config)).eval()


def _copy_files(config: Dict, out_dir: Path, refer_as: Callable[[Path], str]) -> List[Path]:
    """Copy the files ``config`` refers to into ``out_dir``; point ``config`` at the
    copies, named ``refer_as(copy)``."""
    copied = []
    for *parents, leaf in FILE_ENTRIES:
        holder = config
        for k in parents:
            holder = holder.get(k) or {}
        src = holder.get(leaf)
        if not src:
            continue
        dst = out_dir / Path(src).name
        if Path(src).resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        holder[leaf] = refer_as(dst)
        copied.append(dst)
    return copied


def _absolute(path: Path) -> str:
    return str(path.resolve())


def _write_yaml(config: Dict, path: Path):
    with path.open("w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def export_stock(
    model, train_config: Dict, subnet: Union[str, Subnet], out_dir: Union[str, Path],
    allow_untrained: bool = False,
) -> Path:
    """Write ``out_dir/config.yaml`` and ``out_dir/model.pth`` of the stock subnet model.

    Files the config refers to (normalisation statistics, BPE model) are copied
    into ``out_dir`` and referred to by absolute path. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    state, _ = subnet_weights(model, train_config, subnet, allow_untrained=allow_untrained)
    config = stock_config(train_config, model, subnet)
    with atomic_dir(out_dir) as tmp:  # all files or none
        _copy_files(config, tmp, lambda p: _absolute(out_dir / p.name))
        _write_yaml(config, tmp / "config.yaml")
        torch.save(state, tmp / "model.pth")
    return out_dir


def export_packed(
    model, train_config: Dict, subnet: Union[str, Subnet], out_dir: Union[str, Path],
    allow_untrained: bool = False,
) -> Path:
    """Write the low-bit artifact of a subnet to ``out_dir``.

    ``encoder.packed`` (``torch.save`` of one dict, :data:`PACKED_FORMAT`): an
    index of the encoder's tensors, all integer codes in one uint8 buffer
    (:func:`pack_codes`, ``bits`` per weight), all float32 tensors (steps, biases,
    norms, 32-bit weights) in one float buffer; ``rest.pth``: the other parts of the
    model (frontend, normalisation, decoder, CTC) as a float state dict;
    ``config.yaml``: the stock config. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    spec = model.encoder.subnet_space.get(subnet)
    # true per-block sizes
    state, quantized = subnet_weights(model, train_config, spec, pad=False, allow_untrained=allow_untrained)
    config = stock_config(train_config, model, spec)
    full = {k: tuple(v.shape) for k, v in build_stock_model(config).state_dict().items()}

    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    rest = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    pad_to = {k: full[k] for k in padded_shapes(model, spec)}
    blob = dict(pack_state(encoder, quantized, pad_to), subnet=spec.name)
    with atomic_dir(out_dir) as tmp:  # all files or none
        _copy_files(config, tmp, lambda p: _absolute(out_dir / p.name))
        _write_yaml(config, tmp / "config.yaml")
        torch.save(blob, tmp / "encoder.packed")
        torch.save(rest, tmp / "rest.pth")
    return out_dir


@dataclass(frozen=True)
class PackedSize:
    """Bytes of a packed encoder against the float (32-bit) largest encoder and the bit bound."""

    packed_bytes: int
    bound_bytes: float  # SubnetSize.bits / 8: codes at b bits, float parts at 32
    fp32_largest_bytes: float

    @property
    def ratio(self) -> float:
        """Compression on disk: fp32 largest encoder / packed encoder."""
        return self.fp32_largest_bytes / self.packed_bytes

    @property
    def of_bit_ratio(self) -> float:
        """Share of the theoretical (bit-bound) ratio reached on disk (target >= 0.95)."""
        return self.bound_bytes / self.packed_bytes


def packed_size(encoder, spec: Subnet, packed_dir: Union[str, Path]) -> PackedSize:
    """Size accounting of ``packed_dir/encoder.packed`` (written by :func:`export_packed`)."""
    return PackedSize(
        packed_bytes=(Path(packed_dir) / "encoder.packed").stat().st_size,
        bound_bytes=encoder.subnet_size(spec).bits / 8,
        fp32_largest_bytes=encoder.subnet_size(None).params * FULL_PRECISION / 8,
    )


def load_packed(
    packed_dir: Union[str, Path],
) -> Tuple[Dict, Dict[str, torch.Tensor], Dict[str, QuantizedWeight]]:
    """Read an :func:`export_packed` directory.

    Returns:
        config (stock), state dict (weights rebuilt as ``codes * step``, bit-exactly
        those of :func:`export_stock`), and the integer codes of every quantized weight.
    """
    packed_dir = Path(packed_dir)
    blob = torch.load(packed_dir / "encoder.packed", map_location="cpu", weights_only=True)
    if blob.get("format") != PACKED_FORMAT:
        raise ValueError(f"{packed_dir}/encoder.packed: not a {PACKED_FORMAT} file")
    config = yaml.safe_load((packed_dir / "config.yaml").read_text())
    state = dict(torch.load(packed_dir / "rest.pth", map_location="cpu", weights_only=True))
    encoder, quantized = unpack_state(blob)
    state.update(encoder)
    return config, state, quantized


def build_packed_model(packed_dir: Union[str, Path]):
    """The stock ESPnet model of a packed subnet (float weights rebuilt from the codes); to run the codes
    on integer kernels, export ONNX graphs (:mod:`espnet_allinone.onnx_export`)."""
    config, state, _ = load_packed(packed_dir)
    model = build_stock_model(config)
    model.load_state_dict(state, strict=True)
    return model


def pack_allinone(
    config_file: Union[str, Path], model_file: Union[str, Path], out_zip: Union[str, Path]
) -> Path:
    """ESPnet model-zoo zip of the all-in-one model (all subnets in one file).

    Made by ``python -m espnet2.bin.pack asr`` (what asr.sh's packing stage runs) in a
    staging directory, including the files the config refers to, so
    ``Speech2Text.from_pretrained(zip, subnet=...)`` decodes any subnet.
    """
    out_zip = Path(out_zip).resolve()
    config = yaml.safe_load(Path(config_file).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "exp"
        stage.mkdir()
        # pack stores paths relative to its working directory: the staging root
        options = [f"exp/{p.name}" for p in _copy_files(config, stage, lambda p: f"exp/{p.name}")]
        _write_yaml(config, stage / "config.yaml")
        shutil.copyfile(model_file, stage / "model.pth")
        with atomic_path(out_zip) as tmp_zip:
            cmd = [sys.executable, "-m", "espnet2.bin.pack", "asr", "--outpath", str(tmp_zip),
                   "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/model.pth"]
            for option in options:
                cmd += ["--option", option]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"espnet2.bin.pack failed: {proc.stderr[-2000:]}")
    return out_zip


def export_subnets(
    asr_train_config: Union[str, Path], asr_model_file: Union[str, Path], subnets: List[str],
    out_dir: Union[str, Path], formats: Tuple[str, ...] = ("stock", "packed", "zip"), allow_untrained: bool = False,
    log: Callable[[str], None] = print,
) -> List[Path]:
    """Write ``formats`` (``stock``, ``packed``, ``zip``, ``onnx``) of each of ``subnets`` (names, or ``["all"]``)
    into ``out_dir/<subnet>/<format>`` (``zip``: ``out_dir/allinone.zip``), logging each packed encoder's
    and ONNX graph's size against its bit bound. Returns the directories and files written.

    Raises ValueError, before writing anything, for an encoder other than ``allinone_conformer``, a name
    outside the subnet space, or a subnet computing with never-trained state (unless ``allow_untrained``).
    """
    train_config = yaml.safe_load(Path(asr_train_config).read_text())
    if train_config.get("encoder") != "allinone_conformer":
        raise ValueError(f"export supports the allinone_conformer encoder, not {train_config.get('encoder')!r}")
    model = load_allinone(asr_train_config, asr_model_file)
    encoder, space = model.encoder, model.encoder.subnet_space
    specs = list(space) if list(subnets) == ["all"] else [space.get(s) for s in subnets]
    for spec in specs:  # every one of them before writing any
        encoder.check_trained(spec, allow_untrained)
    out_dir, written = Path(out_dir), []
    if "packed" in formats:
        log(f"float32 largest encoder: {encoder.subnet_size(None).params * FULL_PRECISION // 8} bytes")
        log("| subnet | packed encoder [bytes] | bit bound [bytes] | ratio vs fp32 largest | of the bit ratio |")
        log("|---|---|---|---|---|")
    for spec in specs:
        if "stock" in formats:
            written.append(export_stock(model, train_config, spec, out_dir / spec.name / "stock", allow_untrained))
        if "packed" in formats:
            written.append(export_packed(model, train_config, spec, out_dir / spec.name / "packed", allow_untrained))
            size = packed_size(encoder, spec, written[-1])
            log(f"| {spec} | {size.packed_bytes} | {size.bound_bytes:.0f} | {size.ratio:.2f}x "
                f"| {100 * size.of_bit_ratio:.1f}% |")
        if "onnx" in formats:
            from espnet_allinone.onnx_export import export_onnx, graph_size

            written.append(out_dir / spec.name / "onnx")
            graphs = export_onnx(model, train_config, spec, written[-1], allow_untrained=allow_untrained)
            for kind, path in graphs.items():
                line = f"{spec} {kind}: {path} ({path.stat().st_size} bytes"
                if kind in ("float", "int8", "int4"):
                    size = graph_size(model, spec, path)
                    line += f"; bit bound of encoder + CTC {size.bound_bytes:.0f} bytes: {100 * size.of_bit_bound:.1f}%"
                log(line + ")")
    if "zip" in formats:
        written.append(pack_allinone(asr_train_config, asr_model_file, out_dir / "allinone.zip"))
    return written
