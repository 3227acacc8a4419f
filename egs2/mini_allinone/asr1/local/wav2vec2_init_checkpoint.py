#!/usr/bin/env python3
"""Save the all-in-one wav2vec2 model as its fine-tune starts it: the stand-in's weights
(FFN units sorted by L2 norm), LSQ step sizes initialised from them on first use, the
stand-in's CTC head. Decoding it gives the subnets sliced from the stand-in WITHOUT the
all-in-one fine-tune (the ablation of local/wav2vec2_standin.sh, stage 5).

    python local/wav2vec2_init_checkpoint.py --asr_train_config exp/.../config.yaml \\
        --ctc_head exp/.../token_list/ctc_head.pth --out exp/.../init_no_finetune.pth
"""

import argparse

import torch
from espnet2.tasks.asr import ASRTask

import espnet_allinone  # noqa: F401  (registers the all-in-one classes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True, help="the fine-tune's config.yaml")
    p.add_argument("--ctc_head", required=True, help="ctc_head.pth of espnet_allinone.bin.hf_token_list")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    model, _ = ASRTask.build_model_from_file(args.asr_train_config, None, "cpu")
    head = torch.load(args.ctc_head, map_location="cpu")
    model.ctc.ctc_lo.load_state_dict({k.rsplit("ctc_lo.", 1)[1]: v for k, v in head.items()})
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
