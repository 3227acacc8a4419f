"""Lazy registration into stock ESPnet processes (imports nothing heavy itself).

``espnet_allinone.pth`` in site-packages imports this module at interpreter start;
:func:`install` puts a finder on ``sys.meta_path`` that, right after one of
ESPnet's modules in ``_PATCHES`` is imported (espnet2's ASR task and inference; on
ESPnet 202609+ also ESPnet3's copy of the ASR task and its bundle loader), calls the
matching function of :mod:`espnet_allinone.register`. If that fails (an ESPnet
release the plugin does not support, or a bug), stock ESPnet goes on working: the
plugin says why once on stderr, and asking for one of its names raises that message. For
``python -m espnet2.bin.asr_inference`` (which runs the module's code as
``__main__`` instead of importing it) the finder hands ``runpy`` a stub that imports
the patched module and calls its ``main()``.
"""

import importlib
import importlib.abc
import sys
from typing import Optional

_PATCHES = {
    "espnet2.tasks.asr": "register_asr_task",
    "espnet2.bin.asr_inference": "patch_asr_inference",
    "espnet3.systems.esp2_asr.task": "register_asr_task",  # ESPnet3's copy of the ASR task's choices
    "espnet3.publication.inference_model": "allow_plugin_targets",  # bundles naming espnet2's Speech2Text
}
# Modules whose class choices get the plugin's names (stand-ins that raise when that fails).
_TASK_MODULES = {"espnet2.tasks.asr", "espnet3.systems.esp2_asr.task"}
# Modules run with ``python -m`` that must be patched before their main() runs.
_MAIN_MODULES = {"espnet2.bin.asr_inference"}


# the plugin's names in ESPnet's class choices (register.register_asr_task)
_CHOICES = {"encoder_choices": ("allinone_conformer", "allinone_wav2vec2"), "model_choices": ("allinone",)}
# what each hook makes unavailable when it fails
_LOST = {
    "espnet2.tasks.asr": ", ".join(n for names in _CHOICES.values() for n in names),
    "espnet2.bin.asr_inference": "--subnet, --ctc_greedy, --ctc_lexicon_decoder and --allow_untrained",
    "espnet3.systems.esp2_asr.task": ", ".join(n for names in _CHOICES.values() for n in names) + " in ESPnet3",
    "espnet3.publication.inference_model": "ESPnet3 bundles naming espnet2's Speech2Text without trust_user_code",
}
_failure: Optional[str] = None  # why registration failed (the first failure), once it has
_said: set = set()  # the failure messages printed


def _patch(name: str, module) -> None:
    """Register into ``module``; if that fails, leave stock ESPnet working and say why."""
    try:
        from espnet_allinone import register

        getattr(register, _PATCHES[name])(module)
    except Exception as exc:  # noqa: BLE001 -- any failure here must not break stock ESPnet
        _registration_failed(name, module, exc)


def supported_espnet() -> str:
    """The ESPnet versions this installation declares (setup.py's requirement)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        for line in requires("espnet_allinone") or []:
            req = Requirement(line)
            if req.name == "espnet" and not req.marker:
                return f"espnet{req.specifier}"
    except PackageNotFoundError:
        pass
    return "espnet (range unknown: espnet_allinone is not installed as a package)"


def failure_message(name: str, exc: BaseException) -> str:
    """What a failed hook says: the plugin's version, ESPnet's, the supported range, the error, and
    what is unavailable."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        espnet = version("espnet")
    except PackageNotFoundError:
        espnet = "(not installed)"
    from espnet_allinone import __version__

    return (
        f"espnet_allinone {__version__} could not register into ESPnet {espnet} (supported: "
        f"{supported_espnet()}): {type(exc).__name__}: {exc}. Stock ESPnet models are unaffected; "
        f"{_LOST[name]} are unavailable."
    )


def _registration_failed(name: str, module, exc: BaseException) -> None:
    global _failure
    message = failure_message(name, exc)
    if message not in _said:
        _said.add(message)
        print(f"WARNING: {message}", file=sys.stderr)
    _failure = _failure or message
    if name not in _TASK_MODULES:
        return
    for attr, names in _CHOICES.items():  # asking for them raises the message
        try:
            classes = getattr(module, attr).classes
            for choice in names:
                classes[choice] = _unavailable(choice, message)
        except Exception:  # noqa: BLE001 -- ESPnet's choices themselves changed: argparse rejects the name
            pass


def _unavailable(choice: str, message: str) -> type:
    """A stand-in class for ``choice`` whose construction raises ``message``."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{choice}: {message}")

    return type(f"Unavailable_{choice}", (), {"__init__": __init__, "__doc__": message})


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, name: str):
        self._loader, self._name = loader, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(self._name, module)

    def get_code(self, fullname):
        if fullname in _MAIN_MODULES:
            src = (
                "import importlib as _importlib\n"
                f"_module = _importlib.import_module({fullname!r})\n"
                "globals().update({k: v for k, v in vars(_module).items() if not k.startswith('__')})\n"
                "if __name__ == '__main__':\n"
                "    _module.main()\n"
            )
            return compile(src, self._loader.get_filename(fullname), "exec")
        return self._loader.get_code(fullname)

    def __getattr__(self, attr):  # get_source, get_filename, is_package, ...
        return getattr(self._loader, attr)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        return None


def install() -> None:
    """Put the finder first on sys.meta_path (once); patch already-imported modules."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in _PATCHES:
        if name in sys.modules:
            _patch(name, sys.modules[name])
