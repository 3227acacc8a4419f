"""A subnet as ONNX graphs for ONNX Runtime: float, and low-bit with exactly the trained integer codes.

    from espnet_allinone.onnx_export import export_onnx
    paths = export_onnx(model, train_config, "6-576-8bit", "exp/export/6-576-8bit/onnx")

writes into the directory (:mod:`espnet_allinone.onnx_inference` decodes it, without the training code):

- ``frontend.onnx``: ESPnet's ``DefaultFrontend`` (STFT power, log-mel), ``speech`` (B, S) ->
  ``feats`` (B, T, n_mels); the STFT as a strided convolution with a windowed DFT basis
  (:class:`DftStft`): torch's complex STFT does not export, and ONNX's ``STFT`` op runs 2x slower in ORT.
- ``encoder_ctc.onnx``: global MVN + the stock subnet's encoder + CTC log-softmax, ``feats`` ->
  ``enc`` (B, T', D), ``enc_lengths``, ``logp`` (B, T', V). The relative positional table is computed
  for each input's length (:class:`RuntimeRelPositionalEncoding`) instead of stored (5000 frames).
- ``encoder_ctc.int8.onnx`` (quantized subnets): the same graph where every Linear on a trained grid is
  ORT's dynamic int8 MatMul (``DynamicQuantizeLinear`` + ``MatMulInteger``, fused by ORT into
  ``DynamicQuantizeMatMul``; activations quantized per tensor at run time) whose int8 weight IS the
  trained codes and whose per-column scale IS the trained step, and every convolution on a trained grid
  takes its weight from ``DequantizeLinear`` of its int8 codes (computed in float: ORT's integer
  convolutions are slower than its float ones here, docs/notes/onnx_runtime_research.md section 5; decode
  with the session option ``session.disable_quant_qdq = 1`` so that ORT folds it into a float weight at
  load, as :mod:`espnet_allinone.onnx_inference` does). A depthwise convolution is exported folded with its
  BatchNorm, so its weight is float.
- ``encoder_ctc.int4.onnx`` (subnets of <= 4 bits): the Linears as ORT's ``MatMulNBits`` (4-bit codes
  stored two per byte, the channel's step repeated per block, accuracy level 0: float compute on the
  dequantized codes), the convolutions' codes as ONNX ``INT4`` tensors (the graph converted to opset 21).
- ``decoder.onnx`` (attention models): one step of the stock decoder with its per-layer caches,
  ``ys`` (N, L), ``memory``, ``cache_<i>`` (N, L-1, D) -> ``logp`` (N, V), ``new_cache_<i>``; ``memory``
  is (N, T', 2 L D), the output of ``decoder_memory.onnx``: every layer's source-attention keys and values
  of the encoder output (:class:`DecoderMemory`), computed once per utterance instead of at every step
  (stock ``forward_one_step`` projects the whole encoder output again at each step).
- ``config.yaml``: token list, special ids, sample rate, the files above.

Graphs are exported by torch's TorchScript-based exporter (``dynamo=False``, opset 17, dynamic batch
and lengths); the int8 graph is ORT's own ``quantize_dynamic`` output for exactly those MatMul nodes,
with its weight and scale initializers then replaced by the codes and steps (no re-quantization).
Needs ``pip install espnet_allinone[deploy]`` (onnx, onnxruntime).
"""

import copy
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import torch
import yaml
from espnet2.layers.stft import Stft

from espnet_allinone.compat import PositionalEncoding, RelPositionalEncoding, check_short_utt
from espnet_allinone.data.audio import frontend_min_samples, sample_rate
from espnet_allinone.export import build_stock_model, padded_shapes, stock_config, subnet_weights
from espnet_allinone.fileio import atomic_path
from espnet_allinone.quant import QuantizedWeight
from espnet_allinone.subnet import Subnet

FRONTEND, DECODER, DECODER_MEMORY, CONFIG = "frontend.onnx", "decoder.onnx", "decoder_memory.onnx", "config.yaml"
ENCODER = {"float": "encoder_ctc.onnx", "int8": "encoder_ctc.int8.onnx", "int4": "encoder_ctc.int4.onnx"}
NBITS_BLOCKS = (16, 32, 64, 128, 256)  # block sizes of ORT's MatMulNBits CPU kernels
INT4_OPSET = 21  # DequantizeLinear of INT4 tensors


