"""Put the all-in-one classes into ESPnet's choices and ``subnet``/``ctc_greedy`` into its inference.

ESPnet has no plugin entry points, so :mod:`espnet_allinone._hook` calls these
functions right after ESPnet's own modules are imported (in any process, including
``python -m espnet2.bin.asr_train`` / ``asr_inference`` started by ``asr.sh``).
Calling them again is harmless.
"""

import argparse
import logging
from itertools import groupby
from types import ModuleType
from typing import Iterable, List, Optional, Union

from espnet_allinone.subnet import SubnetSpec


def register_asr_task(asr: Optional[ModuleType] = None) -> None:
    """Add ``allinone_conformer`` and ``allinone_wav2vec2`` to encoder_choices and
    ``allinone`` to model_choices."""
    if asr is None:
        import espnet2.tasks.asr as asr
    from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
    from espnet_allinone.encoders.wav2vec2 import AllInOneWav2Vec2Encoder
    from espnet_allinone.model import AllInOneASRModel

    asr.encoder_choices.classes["allinone_conformer"] = AllInOneConformerEncoder
    asr.encoder_choices.classes["allinone_wav2vec2"] = AllInOneWav2Vec2Encoder
    asr.model_choices.classes["allinone"] = AllInOneASRModel


def select_subnet(asr_model, subnet: Union[None, str, SubnetSpec]) -> Optional[SubnetSpec]:
    """Choose the subnet an ASR model's encoder computes (None = its largest).

    A model without an all-in-one encoder accepts only ``subnet=None``.
    """
    encoder = getattr(asr_model, "encoder", None)
    if not hasattr(encoder, "set_subnet"):
        if subnet is not None:
            raise ValueError(
                f"subnet={subnet!r} given, but the model's encoder "
                f"({type(encoder).__name__}) is not an all-in-one encoder"
            )
        return None
    spec = encoder.set_subnet(subnet)
    logging.info(f"decoding with subnet {spec}")
    return spec


def ctc_greedy_tokens(ctc, enc, blank_id: int = 0, exclude: Iterable[int] = ()) -> List[int]:
    """Greedy CTC: frame-wise argmax, repeats merged, blanks (and ``exclude``) dropped.

    Args:
        ctc: ESPnet ``CTC`` module.
        enc: (T, D) encoder output of one utterance.
        exclude: further ids never emitted, e.g. ``<sos/eos>`` (as ESPnet's intermediate
            CTC decoding drops them).
    Returns:
        token ids.
    """
    drop = {blank_id, *exclude}
    best = ctc.argmax(enc.unsqueeze(0))[0].tolist()
    return [t for t, _ in groupby(best) if t not in drop]


def patch_asr_inference(inference_module: Optional[ModuleType] = None) -> None:
    """Give ``espnet2.bin.asr_inference`` ``subnet`` and ``ctc_greedy`` options.

    ``Speech2Text(..., subnet="8-1024-4bit")``, ``--subnet`` on the command line and
    ``subnet:`` in a decode config all select the subnet to decode with.
    ``ctc_greedy`` (``--ctc_greedy true`` / ``ctc_greedy: true``) decodes with greedy
    CTC instead of the beam search: the usual decoding of CTC-only (wav2vec2) systems,
    and much faster than ESPnet's CTC prefix scoring, which loops over frames per token.
    """
    m = inference_module
    if m is None:
        import espnet2.bin.asr_inference as m
    if getattr(m.Speech2Text, "_allinone_patched", False):
        return
    import torch
    from espnet2.utils.types import str2bool
    from espnet.nets.beam_search import Hypothesis

    stock_speech2text, stock_inference, stock_get_parser = m.Speech2Text, m.inference, m.get_parser

    class Speech2Text(stock_speech2text):
        __doc__ = (stock_speech2text.__doc__ or "") + (
            "\n    subnet: all-in-one subnet to decode with, e.g. '8-1024-4bit' "
            "(default: the largest).\n"
            "    ctc_greedy: decode with greedy CTC instead of the beam search.\n"
        )
        default_subnet: Optional[str] = None
        default_ctc_greedy: bool = False
        _allinone_patched = True

        def __init__(self, *args, subnet: Optional[str] = None, ctc_greedy: Optional[bool] = None,
                     **kwargs):
            from espnet_allinone.checkpoint import loading_model_file

            model_file = kwargs.get("asr_model_file", args[1] if len(args) > 1 else None)
            with loading_model_file(model_file):
                super().__init__(*args, **kwargs)
            self.subnet = select_subnet(self.asr_model, subnet or self.default_subnet)
            self.ctc_greedy = self.default_ctc_greedy if ctc_greedy is None else ctc_greedy
            if self.ctc_greedy and getattr(self.asr_model, "ctc", None) is None:
                raise ValueError("ctc_greedy=True needs a model with a CTC layer")

        def _decode_single_sample(self, enc):
            if not self.ctc_greedy:
                return super()._decode_single_sample(enc)
            sos, eos = self.asr_model.sos, self.asr_model.eos
            token_int = ctc_greedy_tokens(self.asr_model.ctc, enc, self.asr_model.blank_id, (sos, eos))
            token = self.converter.ids2tokens(token_int)
            text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
            # as ESPnet's beam search logs it: asr.sh's calculate_rtf.py counts these lines
            logging.info("best hypo: " + "".join(token))
            hyp = Hypothesis(yseq=torch.tensor([sos, *token_int, eos]), score=0.0)
            return [(text, token, token_int, hyp)]

    def inference(*args, subnet: Optional[str] = None, ctc_greedy: bool = False, **kwargs):
        # stock inference() builds Speech2Text from a fixed list of arguments,
        # so the subnet travels as the class default for this call.
        m.Speech2Text = type("Speech2Text", (Speech2Text,),
                             {"default_subnet": subnet, "default_ctc_greedy": ctc_greedy})
        try:
            return stock_inference(*args, **kwargs)
        finally:
            m.Speech2Text = Speech2Text

    def get_parser() -> argparse.ArgumentParser:
        parser = stock_get_parser()
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
        return parser

    m.Speech2Text, m.inference, m.get_parser = Speech2Text, inference, get_parser


def register_all() -> None:
    """Register into ESPnet now (for code that imports the plugin explicitly)."""
    register_asr_task()
    patch_asr_inference()
