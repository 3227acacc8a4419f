#!/usr/bin/env python3
"""Train a stand-in for facebook/wav2vec2-base-100h on the synthetic corpus.

No pretrained checkpoint can be downloaded here, so a small wav2vec2-architecture
model (HF ``Wav2Vec2ForCTC``, random init, character CTC) is trained on a Kaldi data
dir and saved with ``save_pretrained`` together with its tokenizer (``vocab.json``)
and feature extractor, i.e. in the layout of a hub checkpoint. It is a stand-in for
the *architecture and the loading path* only: it has no self-supervised pretraining.

    python local/wav2vec2_standin.py --train_dir data/train --valid_dir data/dev \\
        --out_dir exp/wav2vec2_standin --epochs 10

``--decode_dirs D1 D2 ...`` instead decodes a saved stand-in (``--out_dir``) greedily
(HF's argmax + ``batch_decode``) into ``--decode_out/<set>/text`` and ``rtf``: the float
model before the all-in-one fine-tune, the baseline of the report.
"""

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import List, Tuple

import jiwer
import soundfile
import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from espnet_allinone.data.kaldi import read_table

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "|"]  # HF's wav2vec2 CTC vocabulary layout


def read_dir(d: Path, limit: int = 0) -> List[Tuple[str, str, str]]:
    wavs, texts = read_table(d / "wav.scp"), read_table(d / "text")
    items = [(k, wavs[k], texts[k]) for k in sorted(wavs) if k in texts]
    return items[:limit] if limit else items


def batches(items, processor, max_seconds: float, shuffle: bool):
    """Length-sorted batches of about ``max_seconds`` of audio."""
    audio = [(soundfile.read(p, dtype="float32")[0], t) for _, p, t in items]
    audio.sort(key=lambda a: len(a[0]))
    groups, cur = [], []
    for wav, text in audio:
        if cur and (len(cur) + 1) * len(wav) > max_seconds * 16000:
            groups.append(cur)
            cur = []
        cur.append((wav, text))
    if cur:
        groups.append(cur)
    while True:
        if shuffle:
            random.shuffle(groups)
        for g in groups:
            inputs = processor([w for w, _ in g], sampling_rate=16000, padding=True, return_tensors="pt")
            labels = processor.tokenizer([t for _, t in g], padding=True, return_tensors="pt")
            inputs["labels"] = labels.input_ids.masked_fill(labels.attention_mask == 0, -100)
            yield inputs
        if not shuffle:
            return


class GreedyStandin:
    """A saved stand-in as a decoder of :func:`espnet_allinone.decode.decode_set`:
    (S,) samples at 16 kHz -> [(hypothesis,)] by HF's argmax + ``batch_decode``."""

    fs = 16000
    min_samples = 400  # the receptive field of wav2vec2's first convolution: shorter gives no frame

    def __init__(self, model_dir: Path, device: str):
        self.processor = Wav2Vec2Processor.from_pretrained(model_dir)
        self.model = Wav2Vec2ForCTC.from_pretrained(model_dir).to(device).eval()
        self.device = device

    def __call__(self, wav):
        x = self.processor(wav, sampling_rate=self.fs, return_tensors="pt").input_values.to(self.device)
        return [(self.processor.batch_decode(self.model(x).logits.argmax(-1).cpu())[0],)]