class DftStft(Stft):
    """ESPnet's :class:`Stft` (single channel, one-sided) as a strided Conv1d with a windowed DFT basis.

    Same frames, window and lengths as the stock module (reflect padding when ``center``); frames past a
    shorter utterance's length are not zeroed (ESPnet's ``LogMel`` zeroes its output there).
    Forward: (B, S) samples, (B,) lengths -> (B, T, n_fft // 2 + 1, 2) real/imag, (B,) frames.
    """

    def __init__(self, stft: Stft):
        super().__init__(n_fft=stft.n_fft, win_length=stft.win_length, hop_length=stft.hop_length,
                         window=stft.window, center=stft.center, normalized=stft.normalized,
                         onesided=stft.onesided)
        if not self.onesided:
            raise ValueError("DftStft: only a one-sided STFT (ESPnet's default) exports")
        n = self.n_fft
        if self.window is not None:
            window = getattr(torch, f"{self.window}_window")(self.win_length, dtype=torch.float64)
        else:
            window = torch.ones(self.win_length, dtype=torch.float64)
        left = (n - self.win_length) // 2  # torch.stft centres a shorter window in the frame
        window = torch.nn.functional.pad(window, (left, n - self.win_length - left))
        angle = 2 * math.pi * torch.arange(n // 2 + 1, dtype=torch.float64)[:, None] * torch.arange(n) / n
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
        if self.normalized:
            basis = basis * n ** -0.5
        self.register_buffer("basis", basis.float().unsqueeze(1), persistent=False)  # (2F, 1, n_fft)

    def forward(self, input: torch.Tensor, ilens: torch.Tensor):
        if input.dim() != 2:
            raise ValueError(f"DftStft takes (batch, samples), not {tuple(input.shape)}")
        x = input.unsqueeze(1)
        if self.center:
            x = torch.nn.functional.pad(x, (self.n_fft // 2, self.n_fft // 2), mode="reflect")
            ilens = ilens + 2 * (self.n_fft // 2)
        real, imag = torch.nn.functional.conv1d(x, self.basis, stride=self.hop_length).chunk(2, dim=1)
        olens = torch.div(ilens - self.n_fft, self.hop_length, rounding_mode="trunc") + 1
        return torch.stack([real, imag], dim=-1).transpose(1, 2), olens


class RuntimeRelPositionalEncoding(RelPositionalEncoding):
    """ESPnet's (latest) relative positional encoding with its table computed for each input's length.

    The stock module keeps a 5000-frame table that an exported graph would store as a constant
    (2 x 5000 x D floats); here the (1, 2T - 1, D) table of relative positions T-1 .. -(T-1) is built from
    ``x.size(1)`` at run time, value for value the stock one.
    """

    def extend_pe(self, x: torch.Tensor):
        t = x.size(1)
        position = torch.arange(t - 1, -t, -1, dtype=torch.float32, device=x.device)
        div_term = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32, device=x.device)
                             * -(math.log(10000.0) / self.d_model))
        angle = position[:, None] * div_term
        self.pe = torch.stack([torch.sin(angle), torch.cos(angle)], -1).reshape(1, 2 * t - 1, -1).to(x.dtype)


class RuntimePositionalEncoding(PositionalEncoding):
    """ESPnet's absolute positional encoding (the Transformer decoder's) with its (1, T, D) table
    computed for each input's length instead of a stored 5000-frame constant, value for value."""

    def __init__(self, d_model: int, dropout_rate: float):
        super().__init__(d_model, dropout_rate, max_len=1)

    def extend_pe(self, x: torch.Tensor):
        position = torch.arange(x.size(1), dtype=torch.float32, device=x.device)
        div_term = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32, device=x.device)
                             * -(math.log(10000.0) / self.d_model))
        angle = position[:, None] * div_term
        self.pe = torch.stack([torch.sin(angle), torch.cos(angle)], -1).reshape(1, x.size(1), -1).to(x.dtype)


