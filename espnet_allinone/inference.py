"""Decoding a chosen subnet with ESPnet's ``Speech2Text``: ``subnet``, ``ctc_greedy``, ``ctc_lexicon_decoder``,
``allow_untrained``.

    from espnet_allinone.inference import Speech2Text
    s2t = Speech2Text(asr_train_config=..., asr_model_file=..., subnet="4-288-4bit")
    text, tokens, token_ids, hyp = s2t(speech)[0]

:class:`Speech2Text` is ESPnet's with four more keywords; :func:`inference` and
:func:`get_parser` are ESPnet's with ``--subnet``, ``--ctc_greedy``, ``--ctc_lexicon_decoder``
and ``--allow_untrained`` (a subnet that computes with never-trained state is refused
otherwise). :func:`install` puts the three names into
``espnet2.bin.asr_inference`` once (the plugin's import hook calls it when that module
is imported), so ``python -m espnet2.bin.asr_inference --subnet ...``, as asr.sh starts
it, and ``subnet:`` in a decode config select the subnet.

Stock ``inference()`` builds ``Speech2Text`` from a fixed list of arguments; the
options reach it through a context variable set for the duration of one
:func:`inference` call (re-entrant, per thread), not through module globals.
"""

import argparse
import contextvars
import logging
from types import ModuleType
from typing import Dict, Optional, Union

import espnet2.bin.asr_inference as _stock
import torch
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str2bool

from espnet_allinone.checkpoint import loading_model_file
from espnet_allinone.compat import ESPNET_VERSION, Hypothesis, escape_broken_help
from espnet_allinone.ctc_search import (  # noqa: F401 (CTCLexiconDecoder: public here too)
    CTCLexiconDecoder,
    ctc_decoder_from_config,
    ctc_greedy_tokens,
)
from espnet_allinone.encoders.abs_allinone import is_allinone_encoder
from espnet_allinone.subnet import Subnet

# ESPnet's own, captured before install() replaces the module's names
_STOCK = {name: getattr(_stock, name) for name in ("Speech2Text", "inference", "get_parser")}
_CALL_OPTIONS: contextvars.ContextVar[Dict] = contextvars.ContextVar("allinone_decode", default={})


def select_subnet(asr_model, subnet: Union[None, str, Subnet],
                  allow_untrained: bool = False) -> Optional[Subnet]:
    """Choose the subnet an ASR model's encoder computes (None = its largest).

    A subnet that computes with never-trained state is refused unless ``allow_untrained``
    (:meth:`~espnet_allinone.encoders.abs_allinone.AllInOneEncoderMixin.check_trained`).
    A model without an all-in-one encoder accepts only ``subnet=None``.
    """
    encoder = getattr(asr_model, "encoder", None)
    if not is_allinone_encoder(encoder):
        if subnet is not None:
            raise ValueError(
                f"subnet={subnet!r} given, but the model's encoder "
                f"({type(encoder).__name__}) is not an all-in-one encoder"
            )
        return None
    spec = encoder.set_subnet(subnet)
    encoder.check_trained(spec, allow_untrained)
    logging.info(f"decoding with subnet {spec}")
    return spec


