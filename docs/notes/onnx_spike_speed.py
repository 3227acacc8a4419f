"""Spike for issue 16, not yet a benchmark of this plugin's export.

A stock ConformerEncoder goes to ONNX (TorchScript exporter, opset 17, dynamic T) and runs with ONNX
Runtime in fp32 and after ORT's ``quantize_dynamic`` (per-channel int8 weights RE-QUANTIZED by ORT, not
the trained codes; op types from argv[1]). Both are compared with PyTorch fp32 at batch 1, 2 threads,
1000 frames (10 s of audio).

    python docs/notes/onnx_spike_speed.py MatMul
"""

import sys
import timeit
import warnings

import numpy as np
import onnxruntime as ort
import torch
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from onnxruntime.quantization import QuantType, quantize_dynamic

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
OPS = sys.argv[1].split(",") if len(sys.argv) > 1 else ["MatMul"]


def build(units, blocks, d=144, heads=4, idim=40):
    torch.manual_seed(0)
    return ConformerEncoder(
        idim, output_size=d, attention_heads=heads, linear_units=units, num_blocks=blocks, input_layer="conv2d",
        normalize_before=True, macaron_style=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn", activation_type="swish", use_cnn_module=True, cnn_module_kernel=15,
    ).eval()


class Wrap(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x, xl):
        return self.enc(x, xl)[0]


def bench(f, n=10):
    """Median seconds of ``n`` calls after one warm-up call."""
    f()
    return float(np.median(timeit.repeat(f, number=1, repeat=n)))


def main():
    for name, kw in [("mini 6-576", dict(units=576, blocks=6)),
                     ("paper 12-2048 (d=256, 80 mel)", dict(units=2048, blocks=12, d=256, idim=80))]:
        w = Wrap(build(**kw)).eval()
        x = torch.randn(1, 1000, kw.get("idim", 40))
        xl = torch.tensor([1000])
        path = f"/tmp/onnx_spike_{kw['blocks']}.onnx"
        torch.onnx.export(w, (x, xl), path, input_names=["x", "xl"], output_names=["y"],
                          dynamic_axes={"x": {1: "T"}, "y": {1: "T2"}}, opset_version=17, dynamo=False)
        quantize_dynamic(path, path + ".int8.onnx", weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=OPS)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
        sf = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        sq = ort.InferenceSession(path + ".int8.onnx", so, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy(), "xl": xl.numpy()}
        with torch.no_grad():
            tp = bench(lambda: w(x, xl))
            ref = w(x, xl).numpy()
        tf, tq = bench(lambda: sf.run(None, feed)), bench(lambda: sq.run(None, feed))
        err = np.abs(sf.run(None, feed)[0] - ref).max()
        q = sq.run(None, feed)[0]
        print(f"{name}: torch fp32 {tp * 1000:.1f} ms, ORT fp32 {tf * 1000:.1f} ms ({tp / tf:.2f}x, max abs diff "
              f"{err:.1e}), ORT int8 dynamic {OPS} {tq * 1000:.1f} ms ({tp / tq:.2f}x vs torch); int8 rel err "
              f"{np.linalg.norm(q - ref) / np.linalg.norm(ref):.3f}")


if __name__ == "__main__":
    main()
