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
from pathlib import Path
from typing import List, Optional

import yaml

from espnet_allinone.subnet import FULL_PRECISION


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils.types import str2bool

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument(
        "--subnet", nargs="+", required=True,
        help="DEPTH-WIDTH-BITSbit names of the model's subnet space, or 'all'",
    )
    p.add_argument("--out_dir", required=True)
    p.add_argument(
        "--formats", nargs="+", choices=["stock", "packed", "zip", "onnx"],
        default=["stock", "packed", "zip"],
        help="what to write (default: stock, packed, zip); onnx: <subnet>/onnx/ with the frontend, "
             "encoder + CTC head (float, int8 and int4 on the trained codes) and decoder for ONNX Runtime "
             "(decode with espnet_allinone.bin.onnx_decode; needs the deploy extra)",
    )
    p.add_argument(
        "--allow_untrained", type=str2bool, default=False,
        help="export subnets that compute with never-trained step sizes or BatchNorm statistics "
             "(refused by default: the error names them and the way out)",
    )
    return p


def main(argv: Optional[List[str]] = None):
    parser = get_parser()
    args = parser.parse_args(argv)
    from espnet_allinone.export import (
        export_packed,
        export_stock,
        load_allinone,
        pack_allinone,
        packed_size,
    )

    train_config = yaml.safe_load(Path(args.asr_train_config).read_text())
    if train_config.get("encoder") != "allinone_conformer":
        parser.error(f"export supports the allinone_conformer encoder, not {train_config.get('encoder')!r}")
    model = load_allinone(args.asr_train_config, args.asr_model_file)
    encoder = model.encoder
    space = encoder.subnet_space
    try:
        subnets = list(space) if args.subnet == ["all"] else [space.get(s) for s in args.subnet]
        for spec in subnets:  # every one of them before writing any
            encoder.check_trained(spec, args.allow_untrained)
    except ValueError as e:
        parser.error(str(e))
    out_dir = Path(args.out_dir)
    if "packed" in args.formats:
        fp32 = encoder.subnet_size(None).params * FULL_PRECISION // 8
        print(f"float32 largest encoder: {fp32} bytes")
        print("| subnet | packed encoder [bytes] | bit bound [bytes] | ratio vs fp32 largest "
              "| of the bit ratio |")
        print("|---|---|---|---|---|")
    for spec in subnets:
        if "stock" in args.formats:
            export_stock(model, train_config, spec, out_dir / spec.name / "stock", args.allow_untrained)
        if "packed" in args.formats:
            size = packed_size(
                encoder, spec,
                export_packed(model, train_config, spec, out_dir / spec.name / "packed", args.allow_untrained),
            )
            print(f"| {spec} | {size.packed_bytes} | {size.bound_bytes:.0f} | {size.ratio:.2f}x "
                  f"| {100 * size.of_bit_ratio:.1f}% |", flush=True)
        if "onnx" in args.formats:
            from espnet_allinone.onnx_export import export_onnx, graph_size

            written = export_onnx(model, train_config, spec, out_dir / spec.name / "onnx",
                                  allow_untrained=args.allow_untrained)
            for kind, path in written.items():
                line = f"{spec} {kind}: {path} ({path.stat().st_size} bytes"
                if kind in ("float", "int8", "int4"):
                    size = graph_size(model, spec, path)
                    line += f"; bit bound of encoder + CTC {size.bound_bytes:.0f} bytes: {100 * size.of_bit_bound:.1f}%"
                print(line + ")", flush=True)
    if "zip" in args.formats:
        pack_allinone(args.asr_train_config, args.asr_model_file, out_dir / "allinone.zip")


if __name__ == "__main__":
    main()