_RUNTIME_POSITIONS = {RelPositionalEncoding: RuntimeRelPositionalEncoding,
                      PositionalEncoding: RuntimePositionalEncoding}


def _runtime_positions(module: torch.nn.Module) -> int:
    """Replace every stock (Rel)PositionalEncoding of ``module`` by the runtime one; returns how many."""
    found = [(name, m) for name, m in module.named_modules()
             if type(m) in _RUNTIME_POSITIONS and not getattr(m, "reverse", False)]
    for name, m in found:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, _RUNTIME_POSITIONS[type(m)](m.d_model, m.dropout.p))
    return len(found)


def _true_widths(model: torch.nn.Module, shapes: Dict[str, Tuple[int, ...]]) -> int:
    """Shrink the zero-padded Linears of a layer-wise subnet's stock model (:func:`padded_shapes`:
    {key: true shape}) to their true size, so that the graph computes only the subnet's units;
    returns how many. Padded units are zero: the function is unchanged."""
    names = {name.rsplit(".", 1)[0] for name in shapes}
    for name in names:
        old = model.get_submodule(name)
        out_features, in_features = shapes.get(f"{name}.weight", old.weight.shape)
        new = torch.nn.Linear(in_features, out_features, bias=old.bias is not None)
        with torch.no_grad():
            new.weight.copy_(old.weight[:out_features, :in_features])
            if old.bias is not None:
                new.bias.copy_(old.bias[:out_features])
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
    return len(names)


class Frontend(torch.nn.Module):
    """(B, S) samples -> (B, T, n_mels) features of a stock ``DefaultFrontend`` (its STFT as :class:`DftStft`)."""

    def __init__(self, frontend: torch.nn.Module):
        super().__init__()
        if not isinstance(getattr(frontend, "stft", None), Stft) or not hasattr(frontend, "logmel"):
            raise ValueError(f"ONNX export supports ESPnet's DefaultFrontend, not {type(frontend).__name__}")
        self.frontend = copy.deepcopy(frontend)
        self.frontend.stft = DftStft(frontend.stft)

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        return self.frontend(speech, speech_lengths)


class EncoderCTC(torch.nn.Module):
    """(B, T, D) features -> encoder output, its lengths and CTC log-probabilities of a stock ESPnet model."""

    def __init__(self, asr_model):
        super().__init__()
        self.normalize, self.encoder, self.ctc = asr_model.normalize, asr_model.encoder, asr_model.ctc

    def forward(self, feats: torch.Tensor, feats_lengths: torch.Tensor):
        if self.normalize is not None:  # ESPnet's GlobalMVN works in place: not on the caller's tensor
            feats, feats_lengths = self.normalize(feats.clone(), feats_lengths)
        enc, enc_lengths, _ = self.encoder(feats, feats_lengths)
        return enc, enc_lengths, self.ctc.log_softmax(enc)


class DecoderStep(torch.nn.Module):
    """One step of a stock decoder's ``forward_one_step`` with caches: (N, L) prefixes, (N, T', D) memory,
    per-layer (N, L-1, D) caches -> (N, V) log-probabilities of the next token and the (N, L, D) caches.

    With caches only the last query row of the self-attention mask is read, which for a causal mask is
    all ones: the mask is built as ones, so nothing of it depends on L but its shape.
    """

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, ys: torch.Tensor, memory: torch.Tensor, *cache: torch.Tensor):
        mask = torch.ones_like(ys, dtype=torch.bool).unsqueeze(1)  # (N, 1, L)
        logp, new_cache = self.decoder.forward_one_step(ys, mask, memory, cache=list(cache))
        return (logp, *new_cache)


class DecoderMemory(torch.nn.Module):
    """(N, T', D) encoder output -> (N, T', 2 L D): every decoder layer's source-attention keys and values
    (its stock ``linear_k`` and ``linear_v`` on the encoder output), once per utterance."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.attentions = torch.nn.ModuleList(layer.src_attn for layer in decoder.decoders)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return torch.cat([t for a in self.attentions for t in (a.linear_k(enc), a.linear_v(enc))], dim=-1)


class _Columns(torch.nn.Module):
    """Stands in for a source attention's ``linear_k`` / ``linear_v``: its columns of the precomputed
    :class:`DecoderMemory` output, so that the stock attention forward runs unchanged on them."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return memory[..., self.start: self.stop]


