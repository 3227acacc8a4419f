#!/usr/bin/env python3
"""Results table of all-in-one subnets, in the shape of the paper's Tables 1-4.

    python -m espnet_allinone.bin.report --asr_train_config exp/asr/config.yaml \\
        --asr_model_file exp/asr/valid.acc_mean.ave.pth --decode_dir exp/asr/decode \\
        --data_dir data/dev data/test --out_dir exp/asr \\
        [--label K] [--other_allinone A:exp/asr_A/config.yaml:exp/asr_A/decode] \\
        [--separate_decode_dir exp/separate_decode] \\
        [--baseline_decode_dir exp/asr_baseline/decode --baseline_name 12-2048-32bit] \\
        [--train_times exp/train_times.json] [--scoring hub5]

Reads hypotheses as ``<decode_dir>/<subnet>/<set>/text`` (and the RTF: ``rtf``, the layout of
``espnet_allinone.bin.decode_subnets``, or asr.sh's ``logdir/calculate_rtf.log``), the same
for ``--other_allinone`` models and for separately trained systems
(``<separate_decode_dir>/<subnet>/<set>/text``, each the twin of the all-in-one subnet of that
name), and ``<baseline_decode_dir>/<set>/text``.
References are ``<data_dir>/text``; ``<set>`` is the data directory's name. With
``--scoring hub5`` (Switchboard, as the paper scores it) every set is scored against its
``<data_dir>/stm`` with ``<data_dir>/glm`` by NIST ``hubscr.pl -h hub5``
(``espnet_allinone.scoring.hub5``), and MAPSSWE compares the filtered, GLM-mapped words.

Per system: architecture, all-in-one or not, +KL, encoder parameters, bits, encoder size,
training time, compression ratio against the float largest encoder (the paper's
counting, ``encoders.abs_allinone.compression_ratio``), WER per set and pooled over all
sets (the paper's "Avg."; sclite if installed, else jiwer), RTF, and MAPSSWE marks
(alpha = 0.05) against the baseline and against the separately trained twin.
Writes ``RESULTS.md``, ``results.csv`` and ``wer_vs_size.png`` (average WER against
encoder size, log scale, all-in-one subnets vs separate systems) into ``--out_dir``.
"""

import argparse
from typing import List, Optional

from espnet_allinone.report import SCORINGS, Report
from espnet_allinone.scoring.wer import BACKENDS


def get_parser() -> argparse.ArgumentParser:
    from espnet2.utils.types import str2bool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--decode_dir", required=True, help="<decode_dir>/<subnet>/<set>/text")
    p.add_argument("--data_dir", nargs="+", required=True, help="test sets (<data_dir>/text)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--label", help="this all-in-one model's letter in the table "
                   "(default: the paper's K with the KL term, A without)")
    p.add_argument("--other_allinone", action="append", default=[], metavar="LABEL:TRAIN_CONFIG:DECODE_DIR",
                   help="another all-in-one model of the same space (repeatable), "
                   "e.g. A:exp/asr_A/config.yaml:exp/asr_A/decode")
    p.add_argument("--separate_decode_dir", help="separately trained systems: DIR/<subnet>/<set>/text")
    p.add_argument("--layerwise", nargs="+", default=[],
                   help="layer-wise subnets of this model to add as rows (L1, L2, ...; decoded into "
                        "<decode_dir>/<name>/<set>/text, e.g. found by espnet_allinone.bin.search)")
    p.add_argument("--baseline_decode_dir", help="the float baseline: DIR/<set>/text")
    p.add_argument("--baseline_name", help="its architecture, e.g. 12-2048-32bit "
                   "(default: the largest subnet at 32 bits)")
    p.add_argument("--train_times", help='JSON {"<label | subnet | baseline>": seconds}; an '
                   "all-in-one model missing there: from the ESPnet train.log beside its config")
    p.add_argument("--wer_backend", choices=BACKENDS, default="auto", help="auto: sclite if installed, else jiwer")
    p.add_argument("--scoring", choices=SCORINGS, default="text",
                   help="text: <data_dir>/text; hub5: Switchboard's NIST Hub5 scoring "
                   "(hubscr.pl against <data_dir>/stm with <data_dir>/glm)")
    p.add_argument("--allow_untrained", type=str2bool, default=False,
                   help="report decoded subnets that compute with never-trained step sizes or BatchNorm "
                        "statistics, with a note (refused by default)")
    return p


def main(argv: Optional[List[str]] = None):
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        report = Report(
            args.asr_train_config, args.asr_model_file, args.decode_dir, args.data_dir, label=args.label,
            other_allinone=args.other_allinone, separate_decode_dir=args.separate_decode_dir,
            layerwise=args.layerwise, baseline_decode_dir=args.baseline_decode_dir, baseline_name=args.baseline_name,
            train_times=args.train_times, allow_untrained=args.allow_untrained,
        )
    except ValueError as e:
        parser.error(str(e))
    written = report.write(args.out_dir, wer_backend=args.wer_backend, scoring=args.scoring)
    print(written.text)
    print(f"[report] {written.results_md}, {written.results_csv}, {written.plot}")


if __name__ == "__main__":
    main()
