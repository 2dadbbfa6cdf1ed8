"""One registry of method plugins, filled by a decorator and discovered automatically.

Adding a method is one file: drop ``methods/<name>.py`` with a ``@register`` class and it is found
(every module of the ``methods`` package is imported on first use). Third-party packages register
through the entry-point group ``kdbench.methods`` (the entry point names a module or a class).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import pkgutil
from typing import Any

from kdbench.api.domains import AnyOf, Domain
from kdbench.api.errors import ConfigError
from kdbench.api.method import TAP_NAMES, Method, Task
from kdbench.api.paths import is_plain_name
from kdbench.api.search import Space

ENTRY_POINT_GROUP = "kdbench.methods"
_METHODS: dict[str, type[Method]] = {}
_discovered = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: validate the plugin's declarations and add it to the registry."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{cls!r} is not a subclass of kdbench.Method")
    if not cls.name or not cls.name.isidentifier() or not is_plain_name(cls.name):
        raise TypeError(f"{cls.__name__}.name must be a non-empty ASCII identifier, got {cls.name!r}")
    for taps in (cls.student_taps, cls.teacher_taps):
        unknown = set(taps) - TAP_NAMES
        if unknown:
            raise TypeError(f"{cls.__name__} asks for unknown taps {sorted(unknown)}")
    _check_domains(cls)
    _check_search_space(cls)
    existing = _METHODS.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"method name {cls.name!r} registered twice ({existing} and {cls})")
    _METHODS[cls.name] = cls
    return cls


def _check_domains(cls: type[Method]) -> None:
    """A plugin's domains name its hyperparameters, and its defaults lie inside them."""
    for key, domain in cls.domains.items():
        if key not in cls.defaults:
            raise TypeError(f"{cls.__name__}.domains names {key!r}, which is not in its defaults")
        if not isinstance(domain, Domain):
            raise TypeError(f"{cls.__name__}.domains[{key!r}] is not a kdbench.api.domains.Domain")
        if not domain.contains(cls.defaults[key]):
            raise TypeError(f"{cls.__name__}: default {key}={cls.defaults[key]!r} is not {domain}")


def _check_search_space(cls: type[Method]) -> None:
    """A plugin's search space names its hyperparameters, is a known distribution, and every value it
    can give lies in the hyperparameter's domain and type: a ConfigError (one line) otherwise, since a
    third-party plugin's author meets it on the command line."""
    for key, space in cls.search_space.items():
        if key not in cls.defaults:
            known = ", ".join(sorted(cls.defaults)) or "none"
            raise ConfigError(f"{cls.__name__}.search_space tunes {key!r}, which the method does not have "
                              f"(known: {known})")
        if not isinstance(space, Space):
            raise ConfigError(f"{cls.__name__}.search_space[{key!r}] is {space!r}, not a distribution "
                              "(LogUniform, Uniform, IntRange or Choice from kdbench)")
        if why := space.problem():
            raise ConfigError(f"{cls.__name__}.search_space[{key!r}]: {why}")
        domain = cls.domains.get(key)
        for value in space.extremes():
            try:
                _coerce(cls.name, key, cls.defaults[key], value)
            except ConfigError:
                if not (domain is not None and domain.contains(value)):
                    raise ConfigError(f"{cls.__name__}.search_space[{key!r}] ({space}) gives {value!r}, not "
                                      f"a {type(cls.defaults[key]).__name__} like the default") from None
            if domain is not None and not domain.contains(value):
                raise ConfigError(f"{cls.__name__}.search_space[{key!r}] ({space}) leaves the domain: "
                                  f"{value!r} is not {domain}")


def discover() -> None:
    """Import every built-in plugin module and every installed entry point, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    methods = importlib.import_module("kdbench.methods")  # the built-in plugins import this module

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"kdbench.methods.{info.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        if isinstance(loaded, type) and issubclass(loaded, Method) and loaded.name not in _METHODS:
            register(loaded)


def method_names() -> list[str]:
    discover()
    return sorted(_METHODS)


def get_method(name: str) -> type[Method]:
    discover()
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def resolve_hyperparameters(name: str, overrides: dict[str, Any] | None, task: Task) -> dict[str, Any]:
    """The method's defaults with a suite's overrides applied. Unknown keys, wrong types, non-finite
    numbers and values outside the declared domains are errors, then the plugin's own check runs."""
    cls = get_method(name)
    hp = dict(cls.defaults)
    for key, value in (overrides or {}).items():
        if key not in hp:
            known = ", ".join(sorted(hp)) or "none"
            raise ConfigError(f"method {name!r} has no hyperparameter {key!r} (known: {known})")
        domain = cls.domains.get(key)
        try:
            hp[key] = _coerce(name, key, hp[key], value)
        except ConfigError:
            if not (isinstance(domain, AnyOf) and domain.contains(value)):
                raise
            hp[key] = value  # another type the domain names ("auto" for an integer)
        if isinstance(hp[key], float) and not math.isfinite(hp[key]):
            raise ConfigError(f"method {name!r}: hyperparameter {key!r} must be finite, got {value!r}")
        if domain is not None and not domain.contains(hp[key]):
            raise ConfigError(f"method {name!r}: hyperparameter {key!r} must be {domain}, got {value!r}")
    cls.check_hyperparameters(hp, task)
    return hp


def _coerce(method: str, key: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(
        f"method {method!r}: hyperparameter {key!r} must be {type(default).__name__}, got {value!r}"
    )


def unregister(name: str) -> None:
    """Remove a plugin (tests register throwaway plugins and remove them afterwards)."""
    _METHODS.pop(name, None)
