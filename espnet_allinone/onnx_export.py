"""A subnet's encoder + CTC head as ONNX, float and int8 with the trained integer codes.

    from espnet_allinone.onnx_export import export_ctc_onnx
    paths = export_ctc_onnx(model, train_config, "6-576-8bit", "exp/onnx")

writes ``encoder_ctc.onnx`` (float: the stock subnet model of :func:`~espnet_allinone.export.subnet_weights`,
global MVN, encoder and CTC log-softmax; inputs ``feats`` (B, T, n_mels) and ``feats_lengths`` (B,),
outputs ``logp`` (B, T', V) and ``logp_lengths`` (B,)) and, for a quantized subnet,
``encoder_ctc.int8.onnx``: every encoder Linear whose weight is on a trained grid runs as ONNX Runtime's
dynamic int8 MatMul (``DynamicQuantizeLinear`` + ``MatMulInteger``, which ORT fuses into
``DynamicQuantizeMatMul``: activations quantized per tensor at run time) whose int8 weight IS the trained
codes and whose per-column scale IS the trained step (no re-quantization). Convolutions and activation x
activation products stay float (ORT's integer convolutions are slower than its float ones here:
docs/notes/onnx_runtime_research.md, section 5).

The graph is exported with torch's TorchScript-based exporter (``dynamo=False``; the stock
ConformerEncoder exports unchanged, dynamic T); the int8 graph is ORT's own ``quantize_dynamic`` output for
exactly those MatMul nodes, with its weight and scale initializers then replaced by the codes and steps.
Needs ``pip install espnet_allinone[deploy]`` (onnx, onnxruntime).
"""

import hashlib
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np
import torch

from espnet_allinone.export import build_stock_model, stock_config, subnet_weights
from espnet_allinone.quant import QuantizedWeight
from espnet_allinone.subnet import SubnetSpec

FLOAT_NAME, INT8_NAME = "encoder_ctc.onnx", "encoder_ctc.int8.onnx"


class EncoderCTC(torch.nn.Module):
    """(B, T, D) features -> (B, T', V) CTC log-probabilities of a stock ESPnet ASR model."""

    def __init__(self, asr_model):
        super().__init__()
        self.normalize, self.encoder, self.ctc = asr_model.normalize, asr_model.encoder, asr_model.ctc

    def forward(self, feats: torch.Tensor, feats_lengths: torch.Tensor):
        if self.normalize is not None:  # ESPnet's GlobalMVN works in place: not on the caller's tensor
            feats, feats_lengths = self.normalize(feats.clone(), feats_lengths)
        enc, enc_lengths, _ = self.encoder(feats, feats_lengths)
        return self.ctc.log_softmax(enc), enc_lengths


def _digest(array: np.ndarray) -> str:
    """Key of a float array by value (``+ 0`` maps -0.0 to 0.0: the codes' 0 is stored as either)."""
    value = np.ascontiguousarray(array, dtype=np.float32) + np.float32(0)
    return hashlib.sha1(value.tobytes()).hexdigest() + str(array.shape)


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"ONNX export needs {module}: pip install 'espnet_allinone[deploy]' ({e})") from None


@torch.no_grad()
def export_ctc_onnx(
    model, train_config: Dict, subnet: Union[str, SubnetSpec], out_dir: Union[str, Path],
    opset: int = 17,
) -> Dict[str, Path]:
    """Write the float graph and (quantized subnets) the int8 graph of ``subnet``; returns their paths."""
    onnx = _need("onnx")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = model.encoder.subnet_space.get(subnet)
    state, quantized = subnet_weights(model, train_config, spec)
    stock = build_stock_model(stock_config(train_config, model, spec))
    stock.load_state_dict(state, strict=True)
    wrapper = EncoderCTC(stock).eval()
    n_mels = int(stock.frontend.output_size()) if stock.frontend is not None else int(train_config["input_size"])
    feats, lengths = torch.randn(1, 200, n_mels), torch.tensor([200])
    paths = {"float": out_dir / FLOAT_NAME}
    torch.onnx.export(
        wrapper, (feats, lengths), str(paths["float"]), input_names=["feats", "feats_lengths"],
        output_names=["logp", "logp_lengths"], opset_version=opset, dynamo=False,
        dynamic_axes={"feats": {0: "B", 1: "T"}, "feats_lengths": {0: "B"}, "logp": {0: "B", 1: "T_out"},
                      "logp_lengths": {0: "B"}},
    )
    if quantized:
        paths["int8"] = out_dir / INT8_NAME
        replace_weights_with_codes(paths["float"], paths["int8"], quantized)
        onnx.checker.check_model(str(paths["int8"]))
    return paths


def replace_weights_with_codes(float_path: Path, int8_path: Path, quantized: Dict[str, QuantizedWeight]) -> int:
    """Write ``int8_path``: the MatMuls of ``float_path`` whose weight initializer is a trained quantized Linear
    weight (transposed, matched by value) as ORT dynamic int8 MatMuls on its codes and steps. Returns their count."""
    onnx = _need("onnx")
    _need("onnxruntime")
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    by_value = {}
    for key, q in quantized.items():
        if q.codes.dim() == 2:  # a Linear: the exporter writes weight.T as the MatMul's B
            by_value[_digest(q.dequantize().t().numpy())] = (key, q)
    graph = onnx.load(str(float_path)).graph
    inits = {i.name: i for i in graph.initializer}
    targets: Dict[str, Tuple[str, QuantizedWeight]] = {}  # initializer name -> (state key, codes)
    nodes = []
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            hit = by_value.get(_digest(numpy_helper.to_array(inits[node.input[1]])))
            if hit is not None:
                targets[node.input[1]] = hit
                nodes.append(node.name)
    if not nodes:
        raise RuntimeError(f"{float_path}: no MatMul has a trained quantized weight")
    quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes)
    model = onnx.load(str(int8_path))
    inits = {i.name: i for i in model.graph.initializer}
    for name, (key, q) in targets.items():
        for suffix, value in (("_quantized", q.codes.t().contiguous().numpy()),
                              ("_scale", q.step.numpy().astype(np.float32)),
                              ("_zero_point", np.zeros(q.codes.size(0), np.int8))):
            init = inits.get(name + suffix)
            if init is None or tuple(init.dims) != value.shape:
                raise RuntimeError(f"{key}: ORT's quantized graph has no {name + suffix} of shape {value.shape}")
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    onnx.save(model, str(int8_path))
    return len(targets)


def trained_codes_in_graph(int8_path: Union[str, Path]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{initializer name: (int8 (K, N) weight, (N,) scale)} of every MatMulInteger of an int8 graph."""
    onnx = _need("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(int8_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in inits:
            w = node.input[1]
            out[w] = (inits[w], inits[w[: -len("_quantized")] + "_scale"])
    return out