def decode(model_dir: Path, data_dirs: List[Path], out_dir: Path, device: str):
    """Greedy CTC hypotheses of a saved stand-in, one utterance at a time (as ESPnet decodes), with the
    plugin's decode loop (text, failed, rtf per set)."""
    from espnet_allinone.decode import DONE, decode_set

    standin = GreedyStandin(model_dir, device)
    for d in data_dirs:
        result = decode_set(standin, d, out_dir / d.name)
        logging.info(f"decoded {d.name}: {result['decoded']} utterances, {len(result['failed'])} failed, "
                     f"RTF {float((out_dir / d.name / DONE).read_text()):.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_dir", type=Path)
    p.add_argument("--valid_dir", type=Path)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--num_train", type=int, default=0, help="first N utterances (0 = all)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_seconds", type=float, default=60.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden_size", type=int, default=144)
    p.add_argument("--num_layers", type=int, default=6)
    p.add_argument("--intermediate_size", type=int, default=576)
    p.add_argument("--conv_dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto: cuda if available, else cpu")
    p.add_argument("--time_budget", type=float, default=0.0,
                   help="seconds of training; if > 0, the number of epochs is cut after epoch 1 "
                        "to what fits (the learning-rate schedule is rescaled to it)")
    p.add_argument("--decode_dirs", type=Path, nargs="+", help="decode these with the saved model")
    p.add_argument("--decode_out", type=Path, help="hypotheses go to DECODE_OUT/<set>/text")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.decode_dirs:
        if args.decode_out is None:
            p.error("--decode_dirs needs --decode_out")
        torch.set_num_threads(1)  # as ESPnet's decoding jobs
        return decode(args.out_dir, args.decode_dirs, args.decode_out, device)
    if args.train_dir is None or args.valid_dir is None:
        p.error("training needs --train_dir and --valid_dir")
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    train = read_dir(args.train_dir, args.num_train)
    valid = read_dir(args.valid_dir)
    chars = sorted({c for _, _, t in train for c in t.replace(" ", "")})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    (args.out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = Wav2Vec2CTCTokenizer(str(args.out_dir / "vocab.json"), do_lower_case=False)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    processor = Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)

    # wav2vec2-base's layout (7-layer CNN, 320x down-sampling, post-LN Transformer)
    # at a small size
    config = Wav2Vec2Config(
        vocab_size=len(vocab), pad_token_id=vocab["<pad>"],
        hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
        num_attention_heads=4, intermediate_size=args.intermediate_size,
        conv_dim=(args.conv_dim,) * 7, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8,
        feat_extract_norm="group", do_stable_layer_norm=False,
        mask_time_prob=0.05, layerdrop=0.0, ctc_loss_reduction="mean", ctc_zero_infinity=True,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
    )
    model = Wav2Vec2ForCTC(config).to(device)
    logging.info(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                 f"{len(train)} training utterances, vocabulary {len(vocab)}, device {device}")
    train_iter = batches(train, processor, args.batch_seconds, shuffle=True)
    steps_per_epoch = sum(1 for _ in batches(train, processor, args.batch_seconds, shuffle=False))
    epochs = args.epochs
    # warm-up over the first 10 % of the planned steps, then linear decay to 0 at the end
    # (``epochs`` may be cut by --time_budget after epoch 1; the decay follows it)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def lr_factor(step: int) -> float:
        total = steps_per_epoch * epochs
        warmup = max(1, total // 10)
        return min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    start = time.time()
    epoch = 0
    while epoch < epochs:
        epoch += 1
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            batch = {k: v.to(device) for k, v in next(train_iter).items()}
            loss = model(**batch).loss
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            sched.step()
            losses.append(loss.item())
        model.eval()
        hyps, refs = [], []
        with torch.no_grad():
            for b in batches(valid, processor, args.batch_seconds, shuffle=False):
                labels = b.pop("labels")
                b = {k: v.to(device) for k, v in b.items()}
                hyps += processor.batch_decode(model(**b).logits.argmax(-1).cpu())
                refs += processor.tokenizer.batch_decode(
                    labels.masked_fill(labels < 0, vocab["<pad>"]), group_tokens=False
                )
        logging.info(f"epoch {epoch}: train loss {sum(losses) / len(losses):.3f}, "
                     f"valid greedy CER {100 * jiwer.cer(refs, hyps):.1f}%, "
                     f"{time.time() - start:.0f}s")
        if epoch == 1 and args.time_budget > 0:
            fit = max(1, int(args.time_budget // (time.time() - start)))
            if fit < epochs:
                logging.info(f"--time_budget {args.time_budget:.0f}s: {fit} epochs instead of {epochs}")
                epochs = fit
    model.config.mask_time_prob = 0.0  # as a released checkpoint: fine-tuning sets its own
    model.cpu().save_pretrained(args.out_dir)
    processor.save_pretrained(args.out_dir)
    logging.info(f"saved to {args.out_dir}")


if __name__ == "__main__":
    main()
