#!/usr/bin/env python3
"""Estimate the BatchNorm statistics of layer-wise subnets, or of subnets whose statistics training
never updated, and store them with the model.

    python -m espnet_allinone.bin.recalibrate --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/valid.acc_mean.ave.pth --data_dir data/train --num_utts 300 \\
        --subnet "6:576x8*2,288x4*4" --output_model exp/asr/recalibrated.pth

A layer-wise subnet's blocks use the statistics trained for their (width, bits) in uniform subnets,
whose earlier blocks differ; a width outside the grid has none. This estimates them from
``--num_utts`` utterances of ``--data_dir`` (evenly spread, batches of ``--batch_size``; the
cumulative average, as Once-for-All and US-Nets recalibrate), under a key of the subnet's block
prefix (:func:`espnet_allinone.encoders.abs_allinone.recalibrated_key`), and writes the whole
state dict to ``--output_model``: decode, export or search with it as ``--asr_model_file``. Nothing
else changes (weights, the statistics of every other subnet).

A subnet of the space that training never ran (e.g. ``num_random_subnets: 0`` leaves the middle of the
grid unsampled) has BatchNorm statistics no batch updated; decoding and export refuse it and point
here. For such a subnet this estimates those statistics, in place, the same way.
"""

import argparse
import sys
from typing import List, Optional


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_dir", required=True, help="training data (Kaldi-style dir with wav.scp)")
    p.add_argument("--subnet", nargs="+", required=True,
                   help="layer-wise subnets (DEPTH:WxB,...), or subnets of the space whose statistics "
                        "were never trained")
    p.add_argument("--num_utts", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--output_model", required=True)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    from espnet_allinone.recalibrate import recalibrate_model

    try:
        recalibrate_model(args.asr_train_config, args.asr_model_file, args.data_dir, args.subnet,
                          args.output_model, num_utts=args.num_utts, batch_size=args.batch_size)
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
