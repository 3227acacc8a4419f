"""espnet_allinone: one-pass all-in-one compression and quantization for ESPnet ASR.

Importing the package installs the lazy registration hook (see ``_hook``); it
imports neither torch nor ESPnet.
"""

from espnet_allinone import _hook

__version__ = "0.1.0"

_hook.install()
