#!/usr/bin/env python3
"""Export subnets of an all-in-one ASR model, and the model itself as a model-zoo zip.

    python -m espnet_allinone.bin.export \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.acc_mean.ave.pth \\
        --subnet 8-1024-4bit --out_dir exp/asr/export

writes, for every ``--subnet`` (``all`` = the whole space):

    <out_dir>/<subnet>/stock/{config.yaml,model.pth}    plain ESPnet model (encoder: conformer)
    <out_dir>/<subnet>/packed/{config.yaml,encoder.packed,rest.pth}   low-bit artifact
    <out_dir>/allinone.zip                               every subnet in one model-zoo zip
    <out_dir>/<subnet>/onnx/*.onnx, config.yaml          with --formats onnx: graphs for ONNX Runtime
                                                         (espnet_allinone.onnx_export)

and prints each packed encoder's bytes on disk against its bit bound and the
compression ratio against the float (32-bit) largest encoder. Paths in the training
config (e.g. normalisation statistics) are read relative to the working directory,
as ESPnet's own entry points do.
Only the Conformer encoder (`allinone_conformer`) can be exported.
"""

import argparse
from typing import List, Optional


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils.types import str2bool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--subnet", nargs="+", required=True,
                   help="DEPTH-WIDTH-BITSbit names of the model's subnet space, or 'all'")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--formats", nargs="+", choices=["stock", "packed", "zip", "onnx"],
                   default=["stock", "packed", "zip"],
                   help="what to write (default: stock, packed, zip); onnx: <subnet>/onnx/ with the frontend, "
                        "encoder + CTC head (float, int8 and int4 on the trained codes) and decoder for ONNX "
                        "Runtime (decode with espnet_allinone.bin.onnx_decode; needs the deploy extra)")
    p.add_argument("--allow_untrained", type=str2bool, default=False,
                   help="export subnets that compute with never-trained step sizes or BatchNorm statistics "
                        "(refused by default: the error names them and the way out)")
    return p


def main(argv: Optional[List[str]] = None):
    parser = get_parser()
    args = parser.parse_args(argv)
    from espnet_allinone.export import export_subnets

    try:
        export_subnets(args.asr_train_config, args.asr_model_file, args.subnet, args.out_dir,
                       formats=tuple(args.formats), allow_untrained=args.allow_untrained,
                       log=lambda line: print(line, flush=True))
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
