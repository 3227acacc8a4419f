"""Every ESPnet name whose home or call differs between the ESPnet lines the plugin supports.

The lines: ESPnet 202511 (the last release for Python < 3.12) and 202609-202611. Differences:

- ESPnet's v1 package ``espnet.nets`` is ``espnet2.legacy.nets`` (search, scorers, masks, subsampling);
- ``espnet2.asr.espnet_model.autocast`` is ``torch.amp.autocast`` (device type first) instead of
  ``torch.cuda.amp.autocast`` (:func:`frontend_autocast`);
- the Conv2dSubsampling family's ``out`` is a Linear plus ``pos_enc`` instead of
  ``Sequential(Linear, pos_enc)`` (:func:`upgrade_subsampling_keys`);
- CTC prefix scoring takes a window, on by default (:func:`ctc_prefix_scorer`,
  :func:`ctc_window_margin_default`).

The rest of the plugin takes these names from here.
"""

import importlib
import importlib.util
import inspect
from importlib.metadata import version
from typing import Dict

import torch
from packaging.version import Version

ESPNET_VERSION: str = version("espnet")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


NETS_PACKAGE = "espnet2.legacy.nets" if _has_module("espnet2.legacy.nets") else "espnet.nets"


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
    """The window of CTC prefix scoring in stock decoding by default: 100 encoder frames from ESPnet
    202610, 0 (exact) before. A constant: reading it from ``espnet2.bin.asr_inference`` would import
    ESPnet's training code, which ONNX decoding must not."""
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
    """ESPnet's autocast context around the frontend, called as ``ESPnetASRModel.encode`` calls it."""
    from espnet2.asr import espnet_model

    if espnet_model.autocast is torch.amp.autocast:  # device type first
        return espnet_model.autocast("cuda", enabled=enabled, dtype=espnet_model.autocast_type)
    return espnet_model.autocast(enabled, dtype=espnet_model.autocast_type)


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
    """Escape ``%`` in help texts that argparse cannot format (ESPnet 202611's ``--ctc_window_margin``
    holds a bare ``%``, so ``--help`` raises), in place; a parser whose help formats is left as is."""
    try:
        parser.format_help()
        return
    except (ValueError, TypeError, KeyError):
        pass
    for action in parser._actions:
        if action.help and "%" in action.help:
            try:
                action.help % {**vars(action), "prog": parser.prog, "default": action.default}
            except (ValueError, TypeError, KeyError):
                action.help = action.help.replace("%", "%%")
