"""Every path the harness writes is built here, from plain names, and checked to stay under its root.

A suite name, a method label and a method name become file and folder names. Checked where they are
parsed (a plain name: letters, digits, ``-``, ``_``, ``.``), and checked again where they are joined,
so no input and no future caller can make the harness write outside the results folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from kdbench.api.errors import ConfigError

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def is_plain_name(name: object) -> bool:
    """Letters, digits, ``-``, ``_`` and ``.``, not starting with ``.`` or ``-``, at most 100 characters."""
    return isinstance(name, str) and _PLAIN.fullmatch(name) is not None


def plain_name(name: object, what: str) -> str:
    if not is_plain_name(name):
        raise ConfigError(
            f"{what} {name!r} must be a plain name: letters, digits, '-', '_' or '.', not starting with "
            "'.' or '-', at most 100 characters"
        )
    return name


def under(root: str | Path, *parts: str) -> Path:
    """``root/parts...``, refused unless every part is a plain name (so the result stays under root)."""
    for part in parts:
        if not is_plain_name(part):
            raise ValueError(f"path part {part!r} is not a plain name; refusing to write outside {root}")
    path = Path(root).joinpath(*parts)
    assert Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)), path
    return path


def check_writable_folder(folder: str | Path, what: str = "--results-dir") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; a one-line error if not."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder}: {existing} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {folder} cannot be written: {exc.strerror or exc}") from None
    return folder
