#!/usr/bin/env python3
"""Choose the lexicon decoder's LM weight and word score on dev (never on test).

    local/tune_lexicon_decoder.py --exp exp/asr_allinone --data_dir data/dev \\
        --lm_weight 0.5 0.75 1 1.5 2 --word_score -2 -1 0 1 2 --out_md exp/asr_allinone/lexicon_grid.md

Decodes the largest and the smallest subnet of the model on ``--data_dir`` with every
(lm_weight, word_score) pair (``espnet_allinone.decode.decode_set``, the
recipe's decode loop, model loaded once) and prints a table of WER [%] per pair,
scored as the report scores (sclite, else jiwer); the pair with the lowest mean WER of
the two subnets is marked. ``lm_weight 0`` with no LM file = the lexicon alone; the
greedy-CTC row is the same model without lexicon or LM.
"""

import argparse
import itertools
import tempfile
from pathlib import Path

import yaml


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--model_file", default="valid.acc_mean.ave.pth")
    p.add_argument("--data_dir", type=Path, default=Path("data/dev"))
    p.add_argument("--decode_config", type=Path, default=Path("conf/decode_asr.yaml"),
                   help="its ctc_lexicon_decoder gives lexicon, lm and beam_size")
    p.add_argument("--lm_weight", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    p.add_argument("--word_score", type=float, nargs="+", default=[-2.0, -1.0, 0.0, 1.0])
    p.add_argument("--out_md", type=Path, default=None)
    args = p.parse_args()

    import torch

    from espnet_allinone.decode import decode_set
    from espnet_allinone.inference import CTCLexiconDecoder, Speech2Text, select_subnet
    from espnet_allinone.scoring.wer import score_files

    torch.set_num_threads(2)
    conf = yaml.safe_load(args.decode_config.read_text())["ctc_lexicon_decoder"]
    s2t = Speech2Text(asr_train_config=str(args.exp / "config.yaml"),
                      asr_model_file=str(args.exp / args.model_file), ctc_greedy=True)
    space = s2t.asr_model.encoder.subnet_space
    subnets = [space.largest.name, space.smallest.name]
    ref = args.data_dir / "text"
    rows = []
    settings = [("greedy CTC", None)] + [("lexicon only", dict(conf, lm=None, lm_weight=0.0, word_score=0.0))] + [
        (f"lm_weight {lw:g}, word_score {ws:g}", dict(conf, lm_weight=lw, word_score=ws))
        for lw, ws in itertools.product(args.lm_weight, args.word_score)]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, c) in enumerate(settings):
            s2t.ctc_greedy = c is None
            s2t.lexicon_decoder = None if c is None else CTCLexiconDecoder(s2t.asr_model.token_list, **c)
            wers = []
            for sub in subnets:
                select_subnet(s2t.asr_model, sub)
                out = Path(tmp) / str(i) / sub
                decode_set(s2t, args.data_dir, out)
                wers.append(score_files(ref, out / "text").wer)
            rows.append((label, wers))
            print(f"{label}: " + " / ".join(f"{w:.1f}" for w in wers), flush=True)
    best = min(range(2, len(rows)), key=lambda i: sum(rows[i][1]))
    lines = [f"dev WER [%] of `{args.exp}` on `{args.data_dir}`, lexicon decoder of `{args.decode_config}` "
             f"(beam {conf.get('beam_size', 50)}); **bold**: lowest mean of the two subnets", "",
             f"| decoding | {subnets[0]} | {subnets[1]} |", "|---|---|---|"]
    for i, (label, wers) in enumerate(rows):
        cells = [f"{w:.1f}" for w in wers]
        if i == best:
            label, cells = f"**{label}**", [f"**{c}**" for c in cells]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out_md:
        args.out_md.write_text(text)


if __name__ == "__main__":
    main()
