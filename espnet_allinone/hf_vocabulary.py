"""A Hugging Face wav2vec2 CTC checkpoint's vocabulary and output layer in ESPnet's conventions: the CTC
blank ``<blank>`` first, the word delimiter as ``<space>``, ``</s>`` as ``<sos/eos>``; ``lm_head`` rows in
that order as ESPnet's ``ctc.ctc_lo``."""

from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch

# Hugging Face special token (tokenizer attribute) -> ESPnet's name for it
ESPNET_NAMES = {
    "pad_token": "<blank>",  # HF's CTC blank is the pad token
    "unk_token": "<unk>",
    "word_delimiter_token": "<space>",
    "eos_token": "<sos/eos>",
}


def espnet_vocabulary(hf_model: str) -> Tuple[List[str], List[int]]:
    """Tokens in ESPnet's order and, for each, its id in the checkpoint's vocabulary.

    The blank goes first (ESPnet's CTC uses id 0); the rest keep the checkpoint's order.
    """
    from transformers import Wav2Vec2CTCTokenizer

    try:
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(hf_model)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{hf_model!r} has no wav2vec2 CTC vocabulary (vocab.json): {e}") from None
    vocab: Dict[str, int] = tokenizer.get_vocab()
    rename = {}
    for attr, name in ESPNET_NAMES.items():
        token = getattr(tokenizer, attr, None)
        if token is None or token not in vocab:
            raise ValueError(f"{hf_model!r}: the vocabulary has no {attr} ({name} in ESPnet)")
        rename[token] = name
    clash = sorted(set(rename.values()) & (set(vocab) - set(rename)))
    if clash:
        raise ValueError(f"{hf_model!r}: the vocabulary already holds {clash}")
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError(f"{hf_model!r}: vocabulary ids are not 0..{len(by_id) - 1}")
    blank = vocab[tokenizer.pad_token]
    ids = [blank] + [i for _, i in by_id if i != blank]
    tokens = [rename.get(by_id[i][0], by_id[i][0]) for i in ids]
    return tokens, ids


def ctc_head(hf_model: str, ids: List[int]) -> Dict[str, torch.Tensor]:
    """The checkpoint's ``lm_head`` as ESPnet's ``ctc.ctc_lo``, rows in ``ids`` order."""
    from transformers import Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC.from_pretrained(hf_model, dtype=torch.float32)
    head = model.lm_head
    if head.out_features != len(ids):
        raise ValueError(
            f"{hf_model!r}: lm_head has {head.out_features} outputs for {len(ids)} tokens"
        )
    index = torch.tensor(ids)
    return {
        "ctc.ctc_lo.weight": head.weight.detach()[index].clone(),
        "ctc.ctc_lo.bias": head.bias.detach()[index].clone(),
    }


def write_token_list(hf_model: str, output_dir: Union[str, Path], head: bool = True) -> Dict:
    """Write ``tokens.txt`` (:func:`espnet_vocabulary`) and, with ``head``, ``ctc_head.pth`` (:func:`ctc_head`)
    to ``output_dir``. Returns ``{"tokens": path, "num_tokens": n[, "init_param": path]}``."""
    output_dir = Path(output_dir)
    tokens, ids = espnet_vocabulary(hf_model)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "tokens.txt").write_text("\n".join(tokens) + "\n")
    out = {"tokens": str(output_dir / "tokens.txt"), "num_tokens": len(tokens)}
    if head:
        torch.save(ctc_head(hf_model, ids), output_dir / "ctc_head.pth")
        out["init_param"] = str(output_dir / "ctc_head.pth")
    return out
