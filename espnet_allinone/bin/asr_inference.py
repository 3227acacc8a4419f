#!/usr/bin/env python3
"""``espnet2.bin.asr_inference`` with ``--subnet DEPTH-WIDTH-BITSbit`` (or ``subnet:``
in the decode config) registered explicitly; default: the largest subnet.
(Stock ``python -m espnet2.bin.asr_inference`` works too once the package is installed.)
"""

from espnet_allinone.register import register_all


def main(cmd=None):
    register_all()
    import espnet2.bin.asr_inference as stock

    stock.main(cmd)


if __name__ == "__main__":
    main()
