"""Clear errors for model files (``*.pth``) that cannot be what decoding or export needs:
a truncated copy, a file that is not PyTorch's, ESPnet's resume state ``checkpoint.pth``
instead of a model, or a state dict of another model."""

import contextlib
import pickle
import zipfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Union


def averaged_model_name(train_config: Dict) -> str:
    """The model file ESPnet averages for a training config: ``<phase>.<metric>.ave.pth`` of its first
    ``best_model_criterion`` (e.g. ``valid.acc_mean.ave.pth``), what asr.sh's ``--inference_asr_model``
    has to name."""
    criteria = train_config.get("best_model_criterion")
    if not criteria:
        raise ValueError("the training config has no best_model_criterion: name the model file")
    phase, metric = criteria[0][:2]
    return f"{phase}.{metric}.ave.pth"


class CheckpointError(ValueError):
    """A model file that cannot be loaded; the message names the file and why."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def describe_bad_checkpoint(path: Union[str, Path]) -> Optional[str]:
    """Why ``path`` is not a readable model state dict, or None if it is one."""
    import torch

    path = Path(path)
    if not path.is_file():
        return f"{path}: no such file"
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(2)
        if not head.startswith(b"\x80"):  # neither torch's zip nor its legacy pickle format
            return (f"{path}: not a PyTorch file, or one cut short ({size} bytes, no zip "
                    "directory at its end): copy it again or give another model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            return (f"{path}: holds Python objects, not a model's state dict (ESPnet's resume "
                    "state checkpoint.pth?): give a model file such as valid.acc_mean.ave.pth or "
                    "<N>epoch.pth")
        return f"{path}: unreadable PyTorch file ({size} bytes), truncated? {_first_line(e)}"
    except Exception as e:  # torch's zip reader: RuntimeError, EOFError, ...
        return f"{path}: unreadable PyTorch file ({size} bytes), truncated? {_first_line(e)}"
    if not isinstance(obj, dict) or not obj:
        return f"{path}: holds a {type(obj).__name__}, not a model's state dict"
    if "model" in obj and "optimizers" in obj:
        return (f"{path}: ESPnet's resume state (checkpoint.pth), not a model: give a model "
                "file such as valid.acc_mean.ave.pth or <N>epoch.pth")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return f"{path}: not a model's state dict (not every value is a tensor)"
    return None


@contextlib.contextmanager
def loading_model_file(path: Union[None, str, Path]) -> Iterator[None]:
    """Around code that builds a model from ``path``: an error caused by the file
    becomes a :class:`CheckpointError` naming it; a state dict that does not fit the
    model becomes one too, with the model's reason."""
    try:
        yield
    except Exception as e:
        if path is None:
            raise
        problem = describe_bad_checkpoint(path)
        if problem:
            raise CheckpointError(problem) from e
        if any(w in str(e) for w in ("state_dict", "checkpoint", "keys", "size mismatch")):
            raise CheckpointError(f"{path}: a state dict of another model: {e}") from e
        raise
