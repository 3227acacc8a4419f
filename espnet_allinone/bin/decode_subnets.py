#!/usr/bin/env python3
"""Decode data sets with many subnets of one all-in-one model, loading it once per job.

    python -m espnet_allinone.bin.decode_subnets \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc_mean.ave.pth \\
        --data_dir data/dev data/test --subnets all --config conf/decode_asr.yaml \\
        --output_dir exp/asr/decode --nj 2

Writes, for every subnet and data set, into ``<output_dir>/<subnet>/<set>/``:

- ``text``: one line per utterance (ESPnet's ``1best_recog/text`` format); an utterance
  that cannot be decoded gets an empty hypothesis, as stock ``asr_inference`` writes
  for a too-short one, so scoring counts its words as deletions;
- ``failed``: ``<utt> <wav.scp entry>: <reason>`` for each such utterance (empty if none);
- ``rtf``: decoding seconds / audio seconds of the decoded utterances. Written last:
  it marks the set done.

Each file is written under a temporary name and renamed, so it is complete or absent.
A set is skipped when its ``rtf`` exists and its ``text`` holds exactly the utterances of
the data dir; otherwise (an interrupted or older run, a changed data dir) it is decoded
again. Each of ``--nj`` processes holds one model and decodes its share of the subnets
on one thread.

The data dir is read as asr.sh reads it (:mod:`espnet_allinone.data.audio`): ``wav.scp``
entries may be files or commands (``sox a.flac -t wav - |``), and a ``segments`` file cuts
utterances out of recordings. Audio at another sample rate is resampled to the model's
(with a warning), multi-channel audio is decoded from its first channel (with a
warning). An unreadable, empty or too short input gets one line naming the utterance,
the entry and the reason, the rest of the set is decoded, and the run ends with a
summary per set. The exit status is 0 when every failure is such a data problem, 1 with
``--fail_on_bad_audio true``.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from espnet_allinone.decode import check_data_dirs, decode_subnets, finish


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils.types import str2bool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_dir", nargs="+", required=True, help="Kaldi-style dirs with wav.scp")
    p.add_argument("--subnets", nargs="+", default=["all"], help="names, or 'all' for the whole space")
    p.add_argument("--config", default=None, help="decode YAML (beam_size, ctc_weight, ...)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fail_on_bad_audio", type=str2bool, default=False,
                   help="exit with status 1 if any utterance could not be decoded "
                        "(it is still listed, and the rest decoded)")
    p.add_argument("--allow_untrained", type=str2bool, default=False,
                   help="decode subnets that compute with never-trained step sizes or BatchNorm "
                        "statistics (refused by default: the error names them and the way out)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    problem = check_data_dirs([Path(d) for d in args.data_dir])
    if problem:
        parser.error(problem)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from espnet_allinone.elastic import NeverTrainedError

    try:
        results = decode_subnets(
            args.asr_train_config, args.asr_model_file, [Path(d) for d in args.data_dir], args.output_dir,
            subnets=args.subnets, decode_conf=yaml.safe_load(open(args.config)) if args.config else {},
            nj=args.nj, device=args.device, allow_untrained=args.allow_untrained,
        )
    except NeverTrainedError as e:
        print(f"[decode] error: {e}", file=sys.stderr, flush=True)
        return 2
    return finish(results, args.output_dir, args.fail_on_bad_audio)


if __name__ == "__main__":
    sys.exit(main())
