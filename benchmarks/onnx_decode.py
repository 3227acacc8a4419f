#!/usr/bin/env python3
"""Whole-utterance decoding of a test set: PyTorch (fake-quant all-in-one model, fp32 stock export) vs the
ONNX Runtime export (float, int8, int4 graphs), greedy CTC and joint CTC/attention beam search.

    cd egs2/mini_allinone/asr1
    python ../../../benchmarks/onnx_decode.py --exp exp/asr_allinone --data_dir data/test \\
        --subnets 6-576-8bit 4-288-4bit --configs conf/decode_asr_greedy.yaml conf/decode_asr_beam.yaml

Per subnet and decode config, every system decodes the set in its own spawned process with the one decode
loop (:func:`espnet_allinone.bin.decode_subnets.decode_set`, one thread): ``fake-quant`` (the all-in-one
model, ``espnet_allinone.inference.Speech2Text`` with ``subnet``), ``torch fp32`` (stock ESPnet
``Speech2Text`` on ``--formats stock``: what deploying the subnet with PyTorch gives), and
``ort float|int8|int4`` (:class:`espnet_allinone.onnx_inference.OnnxSpeech2Text`). Prints RTF, the
speed-up over torch fp32, WER (:mod:`espnet_allinone.scoring.wer`), the WER change and the number of
hypotheses that differ from fake-quant, and the process's peak RSS. Targets (issue 16): decode RTF of the
int8 export >= 1.5x better than torch fp32, |WER change| <= 0.3 absolute.
"""

import argparse
import multiprocessing
import tempfile
from pathlib import Path

import yaml


def _rss_peak() -> int:
    status = Path("/proc/self/status").read_text()  # VmHWM: ru_maxrss would survive the spawn's exec
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def _decode(job):
    system, source, conf, data_dir, out = job
    import torch

    torch.set_num_threads(1)
    from espnet_allinone.bin.decode_subnets import DONE, decode_set

    if system == "fake-quant":
        from espnet_allinone.inference import Speech2Text

        s2t = Speech2Text(asr_train_config=source[0], asr_model_file=source[1], subnet=source[2], **conf)
    elif system == "torch fp32":
        from espnet2.bin.asr_inference import Speech2Text as StockSpeech2Text

        if conf.get("ctc_greedy"):  # a plugin decoding option: stock Speech2Text has no ctc_greedy
            from espnet_allinone.inference import Speech2Text as StockSpeech2Text  # noqa: F811
        s2t = StockSpeech2Text(asr_train_config=f"{source}/config.yaml", asr_model_file=f"{source}/model.pth",
                               **conf)
    else:
        from espnet_allinone.onnx_inference import OnnxSpeech2Text

        s2t = OnnxSpeech2Text(source, precision=system.split()[1], threads=1, **conf)
    result = decode_set(s2t, Path(data_dir), Path(out))
    return float((Path(out) / DONE).read_text()), result["failed"], _rss_peak()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc_mean.ave.pth")
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi-style dir with wav.scp and text")
    p.add_argument("--subnets", nargs="+", default=["6-576-8bit", "4-288-4bit"])
    p.add_argument("--configs", nargs="+", default=["conf/decode_asr_greedy.yaml", "conf/decode_asr_beam.yaml"])
    p.add_argument("--output_dir", type=Path, default=None, help="keep the hypotheses here (default: temporary)")
    args = p.parse_args()

    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.export import export_stock, load_allinone
    from espnet_allinone.onnx_export import export_onnx
    from espnet_allinone.scoring.wer import score

    config_file, model_file = args.exp / "config.yaml", args.exp / args.model_file
    model = load_allinone(config_file, model_file)
    train_config = yaml.safe_load(config_file.read_text())
    ref = read_text(args.data_dir / "text")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.output_dir or Path(tmp)
        print(f"# {args.data_dir} ({len(ref)} utterances), one thread per process; {args.exp}")
        print("| subnet | decode | system | RTF | speed-up vs torch fp32 | WER [%] | WER change vs fake-quant "
              "| hypotheses differing from fake-quant | peak RSS [MB] |")
        print("|---|---|---|---|---|---|---|---|---|")
        for sub in args.subnets:
            stock_dir, onnx_dir = Path(tmp) / sub / "stock", Path(tmp) / sub / "onnx"
            export_stock(model, train_config, sub, stock_dir)
            files = export_onnx(model, train_config, sub, onnx_dir)
            systems = {"fake-quant": (str(config_file), str(model_file), sub), "torch fp32": str(stock_dir)}
            systems.update({f"ort {k}": str(onnx_dir) for k in ("float", "int8", "int4") if k in files})
            for conf_file in args.configs:
                conf = yaml.safe_load(Path(conf_file).read_text()) or {}
                conf.pop("subnet", None)
                name = Path(conf_file).stem
                rows = {}
                for system, source in systems.items():
                    out = out_root / sub / name / system.replace(" ", "_")
                    with ctx.Pool(1) as pool:  # a fresh process: its own peak RSS, no other system's threads
                        rtf, failed, rss = pool.apply(_decode, ((system, source, conf, str(args.data_dir), str(out)),))
                    hyps = read_text(out / "text")
                    rows[system] = (rtf, failed, rss, hyps, score({k: ref[k] for k in hyps}, hyps).wer)
                base_rtf, base_hyps, base_wer = rows["torch fp32"][0], rows["fake-quant"][3], rows["fake-quant"][4]
                for system, (rtf, failed, rss, hyps, wer) in rows.items():
                    differ = sum(hyps[k] != base_hyps.get(k) for k in hyps)
                    print(f"| {sub} | {name} | {system} | {rtf:.4f} | {base_rtf / rtf:.2f}x | {wer:.2f} "
                          f"| {wer - base_wer:+.2f} | {differ} of {len(hyps)} | {rss / 2 ** 20:.0f} |", flush=True)
                    if failed:
                        print(f"  {system}: {len(failed)} failed: {sorted(failed)[:5]}")
    print("targets: int8 decode RTF >= 1.5x better than torch fp32; |WER change| <= 0.3 absolute")


if __name__ == "__main__":
    main()
