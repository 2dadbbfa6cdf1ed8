"""Every path the harness writes is built here, from plain names, and checked to stay under its root.

A suite name, a method label and a method name become file and folder names. Checked where they are
parsed (a plain name: letters, digits, ``-``, ``_``, ``.``), and checked again where they are joined,
so no input and no future caller can make the harness write outside the results folder.

A path the user gives (a results, report or data folder, a file a suite names) is checked first by
:func:`checked_path`, so one the system cannot take is a one-line error rather than a traceback from
whichever call meets it first.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from kdbench.api.errors import ConfigError

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
#: What Linux takes (NAME_MAX, PATH_MAX, in bytes); most other systems take no more.
NAME_MAX = 255
PATH_MAX = 4096
#: The bytes a results folder leaves for what the harness puts under it
#: (``<suite>/tuning/checkpoints/<label>__seed<k>…``: plain names of at most 100 characters).
RESULTS_ROOM = 512


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


def shown(path: object, limit: int = 80) -> str:
    """A path for a one-line message: its repr, cut to ``limit`` characters."""
    text = repr(str(path))
    return text if len(text) <= limit else f"{text[:limit - 5]}…' ({len(str(path)):,} characters)"


def checked_path(path: object, what: str, room: int = 0) -> Path:
    """``path`` as a Path, refused in one line unless every system call can take it: not empty, no
    NUL byte, no name over NAME_MAX bytes, and its absolute form, with ``room`` bytes to spare for
    what goes under it, at most PATH_MAX bytes."""
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise ConfigError(f"{what} must be a non-empty path, got {shown(path)}")
    text = str(path)
    if "\0" in text:
        raise ConfigError(f"{what} {shown(text)} holds a NUL byte, which no path may hold")
    encoded = os.fsencode(text)
    longest = max(len(part) for part in encoded.split(b"/"))
    if longest > NAME_MAX:
        raise ConfigError(f"{what} {shown(text)} has a name of {longest:,} bytes; at most {NAME_MAX} are allowed")
    total = len(os.fsencode(os.path.abspath(text))) + room
    if total > PATH_MAX:
        raise ConfigError(f"{what} {shown(text)} is too long: {total - room:,} bytes as an absolute path, "
                          f"{'with room for what goes under it ' if room else ''}at most {PATH_MAX - room:,}")
    return Path(text)


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
    folder = checked_path(folder, what, RESULTS_ROOM)
    try:
        existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor))
    except OSError as exc:
        raise ConfigError(f"{what} {folder} cannot be used: {exc.strerror or exc}") from None
    if not existing.is_dir():
        raise ConfigError(f"{what} {folder}: {existing} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {folder} cannot be written: {exc.strerror or exc}") from None
    return folder