def _projects_memory(layers) -> bool:
    return all(isinstance(getattr(getattr(layer, "src_attn", None), name, None), torch.nn.Linear)
               for layer in layers for name in ("linear_k", "linear_v"))


def _reading_projected_memory(decoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of a stock decoder whose layers read their source-attention keys and values from the
    :class:`DecoderMemory` output (the same function, the projections done once per utterance)."""
    decoder = copy.deepcopy(decoder)
    for i, layer in enumerate(decoder.decoders):
        d = layer.src_attn.linear_k.out_features
        layer.src_attn.linear_k, layer.src_attn.linear_v = _Columns(2 * i * d, (2 * i + 1) * d), \
            _Columns((2 * i + 1) * d, (2 * i + 2) * d)
    return decoder


def _digest(array: np.ndarray) -> str:
    """Key of a float array by value (``+ 0`` maps -0.0 to 0.0: the codes' 0 is stored as either)."""
    value = np.ascontiguousarray(array, dtype=np.float32) + np.float32(0)
    return hashlib.sha1(value.tobytes()).hexdigest() + str(array.shape)


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"ONNX export needs {module}: pip install 'espnet_allinone[deploy]' ({e})") from None


def _export(module, args, path: Path, inputs: List[str], outputs: List[str], dynamic: Dict, opset: int):
    with atomic_path(path) as tmp:
        torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs,
                          opset_version=opset, dynamo=False, dynamic_axes=dynamic)


def _token_list(train_config: Dict) -> List[str]:
    tokens = train_config["token_list"]
    if isinstance(tokens, str):
        tokens = [line.rstrip("\n").split(" ")[0] for line in Path(tokens).read_text().splitlines()]
    return list(tokens)


