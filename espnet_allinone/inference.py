"""Python API for decoding a chosen subnet: ``Speech2Text(..., subnet="8-1024-4bit")``.

This is ESPnet's ``Speech2Text`` with one extra keyword; it is the same class that
``espnet2.bin.asr_inference`` uses once the plugin is installed.
"""

from espnet_allinone.register import patch_asr_inference, select_subnet

patch_asr_inference()

from espnet2.bin.asr_inference import Speech2Text  # noqa: E402  (patched above)

__all__ = ["Speech2Text", "select_subnet"]
