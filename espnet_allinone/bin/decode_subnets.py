#!/usr/bin/env python3
"""Decode data sets with many subnets of one all-in-one model, loading it once per job.

    python -m espnet_allinone.bin.decode_subnets \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc_mean.ave.pth \\
        --data_dir data/dev data/test --subnets all --config conf/decode_asr.yaml \\
        --output_dir exp/asr/decode --nj 2

Writes ``<output_dir>/<subnet>/<set>/text`` (ESPnet's ``1best_recog/text`` format) and
``<output_dir>/<subnet>/<set>/rtf`` (decoding seconds / audio seconds). Subnets already
decoded are skipped, so an interrupted run resumes. Each of ``--nj`` processes holds
one model and decodes its share of the subnets on one thread.
"""

import argparse
import multiprocessing
import time
from pathlib import Path
from typing import Dict, List

import yaml


def _wav_scp(data_dir: Path) -> List[tuple]:
    out = []
    for line in (data_dir / "wav.scp").read_text().splitlines():
        if line.strip():
            key, path = line.split(maxsplit=1)
            out.append((key, path))
    return out


def _decode_job(args) -> None:
    job, nj, requested, opts = args
    import soundfile
    import torch

    torch.set_num_threads(1)
    from espnet_allinone.inference import Speech2Text, select_subnet

    s2t = Speech2Text(
        asr_train_config=opts["asr_train_config"], asr_model_file=opts["asr_model_file"],
        device=opts["device"], **opts["decode_conf"]
    )
    space = s2t.asr_model.encoder.subnet_space
    subnets = space.names if requested == ["all"] else [space.get(s).name for s in requested]
    for subnet in subnets[job::nj]:
        spec = select_subnet(s2t.asr_model, subnet)
        for data_dir in opts["data_dirs"]:
            out = Path(opts["output_dir"]) / spec.name / data_dir.name
            if (out / "rtf").exists():
                continue
            out.mkdir(parents=True, exist_ok=True)
            lines, audio, spent = [], 0.0, 0.0
            for key, path in _wav_scp(data_dir):
                wav, sr = soundfile.read(path, dtype="float32")
                t0 = time.perf_counter()
                with torch.no_grad():
                    hyps = s2t(wav)
                spent += time.perf_counter() - t0
                audio += len(wav) / sr
                lines.append(f"{key} {hyps[0][0] if hyps else ''}".rstrip())
            (out / "text").write_text("\n".join(lines) + "\n")
            (out / "rtf").write_text(f"{spent / audio:.4f}\n")
            print(f"[decode] job {job}: {spec} {data_dir.name}: {len(lines)} utterances, "
                  f"RTF {spent / audio:.3f}", flush=True)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_dir", nargs="+", required=True, help="Kaldi-style dirs with wav.scp")
    p.add_argument("--subnets", nargs="+", default=["all"], help="names, or 'all' for the whole space")
    p.add_argument("--config", default=None, help="decode YAML (beam_size, ctc_weight, ...)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    decode_conf: Dict = yaml.safe_load(open(args.config)) if args.config else {}
    decode_conf.pop("subnet", None)
    opts = dict(asr_train_config=args.asr_train_config, asr_model_file=args.asr_model_file,
                device=args.device, decode_conf=decode_conf, output_dir=args.output_dir,
                data_dirs=[Path(d) for d in args.data_dir])
    nj = max(1, args.nj if args.subnets == ["all"] else min(args.nj, len(args.subnets)))
    jobs = [(j, nj, args.subnets, opts) for j in range(nj)]
    if nj == 1:
        _decode_job(jobs[0])
    else:
        with multiprocessing.get_context("spawn").Pool(nj) as pool:
            pool.map(_decode_job, jobs)


if __name__ == "__main__":
    main()
