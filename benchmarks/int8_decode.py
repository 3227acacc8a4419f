#!/usr/bin/env python3
"""Decode a data set with a subnet twice: fake-quant (the all-in-one model) and its
export on integer kernels (:mod:`espnet_allinone.int8`); count differing hypotheses.
With ``--float_export`` also with the float stock export (stock ``Speech2Text``),
which should give the fake-quant hypotheses exactly.

    python benchmarks/int8_decode.py \\
        --asr_train_config exp/asr_allinone/config.yaml \\
        --asr_model_file exp/asr_allinone/valid.acc_mean.ave.pth \\
        --data_dir data/test --config conf/decode_asr.yaml --subnets 6-576-8bit 4-288-4bit

Prints, per subnet: utterances, hypotheses that differ, WER of each (plain Levenshtein,
:mod:`espnet_allinone.scoring.wer`) and the decoding time of each (one thread).
"""

import argparse
import tempfile
import time
from pathlib import Path

import soundfile
import torch
import yaml

from espnet_allinone.data.kaldi import read_table, read_text
from espnet_allinone.export import export_stock, load_allinone, subnet_weights
from espnet_allinone.int8 import to_integer_kernels
from espnet_allinone.scoring.wer import score


def _decode(s2t, wavs):
    hyps, spent = {}, 0.0
    for key, path in wavs:
        wav, _ = soundfile.read(path, dtype="float32")
        t0 = time.perf_counter()
        with torch.no_grad():
            out = s2t(wav)
        spent += time.perf_counter() - t0
        hyps[key] = out[0][0] if out else ""
    return hyps, spent


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_dir", required=True, help="Kaldi-style dir with wav.scp and text")
    p.add_argument("--config", default=None, help="decode YAML (beam_size, ctc_weight, ...)")
    p.add_argument("--subnets", nargs="+", required=True)
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument("--float_export", action="store_true", help="also decode the float export")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from espnet2.bin.asr_inference import Speech2Text as StockSpeech2Text

    from espnet_allinone.inference import Speech2Text

    conf = yaml.safe_load(open(args.config)) if args.config else {}
    conf.pop("subnet", None)
    data = Path(args.data_dir)
    wavs = list(read_table(data / "wav.scp").items())[: args.limit]
    ref = read_text(data / "text")
    ref = {k: ref[k] for k, _ in wavs}
    model = load_allinone(args.asr_train_config, args.asr_model_file)
    train_config = yaml.safe_load(Path(args.asr_train_config).read_text())
    print("| subnet | utterances | hypotheses differing | WER fake-quant [%] | WER int8 [%] "
          "| decode time fake-quant [s] | decode time int8 [s] |")
    print("|---|---|---|---|---|---|---|")
    for subnet in args.subnets:
        fake = Speech2Text(args.asr_train_config, args.asr_model_file, subnet=subnet, **conf)
        with tempfile.TemporaryDirectory() as tmp:
            export_stock(model, train_config, subnet, tmp)
            int8 = StockSpeech2Text(f"{tmp}/config.yaml", f"{tmp}/model.pth", **conf)
            exported = StockSpeech2Text(f"{tmp}/config.yaml", f"{tmp}/model.pth", **conf)
        _, quantized = subnet_weights(model, train_config, subnet)
        to_integer_kernels(int8.asr_model, quantized)
        h_fake, t_fake = _decode(fake, wavs)
        h_int8, t_int8 = _decode(int8, wavs)
        differ = sum(h_fake[k] != h_int8[k] for k in h_fake)
        print(f"| {subnet} | {len(wavs)} | {differ} | {score(ref, h_fake).wer:.1f} "
              f"| {score(ref, h_int8).wer:.1f} | {t_fake:.1f} | {t_int8:.1f} |", flush=True)
        if args.float_export:
            h_float, _ = _decode(exported, wavs)
            n = sum(h_fake[k] != h_float[k] for k in h_fake)
            print(f"{subnet}: float export vs fake-quant: {n} of {len(wavs)} hypotheses differ")


if __name__ == "__main__":
    main()
