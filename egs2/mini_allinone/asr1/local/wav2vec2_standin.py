#!/usr/bin/env python3
"""Train a stand-in for facebook/wav2vec2-base-100h on the synthetic corpus.

No pretrained checkpoint can be downloaded here, so a small wav2vec2-architecture
model (HF ``Wav2Vec2ForCTC``, random init, character CTC) is trained on a Kaldi data
dir and saved with ``save_pretrained`` together with its tokenizer (``vocab.json``)
and feature extractor, i.e. in the layout of a hub checkpoint. It is a stand-in for
the *architecture and the loading path* only: it has no self-supervised pretraining.

    python local/wav2vec2_standin.py --train_dir data/train --valid_dir data/dev \\
        --out_dir exp/wav2vec2_standin --epochs 10
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

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "|"]  # HF's wav2vec2 CTC vocabulary layout


def read_dir(d: Path, limit: int = 0) -> List[Tuple[str, str, str]]:
    wavs = dict(line.split(maxsplit=1) for line in (d / "wav.scp").read_text().splitlines() if line.strip())
    texts = dict(
        (line.split(maxsplit=1) + [""])[:2] for line in (d / "text").read_text().splitlines() if line.strip()
    )
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_dir", type=Path, required=True)
    p.add_argument("--valid_dir", type=Path, required=True)
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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
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
    model = Wav2Vec2ForCTC(config)
    logging.info(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                 f"{len(train)} training utterances, vocabulary {len(vocab)}")
    train_iter = batches(train, processor, args.batch_seconds, shuffle=True)
    steps_per_epoch = sum(1 for _ in batches(train, processor, args.batch_seconds, shuffle=False))
    total = steps_per_epoch * args.epochs
    warmup = max(1, total // 10)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            loss = model(**next(train_iter)).loss
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
                hyps += processor.batch_decode(model(**b).logits.argmax(-1))
                refs += processor.tokenizer.batch_decode(
                    labels.masked_fill(labels < 0, vocab["<pad>"]), group_tokens=False
                )
        logging.info(f"epoch {epoch}: train loss {sum(losses) / len(losses):.3f}, "
                     f"valid greedy CER {100 * jiwer.cer(refs, hyps):.1f}%, "
                     f"{time.time() - start:.0f}s")
    model.config.mask_time_prob = 0.0  # as a released checkpoint: fine-tuning sets its own
    model.save_pretrained(args.out_dir)
    processor.save_pretrained(args.out_dir)
    logging.info(f"saved to {args.out_dir}")


if __name__ == "__main__":
    main()
