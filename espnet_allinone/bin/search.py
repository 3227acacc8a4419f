#!/usr/bin/env python3
"""Find the best layer-wise subnets of a trained all-in-one model within a budget.

    python -m espnet_allinone.bin.search --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/valid.acc_mean.ave.pth --data_dir data/dev \\
        --budget size=1.5MB --output_dir exp/asr/search_1.5MB [--export_dir exp/asr/export]

``--budget``: ``size=1.5MB`` (the encoder's packed size, bit bound), ``ratio=10x`` (compression
against the float largest encoder, the paper's counting) or ``latency=20ms`` (encoder + CTC of 10 s
of audio, batch 1, ``--threads`` threads, on the exported int8 ONNX graph); several must all hold,
the first is the cost axis. The method (:mod:`espnet_allinone.search`): evolutionary search over
depth x per-block (FFN width, bits), scored by greedy-CTC WER on ``--proxy_utts`` dev utterances;
the uniform grid subnets are scored too. The Pareto front's points (at most ``--final``) and the
grid subnets within the budget are then decoded on the whole ``--data_dir`` (greedy CTC, one utterance
at a time: the hypotheses of ``Speech2Text(..., ctc_greedy=True)``), and for
a latency budget measured on their exported graphs (predicted vs measured, and what a FLOP-linear
model would have said). Writes into ``--output_dir``:

- ``candidates.csv``: every scored subnet (name, depth, size, ratio, latency, proxy WER, dev WER,
  on the front, uniform grid);
- ``pareto.png``: proxy WER against cost, the front, the decoded points, the grid subnets marked;
- ``RESULTS.md``: the decoded points and the chosen subnet (lowest dev WER within the budget).

Subnets that compute with never-trained state (step sizes or BatchNorm statistics no training step set)
are skipped with a line naming what was never trained; ``espnet_allinone.bin.recalibrate`` estimates
missing BatchNorm statistics if they should be searched.

Prints the chosen subnet's name; ``--export_dir`` exports it (``--formats``, as
``espnet_allinone.bin.export``).
"""

import argparse
import logging
import sys
from typing import List, Optional

from espnet_allinone.search import NoSubnetWithinBudget, run_search


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_dir", required=True, help="dev set (Kaldi-style dir with wav.scp and text)")
    p.add_argument("--budget", nargs="+", required=True, help="size=1.5MB | ratio=10x | latency=20ms")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--proxy_utts", type=int, default=100, help="dev utterances of the proxy (evenly spread)")
    p.add_argument("--population", type=int, default=24)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--mutate", type=float, default=0.3, help="per-block mutation probability")
    p.add_argument("--depths", type=int, nargs="+", default=None, help="default: the subnet space's depths")
    p.add_argument("--final", type=int, default=6, help="front points decoded on the whole dev set")
    p.add_argument("--threads", type=int, default=2, help="threads of the latency measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export_dir", default=None, help="export the chosen subnet here")
    p.add_argument("--formats", nargs="+", default=["onnx"], choices=["stock", "packed", "onnx"])
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        run_search(args.asr_train_config, args.asr_model_file, args.data_dir, args.budget, args.output_dir,
                   proxy_utts=args.proxy_utts, population=args.population, generations=args.generations,
                   mutate=args.mutate, depths=args.depths, final=args.final, threads=args.threads, seed=args.seed,
                   export_dir=args.export_dir, formats=args.formats, log=lambda line: print(line, flush=True))
    except NoSubnetWithinBudget as e:
        print(f"[search] {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
