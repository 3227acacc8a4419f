"""Every ESPnet name whose home or call differs between the ESPnet lines the plugin supports.

The two lines: ESPnet 202511 (the last release for Python < 3.12) and 202609-202611.
What changed between them, as the plugin meets it:

- ESPnet's v1 package ``espnet.nets`` moved to ``espnet2.legacy.nets`` (202609): the
  search, scorers, subsampling and mask helpers below;
- ``espnet2.asr.espnet_model.autocast`` is ``torch.amp.autocast`` (device type first)
  instead of ``torch.cuda.amp.autocast`` (:func:`frontend_autocast`);
- the Conv2dSubsampling family's ``out`` is a Linear plus ``pos_enc`` instead of
  ``Sequential(Linear, pos_enc)``; ESPnet's key upgrade moves only the stock keys
  (:func:`upgrade_subsampling_keys`);
- ``Speech2Text`` decodes a list or ``batch_size > 1`` with ``batch_decode``, which never
  calls ``_decode_single_sample`` (202609.post1; the plugin's ``Speech2Text`` overrides
  both), and CTC prefix scoring takes a window, on by default from 202610
  (:func:`ctc_prefix_scorer`, :func:`ctc_window_margin_default`).

The rest of the plugin takes these names from here, never from ESPnet's v1 paths.
"""

import importlib
import inspect
from importlib.metadata import version
from typing import Dict

import torch
from packaging.version import Version

ESPNET_VERSION: str = version("espnet")
# 202609 moved espnet.nets to espnet2.legacy.nets and switched ESPnet's autocast to torch.amp
NETS_PACKAGE = "espnet2.legacy.nets" if Version(ESPNET_VERSION) >= Version("202609") else "espnet.nets"


def _nets(module: str):
    """A module of ESPnet's v1 ``nets`` package, wherever the installed ESPnet keeps it."""
    return importlib.import_module(f"{NETS_PACKAGE}.{module}")


BatchBeamSearch = _nets("batch_beam_search").BatchBeamSearch
Hypothesis = _nets("beam_search").Hypothesis
BatchScorerInterface = _nets("scorer_interface").BatchScorerInterface
CTCPrefixScorer = _nets("scorers.ctc").CTCPrefixScorer
LengthBonus = _nets("scorers.length_bonus").LengthBonus
make_pad_mask = _nets("pytorch_backend.nets_utils").make_pad_mask
add_sos_eos = _nets("pytorch_backend.transformer.add_sos_eos").add_sos_eos
PositionalEncoding = _nets("pytorch_backend.transformer.embedding").PositionalEncoding
RelPositionalEncoding = _nets("pytorch_backend.transformer.embedding").RelPositionalEncoding
MultiSequential = _nets("pytorch_backend.transformer.repeat").MultiSequential
TooShortUttError = _nets("pytorch_backend.transformer.subsampling").TooShortUttError
check_short_utt = _nets("pytorch_backend.transformer.subsampling").check_short_utt

_ctc_params = inspect.signature(CTCPrefixScorer.__init__).parameters


def ctc_window_margin_default() -> int:
    """The window of CTC prefix scoring that stock ``Speech2Text`` uses by default: 100 encoder
    frames from ESPnet 202610 (its ``--ctc_window_margin``), exact scoring (0) before.

    A constant here, not read from ``espnet2.bin.asr_inference``: importing that module
    imports ESPnet's training code, which ONNX decoding must not (tests/test_espnet_names.py
    checks the value against the installed ESPnet's signature).
    """
    return 100 if "window_margin" in _ctc_params and Version(ESPNET_VERSION) >= Version("202610") else 0


def ctc_prefix_scorer(ctc: torch.nn.Module, eos: int, window_margin: int = 0):
    """ESPnet's ``CTCPrefixScorer`` on ``ctc``, restricted to ``window_margin`` encoder frames
    around the best path where the installed ESPnet has the window (202610+; 0 = exact)."""
    if "window_margin" in _ctc_params:
        return CTCPrefixScorer(ctc=ctc, eos=eos, window_margin=window_margin)
    if window_margin:
        raise ValueError(
            f"ctc_window_margin={window_margin}: the CTC prefix scoring of ESPnet {ESPNET_VERSION} "
            "has no window (ESPnet 202610 and newer): give 0 (exact scoring)"
        )
    return CTCPrefixScorer(ctc=ctc, eos=eos)


def frontend_autocast(enabled: bool):
    """ESPnet's autocast context around the frontend, called as its ``ESPnetASRModel.encode``
    calls it (``torch.amp.autocast("cuda", ...)`` from 202609, ``torch.cuda.amp.autocast``
    before)."""
    from espnet2.asr import espnet_model

    if NETS_PACKAGE == "espnet.nets":
        return espnet_model.autocast(enabled, dtype=espnet_model.autocast_type)
    return espnet_model.autocast("cuda", enabled=enabled, dtype=espnet_model.autocast_type)


def upgrade_subsampling_keys(state_dict: Dict[str, torch.Tensor], prefix: str, embed: torch.nn.Module) -> None:
    """Move a 202511 checkpoint's Conv2dSubsampling keys (``out.0.*``, ``out.1.*``) to the
    layout of the installed ESPnet (``out.*``, ``pos_enc.*``), in place.

    Every key moves, the plugin's own (``out.0.weight_log_step.*``) included: ESPnet's
    upgrade moves only ``weight``/``bias``. Where both layouts are present the 202511 key
    wins: that is a checkpoint merged into a model's own state dict, as ESPnet's
    ``load_pretrained_model`` (``--init_param``) merges it, and only the 202511 key holds
    the checkpoint's value (ESPnet's upgrade would keep the random ``out.weight``).
    """
    if not (isinstance(getattr(embed, "out", None), torch.nn.Linear) and hasattr(embed, "pos_enc")):
        return  # the installed ESPnet's layout is the 202511 one, or embed is no Conv2dSubsampling
    for old, new in (("out.0.", "out."), ("out.1.", "pos_enc.")):
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


def escape_broken_help(parser) -> None:
    """Escape ``%`` in the help texts that argparse cannot format, in place.

    ESPnet 202611's ``asr_inference --ctc_window_margin`` help holds a bare ``%`` ("3.19%
    CER"), so its ``--help`` raises ValueError; only texts that fail to format are changed.
    """
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help:
            try:
                formatter._expand_help(action)
            except (ValueError, TypeError, KeyError):
                action.help = action.help.replace("%", "%%")
