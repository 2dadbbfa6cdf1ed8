"""kdbench: a benchmark harness for knowledge-distillation methods (seeded, paired, costed).

The plugin API is importable from here, so a plugin needs one import::

    from kdbench import Method, register

The names load on first use (PEP 562): importing the package alone does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from kdbench.api import moved

moved.install()  # plugins importing the API's old module paths (kdbench.method, ...) keep working

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "Method": "kdbench.api.method",
    "MethodContext": "kdbench.api.method",
    "Task": "kdbench.api.method",
    "TeacherData": "kdbench.api.method",
    "TrainingProgress": "kdbench.api.method",
    "register": "kdbench.api.registry",
    "Taps": "kdbench.api.tapped",
    "TapShapes": "kdbench.api.tapped",
    "TappedModel": "kdbench.api.tapped",
    "Interval": "kdbench.api.domains",
    "OneOf": "kdbench.api.domains",
    "AnyOf": "kdbench.api.domains",
    "POSITIVE": "kdbench.api.domains",
    "NON_NEGATIVE": "kdbench.api.domains",
    "UNIT": "kdbench.api.domains",
    "at_least": "kdbench.api.domains",
    "ConfigError": "kdbench.api.errors",
    "LogUniform": "kdbench.api.search",
    "Uniform": "kdbench.api.search",
    "IntRange": "kdbench.api.search",
    "Choice": "kdbench.api.search",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
