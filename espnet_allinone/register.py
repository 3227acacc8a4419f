"""Put the all-in-one classes into ESPnet's choices and ``subnet`` into its inference.

ESPnet has no plugin entry points, so :mod:`espnet_allinone._hook` calls these
functions right after ESPnet's own modules are imported (in any process, including
``python -m espnet2.bin.asr_train`` / ``asr_inference`` started by ``asr.sh``).
Calling them again is harmless.
"""

import argparse
import logging
from types import ModuleType
from typing import Optional, Union

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


def patch_asr_inference(inference_module: Optional[ModuleType] = None) -> None:
    """Give ``espnet2.bin.asr_inference`` a ``subnet`` option.

    ``Speech2Text(..., subnet="8-1024-4bit")``, ``--subnet`` on the command line and
    ``subnet:`` in a decode config all select the subnet to decode with.
    """
    m = inference_module
    if m is None:
        import espnet2.bin.asr_inference as m
    if getattr(m.Speech2Text, "_allinone_patched", False):
        return
    stock_speech2text, stock_inference, stock_get_parser = m.Speech2Text, m.inference, m.get_parser

    class Speech2Text(stock_speech2text):
        __doc__ = (stock_speech2text.__doc__ or "") + (
            "\n    subnet: all-in-one subnet to decode with, e.g. '8-1024-4bit' "
            "(default: the largest).\n"
        )
        default_subnet: Optional[str] = None
        _allinone_patched = True

        def __init__(self, *args, subnet: Optional[str] = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.subnet = select_subnet(self.asr_model, subnet or self.default_subnet)

    def inference(*args, subnet: Optional[str] = None, **kwargs):
        # stock inference() builds Speech2Text from a fixed list of arguments,
        # so the subnet travels as the class default for this call.
        m.Speech2Text = type("Speech2Text", (Speech2Text,), {"default_subnet": subnet})
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
        return parser

    m.Speech2Text, m.inference, m.get_parser = Speech2Text, inference, get_parser


def register_all() -> None:
    """Register into ESPnet now (for code that imports the plugin explicitly)."""
    register_asr_task()
    patch_asr_inference()
