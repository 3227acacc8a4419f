#!/usr/bin/env python3
"""Decode data dirs with the ONNX graphs of an exported subnet (ONNX Runtime; no training code).

    python -m espnet_allinone.bin.export --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/valid.acc_mean.ave.pth --subnet 6-576-8bit --formats onnx --out_dir exp/export
    python -m espnet_allinone.bin.onnx_decode --onnx_dir exp/export/6-576-8bit/onnx --precision int8 \\
        --data_dir data/test --config conf/decode_asr_beam.yaml --output_dir exp/export/6-576-8bit/decode

writes ``<output_dir>/<precision>/<set>/{text,failed,rtf}`` with the decode loop of
:mod:`espnet_allinone.bin.decode_subnets` (same formats, same handling of bad audio, a set already
decoded is skipped). The decode YAML takes ``Speech2Text``'s keys that
:class:`~espnet_allinone.onnx_inference.OnnxSpeech2Text` supports (beam search, ``ctc_greedy``,
``ctc_lexicon_decoder``); any other is an error naming it.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from espnet_allinone.decode import check_data_dirs, decode_onnx, finish


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils.types import str2bool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx_dir", required=True, help="an export's <subnet>/onnx directory")
    p.add_argument("--precision", nargs="+", default=["int8"], choices=["float", "int8", "int4"],
                   help="encoder graphs to decode with (default: int8)")
    p.add_argument("--data_dir", nargs="+", required=True, help="Kaldi-style dirs with wav.scp")
    p.add_argument("--config", default=None, help="decode YAML (beam_size, ctc_weight, ctc_greedy, ...)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--fail_on_bad_audio", type=str2bool, default=False,
                   help="exit with status 1 if any utterance could not be decoded")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    problem = check_data_dirs([Path(d) for d in args.data_dir])
    if problem:
        parser.error(problem)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        results = decode_onnx(args.onnx_dir, [Path(d) for d in args.data_dir], args.output_dir,
                              precisions=args.precision, threads=args.threads,
                              decode_conf=yaml.safe_load(open(args.config)) if args.config else {})
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return finish(results, args.output_dir, args.fail_on_bad_audio, unit="precision")


if __name__ == "__main__":
    sys.exit(main())