class Speech2Text(_STOCK["Speech2Text"]):
    __doc__ = (_STOCK["Speech2Text"].__doc__ or "") + (
        "\n    subnet: all-in-one subnet to decode with, e.g. '8-1024-4bit' "
        "(default: the largest).\n"
        "    ctc_greedy: decode with greedy CTC instead of the beam search: the usual\n"
        "        decoding of CTC-only (wav2vec2) systems, and much faster than ESPnet's\n"
        "        CTC prefix scoring, which loops over frames per token.\n"
        "    allow_untrained: decode a subnet that computes with never-trained step sizes or\n"
        "        BatchNorm statistics (refused by default, with the way out).\n"
        "    ctc_lexicon_decoder: dict of :class:`CTCLexiconDecoder` keywords (lexicon, lm,\n"
        "        lm_weight, beam_size, ...): decode with a lexicon-constrained CTC beam\n"
        "        search and a word n-gram LM instead (char token lists).\n"
    )

    def __init__(self, *args, subnet: Optional[str] = None, ctc_greedy: Optional[bool] = None,
                 ctc_lexicon_decoder: Optional[Dict] = None, allow_untrained: Optional[bool] = None, **kwargs):
        call = _CALL_OPTIONS.get()
        model_file = kwargs.get("asr_model_file", args[1] if len(args) > 1 else None)
        with loading_model_file(model_file):
            super().__init__(*args, **kwargs)
        allow = bool(call.get("allow_untrained", False) if allow_untrained is None else allow_untrained)
        self.subnet = select_subnet(self.asr_model, subnet or call.get("subnet"), allow)
        self.ctc_greedy = bool(call.get("ctc_greedy", False) if ctc_greedy is None else ctc_greedy)
        lexicon_conf = ctc_lexicon_decoder if ctc_lexicon_decoder is not None else call.get("ctc_lexicon_decoder")
        has_ctc = getattr(self.asr_model, "ctc", None) is not None
        self.lexicon_decoder = ctc_decoder_from_config(self.asr_model.token_list, self.ctc_greedy, lexicon_conf,
                                                       self.nbest, has_ctc=has_ctc)

    def _decode_single_sample(self, enc: torch.Tensor):
        """ESPnet's per-utterance search on (T, D) ``enc``, greedy CTC or the lexicon decoder."""
        sos, eos = self.asr_model.sos, self.asr_model.eos
        if self.lexicon_decoder is not None:
            results = []
            for words, token_int, score in self.lexicon_decoder(self.asr_model.ctc.log_softmax(enc.unsqueeze(0))[0]):
                token = self.converter.ids2tokens(token_int)
                hyp = Hypothesis(yseq=torch.tensor([sos, *token_int, eos]), score=score)
                results.append((" ".join(words), token, token_int, hyp))
            logging.info("best hypo: " + (" ".join(results[0][0]) if results else ""))
            return results
        if not self.ctc_greedy:
            return super()._decode_single_sample(enc)
        token_int = ctc_greedy_tokens(self.asr_model.ctc, enc, self.asr_model.blank_id, (sos, eos))
        token = self.converter.ids2tokens(token_int)
        text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
        # as ESPnet's beam search logs it: asr.sh's calculate_rtf.py counts these lines
        logging.info("best hypo: " + "".join(token))
        hyp = Hypothesis(yseq=torch.tensor([sos, *token_int, eos]), score=0.0)
        return [(text, token, token_int, hyp)]

    def batch_decode(self, speech, speech_lengths=None):
        """ESPnet's ``batch_decode`` (a list of (S,) utterances, or padded (B, S) ``speech``
        with (B,) ``speech_lengths``); with greedy CTC or the lexicon decoder, which ESPnet's
        batched beam search would bypass, each utterance is decoded by :meth:`__call__`.

        Returns one n-best list per utterance, in the given order (intermediate-CTC outputs
        dropped, as ESPnet's batch decoding drops them).
        """
        if not self.ctc_greedy and self.lexicon_decoder is None:
            if not hasattr(super(), "batch_decode"):
                raise NotImplementedError(f"ESPnet {ESPNET_VERSION} has no batch decoding (ESPnet 202609 "
                                          "and newer have): decode one utterance at a time")
            return super().batch_decode(speech, speech_lengths)
        if isinstance(speech, (list, tuple)):
            waves = [torch.as_tensor(one).reshape(-1) for one in speech]
        elif speech_lengths is None:
            raise ValueError("speech_lengths is required for a padded speech array")
        else:
            waves = [torch.as_tensor(speech[b]).reshape(-1)[: int(speech_lengths[b])] for b in range(len(speech))]
        results = [self(one) for one in waves]
        return [r[0] if isinstance(r, tuple) else r for r in results]


def inference(*args, subnet: Optional[str] = None, ctc_greedy: bool = False,
              ctc_lexicon_decoder: Optional[Dict] = None, allow_untrained: bool = False, **kwargs):
    """ESPnet's ``asr_inference.inference`` decoding with ``subnet`` (and greedy CTC or the lexicon decoder)."""
    token = _CALL_OPTIONS.set({"subnet": subnet, "ctc_greedy": ctc_greedy,
                               "ctc_lexicon_decoder": ctc_lexicon_decoder, "allow_untrained": allow_untrained})
    try:
        return _STOCK["inference"](*args, **kwargs)
    finally:
        _CALL_OPTIONS.reset(token)


def get_parser() -> argparse.ArgumentParser:
    """ESPnet's ``asr_inference`` parser with ``--subnet``, ``--ctc_greedy`` and ``--ctc_lexicon_decoder``."""
    parser = _STOCK["get_parser"]()
    escape_broken_help(parser)  # ESPnet 202611's own help texts break --help
    group = parser.add_argument_group("All-in-one model related")
    group.add_argument(
        "--subnet",
        type=str,
        default=None,
        help="Subnet DEPTH-WIDTH-BITSbit of an all-in-one model to decode with, "
        "e.g. 8-1024-4bit (default: the largest)",
    )
    group.add_argument(
        "--ctc_greedy",
        type=str2bool,
        default=False,
        help="Decode with greedy CTC (frame-wise argmax) instead of the beam search",
    )
    group.add_argument(
        "--ctc_lexicon_decoder",
        action=NestedDictAction,
        default=None,
        help="Decode with a lexicon-constrained CTC beam search and a word n-gram LM instead "
        "(char token lists): keywords of torchaudio's ctc_decoder, one per option as ESPnet's *_conf, "
        "e.g. --ctc_lexicon_decoder lexicon=data/lang_char/lexicon.txt "
        "--ctc_lexicon_decoder lm=data/lang_char/word_3gram.arpa, or a YAML dict '{lexicon: ..., lm_weight: 1.0}'",
    )
    group.add_argument(
        "--allow_untrained",
        type=str2bool,
        default=False,
        help="Decode a subnet that computes with never-trained step sizes or BatchNorm statistics "
        "(refused by default)",
    )
    return parser


def install(module: ModuleType = _stock) -> None:
    """Make ``module`` (``espnet2.bin.asr_inference``) use this module's three names.

    Its ``main()`` then parses and passes the options, and its ``inference()``
    builds this :class:`Speech2Text`. Idempotent.
    """
    module.Speech2Text, module.inference, module.get_parser = Speech2Text, inference, get_parser


install()
