"""Module names that moved when the package took its layered layout (0.2), kept importable for one release.

`import audiodiff.metrics.fad` (or `from audiodiff.build import build_model`) still works and warns once with a
DeprecationWarning naming the new module; the old names go in 0.3. The finder only maps names listed here to
audiodiff's own modules: it never imports anything a caller names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

from audiodiff.utils.moved import MOVED

# The former module `audiodiff.training` is now the package of every stage's training: its names are forwarded by
# `audiodiff.training.__getattr__`.


def _proxy(old: str, new: str) -> types.ModuleType:
    """A module named `old` whose attributes are those of `new` (and of `old`'s moved submodules)."""
    target = importlib.import_module(new)
    proxy = types.ModuleType(old, target.__doc__)

    def __getattr__(name: str) -> Any:
        if hasattr(target, name):
            return getattr(target, name)
        if f"{old}.{name}" in MOVED:
            return importlib.import_module(f"{old}.{name}")
        raise AttributeError(f"module {old!r} (moved to {new!r}) has no attribute {name!r}")

    proxy.__getattr__ = __getattr__  # type: ignore[method-assign]
    if hasattr(target, "__path__"):
        proxy.__path__ = []  # a package: its old submodules resolve through this finder
    return proxy


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of moved modules and loads each as a proxy of its new module, with a warning."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old name is removed in audiodiff 0.3", DeprecationWarning,
                      stacklevel=3)
        return _proxy(spec.name, new)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Put the finder on `sys.meta_path` (once)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
