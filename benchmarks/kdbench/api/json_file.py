"""Reading a JSON file the harness may not have written itself (a record, a teacher.json), with limits.

A results folder can hold anything: a record edited by hand, a symlink to ``/dev/zero``, a FIFO that
blocks whoever opens it, a document nested 100,000 levels deep. Each is refused here with a reason
(``JSONFileError``) rather than read forever, into all the memory there is, or into a
``RecursionError``: only regular files are read (opened without blocking), up to a size far above
any record's, and documents nested deeper than any record are refused.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

#: A record of a 10,000-epoch run is a few MB; a teacher.json a few hundred bytes.
MAX_BYTES = 64 << 20
MAX_DEPTH = 64


class JSONFileError(ValueError):
    """The file is not a JSON document within the limits (the message says why)."""


def read_json(path: str | Path, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON document in ``path``: ``OSError`` when it cannot be opened, ``JSONFileError`` when it
    is not a regular file, is too large, is not UTF-8 JSON or is nested deeper than MAX_DEPTH."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise JSONFileError(f"not a regular file ({_kind(mode)})")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise JSONFileError(f"larger than {max_bytes:,} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise JSONFileError(f"invalid JSON (nested more than {MAX_DEPTH} levels deep)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise JSONFileError(f"invalid JSON ({exc})") from None
    if depth(doc) > MAX_DEPTH:
        raise JSONFileError(f"invalid JSON (nested more than {MAX_DEPTH} levels deep)")
    return doc


def depth(doc: Any) -> int:
    """How deep lists and objects nest in ``doc`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend((child, level + 1) for child in children)
    return deepest


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"
