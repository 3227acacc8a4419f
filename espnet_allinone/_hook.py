"""Lazy registration into stock ESPnet processes (imports nothing heavy itself).

``espnet_allinone.pth`` in site-packages imports this module at interpreter start;
:func:`install` puts a finder on ``sys.meta_path`` that, right after
``espnet2.tasks.asr`` or ``espnet2.bin.asr_inference`` is imported, calls the
matching function of :mod:`espnet_allinone.register`. For
``python -m espnet2.bin.asr_inference`` (which runs the module's code as
``__main__`` instead of importing it) the finder hands ``runpy`` a stub that imports
the patched module and calls its ``main()``.
"""

import importlib
import importlib.abc
import sys

_PATCHES = {
    "espnet2.tasks.asr": "register_asr_task",
    "espnet2.bin.asr_inference": "patch_asr_inference",
}
# Modules run with ``python -m`` that must be patched before their main() runs.
_MAIN_MODULES = {"espnet2.bin.asr_inference"}


def _patch(name: str, module) -> None:
    from espnet_allinone import register

    getattr(register, _PATCHES[name])(module)


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
