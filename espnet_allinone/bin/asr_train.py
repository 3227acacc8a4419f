#!/usr/bin/env python3
"""``espnet2.bin.asr_train`` with the all-in-one classes registered explicitly.

Same arguments as ESPnet's: ``--encoder allinone_conformer --model allinone``.
(Stock ``python -m espnet2.bin.asr_train`` works too once the package is installed.)
"""

from espnet_allinone.register import register_asr_task


def main(cmd=None):
    register_asr_task()
    from espnet2.bin.asr_train import main as stock_main

    stock_main(cmd)


if __name__ == "__main__":
    main()
