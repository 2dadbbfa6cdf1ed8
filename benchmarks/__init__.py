"""kdbench: a benchmark harness for knowledge-distillation methods (seeded, paired, costed).

The plugin API is importable from here, so a plugin needs one import::

    from kdbench import Method, register

The names load on first use (PEP 562), so ``kdbench --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "Method": "kdbench.method",
    "MethodContext": "kdbench.method",
    "Task": "kdbench.method",
    "TeacherData": "kdbench.method",
    "TrainingProgress": "kdbench.method",
    "register": "kdbench.registry",
    "Taps": "kdbench.models.tapped",
    "TapShapes": "kdbench.models.tapped",
    "TappedModel": "kdbench.models.tapped",
    "Interval": "kdbench.domains",
    "OneOf": "kdbench.domains",
    "AnyOf": "kdbench.domains",
    "POSITIVE": "kdbench.domains",
    "NON_NEGATIVE": "kdbench.domains",
    "UNIT": "kdbench.domains",
    "at_least": "kdbench.domains",
    "ConfigError": "kdbench.errors",
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
