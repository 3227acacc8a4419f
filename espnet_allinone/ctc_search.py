"""CTC decoding without the model: greedy collapse and a lexicon-constrained beam search with a word LM.

Used by :mod:`espnet_allinone.inference` (PyTorch) and :mod:`espnet_allinone.onnx_inference` (ONNX Runtime):
both hand it (T, V) CTC log-probabilities or frame-wise best ids, nothing of the training code.
"""

from itertools import groupby
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch


def collapse_ctc(best: Iterable[int], blank_id: int = 0, exclude: Iterable[int] = ()) -> List[int]:
    """Frame-wise best ids -> tokens: repeats merged, blanks (and ``exclude``) dropped."""
    drop = {blank_id, *exclude}
    return [t for t, _ in groupby(best) if t not in drop]


def ctc_greedy_tokens(ctc, enc: torch.Tensor, blank_id: int = 0, exclude: Iterable[int] = ()) -> List[int]:
    """Greedy CTC: frame-wise argmax, repeats merged, blanks (and ``exclude``) dropped.

    Args:
        ctc: ESPnet ``CTC`` module.
        enc: (T, D) encoder output of one utterance.
        exclude: further ids never emitted, e.g. ``<sos/eos>`` (as ESPnet's intermediate
            CTC decoding drops them).
    Returns:
        token ids.
    """
    return collapse_ctc(ctc.argmax(enc.unsqueeze(0))[0].tolist(), blank_id, exclude)


class CTCLexiconDecoder:
    """Lexicon-constrained CTC beam search with a word n-gram LM over a char token list.

    torchaudio's ``ctc_decoder`` (flashlight-text's C++ ``LexiconDecoder``, KenLM for the
    LM): hypotheses are sequences of lexicon words, ``<space>`` separates them.

    Args:
        token_list: the model's tokens; must hold ``<blank>`` and ``<space>`` (char tokens).
        lexicon: file of ``<word> <tok> <tok> ...`` lines (``espnet_allinone.lang``).
        **conf: the other keywords of ``torchaudio.models.decoder.ctc_decoder``: ``lm``
            (ARPA or KenLM binary file; None = lexicon only), ``lm_weight``, ``word_score``,
            ``beam_size``, ``nbest``, ...
    """

    def __init__(self, token_list: List[str], lexicon: str, **conf):
        missing = [t for t in ("<blank>", "<space>") if t not in token_list]
        if missing:
            raise ValueError(f"ctc_lexicon_decoder needs a char token list with {missing}: words are "
                             "spelt in chars separated by <space> (token_type char)")
        for key in ("lexicon", "lm"):
            path = lexicon if key == "lexicon" else conf.get("lm")
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"ctc_lexicon_decoder: {key} file {path} not found "
                                        "(python -m espnet_allinone.lang writes both)")
        try:
            from torchaudio.models.decoder import ctc_decoder
        except (ImportError, RuntimeError) as e:  # torchaudio raises RuntimeError without flashlight-text
            raise ImportError(f"ctc_lexicon_decoder needs flashlight-text (pip install flashlight-text): {e}")
        kwargs = dict(beam_size=50, blank_token="<blank>", sil_token="<space>", unk_word="<unk>")
        kwargs.update(conf)
        self.token_list, self.decoder = list(token_list), ctc_decoder(lexicon, list(token_list), **kwargs)
        self.sil = self.token_list.index(kwargs["sil_token"])

    def __call__(self, logp: torch.Tensor) -> List[Tuple[List[str], List[int], float]]:
        """(T, V) CTC log-probabilities -> [(words, token ids, score)], best first."""
        out = []
        for hyp in self.decoder(logp.detach().float().cpu().unsqueeze(0))[0]:
            ids = hyp.tokens.tolist()
            while ids and ids[0] == self.sil:
                ids.pop(0)
            while ids and ids[-1] == self.sil:
                ids.pop()
            out.append((list(hyp.words), ids, float(hyp.score)))
        return out


def ctc_decoder_from_config(token_list: List[str], ctc_greedy: bool, ctc_lexicon_decoder: Optional[Dict],
                            nbest: int, has_ctc: bool = True) -> Optional[CTCLexiconDecoder]:
    """The CTC decoder a decode config asks for instead of the beam search: None for greedy CTC or the
    beam search, the :class:`CTCLexiconDecoder` of ``ctc_lexicon_decoder`` (its ``nbest`` defaulting to
    the config's). ValueError, naming the options, for a config that asks for both or for a model
    without a CTC layer (``has_ctc``)."""
    if ctc_greedy and ctc_lexicon_decoder:
        raise ValueError("ctc_greedy and ctc_lexicon_decoder are two decoders: give one")
    if (ctc_greedy or ctc_lexicon_decoder) and not has_ctc:
        raise ValueError(f"{'ctc_greedy' if ctc_greedy else 'ctc_lexicon_decoder'} needs a model with a CTC layer")
    if not ctc_lexicon_decoder:
        return None
    conf = dict(ctc_lexicon_decoder)
    conf.setdefault("nbest", nbest)
    if "lexicon" not in conf:
        raise ValueError("ctc_lexicon_decoder needs a 'lexicon' file")
    return CTCLexiconDecoder(token_list, **conf)
