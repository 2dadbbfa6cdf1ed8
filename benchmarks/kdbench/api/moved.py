"""The plugin API's import paths from before the harness was split into layers, kept working.

Plugins written against ``kdbench.method``, ``kdbench.offline_cache`` or ``kdbench.models.tapped``
(the built-in ones among them: their source bytes are part of every record's config hash, so editing
an import would invalidate results that are still valid) import the same module objects from their
new homes. The old name is an alias, never a second copy: ``kdbench.method.Method`` *is*
``kdbench.api.method.Method``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module name -> the module that now holds it
MOVED = {
    "kdbench.method": "kdbench.api.method",
    "kdbench.registry": "kdbench.api.registry",
    "kdbench.domains": "kdbench.api.domains",
    "kdbench.errors": "kdbench.api.errors",
    "kdbench.offline_cache": "kdbench.api.offline_cache",
    "kdbench.models.tapped": "kdbench.api.tapped",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])  # the real module, under its old name too

    def exec_module(self, module):
        pass  # already executed under its own name


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