@torch.no_grad()
def export_onnx(
    model, train_config: Dict, subnet: Union[str, Subnet], out_dir: Union[str, Path], opset: int = 17,
    allow_untrained: bool = False,
) -> Dict[str, Path]:
    """Write the graphs of ``subnet`` (see the module docstring) and ``config.yaml``; returns the paths by
    kind: ``frontend``, ``float``, ``int8``, ``int4``, ``decoder`` (those that apply) and ``config``."""
    onnx = _need("onnx")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = model.encoder.subnet_space.get(subnet)
    state, _ = subnet_weights(model, train_config, spec, allow_untrained=allow_untrained)
    _, quantized = subnet_weights(model, train_config, spec, pad=False, allow_untrained=allow_untrained)
    stock = build_stock_model(stock_config(train_config, model, spec))
    stock.load_state_dict(state, strict=True)
    stock.eval()
    _true_widths(stock, padded_shapes(model, spec))
    _runtime_positions(stock)
    paths: Dict[str, Path] = {}
    n_mels = int(train_config.get("input_size") or 0)
    if stock.frontend is not None:
        paths["frontend"] = out_dir / FRONTEND
        _export(Frontend(stock.frontend).eval(), (torch.randn(1, 16000), torch.tensor([16000])),
                paths["frontend"], ["speech", "speech_lengths"], ["feats", "feats_lengths"],
                {"speech": {0: "B", 1: "S"}, "speech_lengths": {0: "B"}, "feats": {0: "B", 1: "T"},
                 "feats_lengths": {0: "B"}}, opset)
        n_mels = int(stock.frontend.output_size())
    paths["float"] = out_dir / ENCODER["float"]
    feats = torch.randn(1, 200, n_mels)
    _export(EncoderCTC(stock), (feats, torch.tensor([200])), paths["float"], ["feats", "feats_lengths"],
            ["enc", "enc_lengths", "logp"],
            {"feats": {0: "B", 1: "T"}, "feats_lengths": {0: "B"}, "enc": {0: "B", 1: "T_out"},
             "enc_lengths": {0: "B"}, "logp": {0: "B", 1: "T_out"}}, opset)
    graph = onnx.load(str(paths["float"]))
    compact(graph)
    onnx.save(graph, str(paths["float"]))
    if quantized:
        paths["int8"] = out_dir / ENCODER["int8"]
        with atomic_path(paths["int8"]) as tmp:
            write_quantized_graph(paths["float"], Path(tmp), quantized, "int8")
            onnx.checker.check_model(str(tmp))
        if spec.bits <= 4:
            paths["int4"] = out_dir / ENCODER["int4"]
            with atomic_path(paths["int4"]) as tmp:
                write_quantized_graph(paths["float"], Path(tmp), quantized, "int4")
                onnx.checker.check_model(str(tmp))
    layers = getattr(stock.decoder, "decoders", None)
    if stock.decoder is not None and hasattr(stock.decoder, "forward_one_step") and layers is not None:
        d = stock.encoder.output_size()
        n = len(layers)
        width = 2 * n * d if _projects_memory(layers) else d
        if width != d:  # the source attentions' keys and values once per utterance, not at every step
            paths["decoder_memory"] = out_dir / DECODER_MEMORY
            _export(DecoderMemory(stock.decoder).eval(), (torch.randn(1, 20, d),), paths["decoder_memory"],
                    ["enc"], ["memory"], {"enc": {0: "N", 1: "T"}, "memory": {0: "N", 1: "T"}}, opset)
        paths["decoder"] = out_dir / DECODER
        cache = tuple(torch.randn(1, 2, d) for _ in range(n))
        dynamic = {"ys": {0: "N", 1: "L"}, "memory": {0: "N", 1: "T"}, "logp": {0: "N"}}
        dynamic.update({f"cache_{i}": {0: "N", 1: "L_1"} for i in range(n)})
        dynamic.update({f"new_cache_{i}": {0: "N", 1: "L"} for i in range(n)})
        step = DecoderStep(_reading_projected_memory(stock.decoder) if width != d else stock.decoder).eval()
        _export(step, (torch.tensor([[1, 2, 3]]), torch.randn(1, 20, width), *cache),
                paths["decoder"], ["ys", "memory", *(f"cache_{i}" for i in range(n))],
                ["logp", *(f"new_cache_{i}" for i in range(n))], dynamic, opset)
    paths["config"] = out_dir / CONFIG
    config = dict(
        subnet=spec.name, token_list=_token_list(train_config), token_type=train_config.get("token_type", "char"),
        sos=int(stock.sos), eos=int(stock.eos), blank_id=int(stock.blank_id),
        fs=sample_rate(train_config.get("frontend_conf")), min_samples=frontend_min_samples(stock.frontend),
        min_frames=max(1, int(check_short_utt(getattr(stock.encoder, "embed", None), 1)[1])),
        ctc_weight=float((train_config.get("model_conf") or {}).get("ctc_weight", 0.5)),
        files={k: p.name for k, p in paths.items() if k != "config"},
        decoder_layers=len(layers) if "decoder" in paths else 0,
        encoder_output_size=int(stock.encoder.output_size()),
    )
    with atomic_path(paths["config"]) as tmp:
        Path(tmp).write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return paths


def compact(model) -> None:
    """Drop what ORT does not need from an ONNX model in place: the exporter's value_info (ORT infers the
    shapes) and its long node and intermediate value names (short ones instead). At the mini model's size
    these are ~10 % of an int8 file; the graph computes the same."""
    graph = model.graph
    del graph.value_info[:]
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        return  # subgraphs refer to outer values by name: keep the names
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    renamed: Dict[str, str] = {}
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        for j, name in enumerate(node.output):
            if name and name not in keep:
                renamed[name] = node.output[j] = f"v{len(renamed)}"
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name in renamed:
                node.input[j] = renamed[name]


def _int4_array(codes: np.ndarray) -> np.ndarray:
    """int8 codes in -8..7 as an ml_dtypes int4 array (stored by ONNX two per byte)."""
    import ml_dtypes

    if codes.size and (codes.min() < -8 or codes.max() > 7):
        raise ValueError("int4: codes outside -8..7")
    return codes.astype(ml_dtypes.int4)


