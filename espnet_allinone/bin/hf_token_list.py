#!/usr/bin/env python3
"""ESPnet token list (and CTC output layer) from a Hugging Face wav2vec2 CTC checkpoint.

    python -m espnet_allinone.bin.hf_token_list --hf_model facebook/wav2vec2-base-100h \\
        --output_dir data/en_token_list/char

writes ``tokens.txt`` (the checkpoint's vocabulary in ESPnet's conventions: the CTC
blank ``<blank>`` first, the word delimiter as ``<space>``, ``</s>`` as
``<sos/eos>``) and ``ctc_head.pth`` (``lm_head`` rows in that order, keyed
``ctc.ctc_lo.*``). Training with ``--token_type char --token_list tokens.txt`` and
``init_param: [<output_dir>/ctc_head.pth]`` starts ESPnet's CTC output layer from the
pretrained head.
"""

import argparse
import json
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf_model", required=True, help="local directory or hub name")
    p.add_argument("--output_dir", required=True, type=Path)
    p.add_argument("--no_head", action="store_true", help="write tokens.txt only")
    args = p.parse_args(argv)
    from espnet_allinone.hf_vocabulary import write_token_list

    print(json.dumps(write_token_list(args.hf_model, args.output_dir, head=not args.no_head)))


if __name__ == "__main__":
    main()
