"""Put the all-in-one classes into ESPnet's choices, and ``subnet``/``ctc_greedy`` into its inference.

ESPnet has no plugin entry points, so :mod:`espnet_allinone._hook` calls these
functions right after ESPnet's own modules are imported (in any process, including
``python -m espnet2.bin.asr_train`` / ``asr_inference`` started by ``asr.sh``).
Calling them again is harmless.
"""

import sys
from types import ModuleType
from typing import Optional


def register_asr_task(asr: Optional[ModuleType] = None) -> None:
    """Add ``allinone_conformer`` and ``allinone_wav2vec2`` to encoder_choices and
    ``allinone`` to model_choices of an ASR task module (espnet2's; ESPnet3's copy of it)."""
    if asr is None:
        import espnet2.tasks.asr as asr
    from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
    from espnet_allinone.encoders.wav2vec2 import AllInOneWav2Vec2Encoder
    from espnet_allinone.model import AllInOneASRModel

    asr.encoder_choices.classes["allinone_conformer"] = AllInOneConformerEncoder
    asr.encoder_choices.classes["allinone_wav2vec2"] = AllInOneWav2Vec2Encoder
    asr.model_choices.classes["allinone"] = AllInOneASRModel


def patch_asr_inference(inference_module: Optional[ModuleType] = None) -> None:
    """Give ``espnet2.bin.asr_inference`` the ``subnet`` and ``ctc_greedy`` options
    (:func:`espnet_allinone.inference.install`)."""
    partial = sys.modules.get("espnet_allinone.inference")
    if partial is not None and not hasattr(partial, "install"):
        # espnet_allinone.inference is importing ESPnet's module right now; it installs
        # itself when its own import ends
        return
    from espnet_allinone import inference

    inference.install(inference_module or inference._stock)


# what espnet2.bin.asr_inference.Speech2Text resolves to once the plugin is installed
PLUGIN_INFERENCE_TARGET = "espnet_allinone.inference.Speech2Text"


def allow_plugin_targets(inference_model: ModuleType) -> None:
    """Let ESPnet3's untrusted bundle loading (``InferenceModel.from_packed``) build what a bundle's
    ``espnet2.bin.asr_inference.Speech2Text`` resolves to with the plugin installed: the plugin's
    subclass of it (:mod:`espnet_allinone.inference`), and nothing else of the plugin."""
    allowed = tuple(inference_model._ALLOWED_TARGET_PREFIXES)
    if PLUGIN_INFERENCE_TARGET not in allowed:
        inference_model._ALLOWED_TARGET_PREFIXES = allowed + (PLUGIN_INFERENCE_TARGET,)


def register_all() -> None:
    """Register into ESPnet now (for code that imports the plugin explicitly)."""
    register_asr_task()
    patch_asr_inference()