def _nbits_block(k: int, n: int) -> int:
    """The MatMulNBits block size storing a (K, N) 4-bit weight in the fewest bytes (padding + scales)."""
    return min(NBITS_BLOCKS, key=lambda b: n * math.ceil(k / b) * (b // 2 + 4))


def _nbits_node(onnx, numpy_helper, node, q: QuantizedWeight, name: str, accuracy_level: int):
    """A MatMulNBits node (and its initializers) computing ``node``'s MatMul with 4-bit codes ``q``."""
    codes = q.codes.numpy().astype(np.int16)  # (N, K)
    n, k = codes.shape
    block = _nbits_block(k, n)
    blocks = math.ceil(k / block)
    fields = np.full((n, blocks * block), 8, np.uint8)  # zero point 8 (ORT's default): code c -> c + 8
    fields[:, :k] = codes + 8
    fields = fields.reshape(n, blocks, block)
    packed = (fields[..., 0::2] | (fields[..., 1::2] << 4)).astype(np.uint8)  # (N, blocks, block / 2)
    scales = np.repeat(q.step.numpy().astype(np.float32), blocks)  # (N * blocks,)
    inits = [numpy_helper.from_array(packed, name + "_nbits"), numpy_helper.from_array(scales, name + "_nbits_scale")]
    new = onnx.helper.make_node(
        "MatMulNBits", [node.input[0], name + "_nbits", name + "_nbits_scale"], list(node.output),
        name=node.name + "_nbits", domain="com.microsoft", K=k, N=n, bits=4, block_size=block,
        accuracy_level=accuracy_level,
    )
    return new, inits


def write_quantized_graph(float_path: Path, out_path: Path, quantized: Dict[str, QuantizedWeight],
                          kind: str = "int8", accuracy_level: int = 0) -> Dict[str, int]:
    """Write ``out_path``: ``float_path`` with every MatMul / Conv whose weight initializer is a trained
    quantized weight (matched by value; a MatMul holds the Linear's weight transposed) computing from
    the trained codes. ``kind`` ``int8``: MatMuls as ORT dynamic int8 MatMuls; ``int4``: as MatMulNBits
    (``accuracy_level`` 0: float compute on the dequantized 4-bit weight, 4: int8 compute). Convolutions:
    weight = DequantizeLinear(int8 codes, step, axis 0). Returns the number of MatMuls and Convs replaced.
    """
    onnx = _need("onnx")
    from onnx import numpy_helper

    linears, convs = {}, {}
    for key, q in quantized.items():
        if q.codes.dim() == 2:
            linears[_digest(q.dequantize().t().numpy())] = (key, q)
        else:
            convs[_digest(q.dequantize().numpy())] = (key, q)
    model = onnx.load(str(float_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    mat_targets: Dict[str, Tuple[str, QuantizedWeight]] = {}
    mat_nodes = []
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            hit = linears.get(_digest(numpy_helper.to_array(inits[node.input[1]])))
            if hit is not None:
                mat_targets[node.input[1]] = hit
                mat_nodes.append(node)
    if not mat_nodes:
        raise RuntimeError(f"{float_path}: no MatMul has a trained quantized weight")

    if kind == "int8":
        _need("onnxruntime")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(float_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=[n.name for n in mat_nodes])
        model = onnx.load(str(out_path))
        graph = model.graph
        inits = {i.name: i for i in graph.initializer}
        for name, (key, q) in mat_targets.items():
            for suffix, value in (("_quantized", q.codes.t().contiguous().numpy()),
                                  ("_scale", q.step.numpy().astype(np.float32)),
                                  ("_zero_point", np.zeros(q.codes.size(0), np.int8))):
                init = inits.get(name + suffix)
                if init is None or tuple(init.dims) != value.shape:
                    raise RuntimeError(f"{key}: ORT's quantized graph has no {name + suffix} of shape {value.shape}")
                init.CopyFrom(numpy_helper.from_array(value, init.name))
    elif kind == "int4":
        if any(int(q.codes.abs().max()) > 7 for _, q in mat_targets.values()):
            raise ValueError("int4: a weight has codes outside -7..7 (a subnet of more than 4 bits)")
        replaced = {}
        for node in mat_nodes:
            key, q = mat_targets[node.input[1]]
            replaced[node.name] = _nbits_node(onnx, numpy_helper, node, q, node.input[1], accuracy_level)
        nodes = []
        for node in graph.node:
            if node.name in replaced:
                new, new_inits = replaced[node.name]
                nodes.append(new)
                graph.initializer.extend(new_inits)
            else:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    else:
        raise ValueError(f"kind must be int8 or int4, not {kind!r}")

    inits = {i.name: i for i in graph.initializer}  # of the graph written above
    conv_nodes = []
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            hit = convs.get(_digest(numpy_helper.to_array(inits[node.input[1]])))
            if hit is not None:
                conv_nodes.append((node, hit[1]))
    if kind == "int4":  # 4-bit convolution codes as ONNX INT4 (two per byte): DequantizeLinear from opset 21
        from onnx import version_converter

        by_weight = {node.input[1]: q for node, q in conv_nodes}
        model = version_converter.convert_version(model, INT4_OPSET)  # the nodes are new objects
        graph = model.graph
        conv_nodes = [(n, by_weight[n.input[1]]) for n in graph.node if n.op_type == "Conv" and n.input[1] in by_weight]
    container = _int4_array if kind == "int4" else (lambda a: a)
    dequantize = []
    for node, q in conv_nodes:
        name = node.input[1]
        graph.initializer.extend([
            numpy_helper.from_array(container(q.codes.numpy()), name + "_codes"),
            numpy_helper.from_array(q.step.numpy().astype(np.float32), name + "_step"),
            numpy_helper.from_array(container(np.zeros(q.codes.size(0), np.int8)), name + "_zero"),
        ])
        dequantize.append(onnx.helper.make_node(
            "DequantizeLinear", [name + "_codes", name + "_step", name + "_zero"], [name + "_dequantized"],
            name=name + "_dequantize", axis=0))
        node.input[1] = name + "_dequantized"
    nodes = dequantize + list(graph.node)  # initializer-only inputs: valid at the top of the order
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    compact(model)
    onnx.save(model, str(out_path))
    return {"MatMul": len(mat_nodes), "Conv": len(conv_nodes)}


def codes_in_graph(path: Union[str, Path]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{weight name: ((out, in, ...) int8 codes, (out,) steps)} of every weight a low-bit graph stores as
    integer codes: MatMulInteger and MatMulNBits weights (in the trained Linear's layout), DequantizeLinear'd
    convolution weights."""
    onnx = _need("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in inits:
            w = node.input[1]
            out[w] = (inits[w].T, inits[w[: -len("_quantized")] + "_scale"])
        elif node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            packed, n, k = inits[node.input[1]], attrs["N"], attrs["K"]
            fields = np.stack([packed & 15, packed >> 4], -1).reshape(n, -1)[:, :k]
            scales = inits[node.input[2]].reshape(n, -1)
            if not (scales == scales[:, :1]).all():
                raise ValueError(f"{node.name}: block scales differ within a channel: not per-channel codes")
            out[node.input[1]] = ((fields.astype(np.int16) - 8).astype(np.int8), scales[:, 0])
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            out[node.input[0]] = (inits[node.input[0]].astype(np.int8), inits[node.input[1]])
    return out


@dataclass(frozen=True)
class GraphSize:
    """Bytes of an exported encoder graph against the bit bound of the subnet's encoder + CTC head."""

    file_bytes: int
    bound_bytes: float  # encoder SubnetSize.bits / 8 (codes at b bits, float parts at 32) + CTC head fp32

    @property
    def of_bit_bound(self) -> float:
        """Share of the bit bound reached on disk (1.0: nothing stored beyond the codes and float parts)."""
        return self.bound_bytes / self.file_bytes


def graph_size(model, subnet: Union[str, Subnet], path: Union[str, Path]) -> GraphSize:
    """Size accounting of an ``encoder_ctc*.onnx`` file of ``subnet`` of the all-in-one ``model``."""
    ctc = sum(p.numel() for p in model.ctc.parameters()) * 4
    return GraphSize(Path(path).stat().st_size, model.encoder.subnet_size(subnet).bits / 8 + ctc)

