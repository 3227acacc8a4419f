#!/usr/bin/env python3
"""Whole-utterance decoding of a test set: PyTorch (fake-quant all-in-one model, fp32 stock export) vs the
ONNX Runtime export (float, int8, int4 graphs), greedy CTC and joint CTC/attention beam search.

    cd egs2/mini_allinone/asr1
    python ../../../benchmarks/onnx_decode.py --exp exp/asr_allinone --data_dir data/test \\
        --subnets 6-576-8bit 4-288-4bit --configs conf/decode_asr_greedy.yaml conf/decode_asr_beam.yaml

Per subnet and decode config, every system decodes the set in its own spawned process with the one decode
loop (:func:`espnet_allinone.decode.decode_set`, one thread), the systems taking turns every
``--chunk`` utterances (so that the machine's drift, which moves RTFs by 20-30 % here between runs minutes
apart, hits all of them alike): ``fake-quant`` (the all-in-one
model, ``espnet_allinone.inference.Speech2Text`` with ``subnet``), ``torch fp32`` (stock ESPnet
``Speech2Text`` on ``--formats stock``: what deploying the subnet with PyTorch gives), and
``ort float|int8|int4`` (:class:`espnet_allinone.onnx_inference.OnnxSpeech2Text`). Prints RTF, the
speed-up over torch fp32, WER (:mod:`espnet_allinone.scoring.wer`), the WER change and the number of
hypotheses that differ from fake-quant, and the process's peak RSS. Targets: decode RTF of the
int8 export >= 1.5x better than torch fp32, |WER change| <= 0.3 absolute.
"""

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import yaml


def _rss_peak() -> int:
    status = Path("/proc/self/status").read_text()  # VmHWM: ru_maxrss would survive the spawn's exec
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def _build(system, source, conf):
    if system == "fake-quant":
        from espnet_allinone.inference import Speech2Text

        return Speech2Text(asr_train_config=source[0], asr_model_file=source[1], subnet=source[2], **conf)
    if system == "torch fp32":
        from espnet2.bin.asr_inference import Speech2Text as StockSpeech2Text

        if conf.get("ctc_greedy"):  # a plugin decoding option: stock Speech2Text has no ctc_greedy
            from espnet_allinone.inference import Speech2Text as StockSpeech2Text  # noqa: F811
        return StockSpeech2Text(asr_train_config=f"{source}/config.yaml", asr_model_file=f"{source}/model.pth", **conf)
    from espnet_allinone.onnx_inference import OnnxSpeech2Text

    return OnnxSpeech2Text(source, precision=system.split()[1], threads=1, **conf)


def _worker(conn, system, source, conf, data_dir, out):
    """One system in its own process: on each list of utterances, decode them (the one decode loop,
    :func:`~espnet_allinone.decode.decode_set`) and send back time, audio and hypotheses."""
    import torch

    torch.set_num_threads(1)
    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.decode import decode_set

    s2t = _build(system, source, conf)
    conn.send("ready")
    chunk = 0
    while True:
        keys = conn.recv()
        if keys is None:
            break
        part = Path(out) / f"part{chunk}"
        r = decode_set(s2t, Path(data_dir), part, keys=keys)
        conn.send((r["seconds"], r["audio_seconds"], read_text(part / "text"), r["failed"]))
        chunk += 1
    conn.send(_rss_peak())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc_mean.ave.pth")
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi-style dir with wav.scp and text")
    p.add_argument("--subnets", nargs="+", default=["6-576-8bit", "4-288-4bit"])
    p.add_argument("--configs", nargs="+", default=["conf/decode_asr_greedy.yaml", "conf/decode_asr_beam.yaml"])
    p.add_argument("--output_dir", type=Path, default=None, help="keep the hypotheses here (default: temporary)")
    p.add_argument("--chunk", type=int, default=20, help="utterances per turn of the round robin")
    args = p.parse_args()

    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.export import export_stock, load_allinone
    from espnet_allinone.onnx_export import export_onnx
    from espnet_allinone.scoring.wer import score

    config_file, model_file = args.exp / "config.yaml", args.exp / args.model_file
    model = load_allinone(config_file, model_file)
    train_config = yaml.safe_load(config_file.read_text())
    ref = read_text(args.data_dir / "text")
    from espnet_allinone.data.audio import DataDirAudio

    keys = DataDirAudio(args.data_dir, 1).keys()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.output_dir or Path(tmp)
        print(f"# {args.data_dir} ({len(keys)} utterances), one thread per process, systems interleaved every "
              f"{args.chunk} utterances; {args.exp}")
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
                workers = {}
                for system, source in systems.items():
                    parent, child = ctx.Pipe()
                    out = out_root / sub / name / system.replace(" ", "_")
                    proc = ctx.Process(target=_worker, args=(child, system, source, conf, str(args.data_dir), str(out)))
                    proc.start()
                    workers[system] = (proc, parent)
                    parent.recv()  # loaded, one at a time
                totals = {system: [0.0, 0.0, {}, {}] for system in systems}
                for i in range(0, len(keys), args.chunk):  # round robin: drift of the machine hits all alike
                    for system, (_, conn) in workers.items():
                        time.sleep(0.3)  # the last system's thread pools spin-wait briefly after a run
                        conn.send(keys[i: i + args.chunk])
                        seconds, audio, hyps, failed = conn.recv()
                        t = totals[system]
                        t[0] += seconds
                        t[1] += audio
                        t[2].update(hyps)
                        t[3].update(failed)
                rows = {}
                for system, (proc, conn) in workers.items():
                    conn.send(None)
                    rss = conn.recv()
                    proc.join()
                    seconds, audio, hyps, failed = totals[system]
                    rows[system] = (seconds / audio, failed, rss, hyps, score({k: ref[k] for k in hyps}, hyps).wer)
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
