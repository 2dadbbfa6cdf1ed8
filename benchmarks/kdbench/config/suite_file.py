"""Reading a suite file's YAML with limits, so a hostile or broken file is a one-line error.

PyYAML's ``safe_load`` runs no code, but it still takes whatever it is given: bytes that are not
UTF-8 raise a decoding error, a document nested thousands of levels deep exhausts the recursion,
and anchors and aliases build a document whose expansion ("billion laughs": nine aliases of nine
aliases of ...) costs no memory to load but whose every later walk (a ``str``, a hash, a JSON dump)
never ends. So the file is read as bytes under a size limit, decoded strictly, composed with a
depth limit, and its expanded size (every alias counted as the copy it stands for) is counted on
the composed graph before anything is built from it. Aliases stay allowed for sharing a section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kdbench.api.errors import ConfigError, first_line

#: Far above any real suite (the shipped ones are under 4 KB and 200 nodes).
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` whose composer refuses nesting deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream: str, where: str) -> None:
        super().__init__(stream)
        self.where, self.depth = where, 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"{self.where}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def expanded_size(root: yaml.Node | None, where: str) -> int:
    """Nodes in the document once every alias is replaced by what it names; a ConfigError above
    :data:`MAX_NODES` or for an alias inside what it names (a document of infinite size)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)] if root is not None else []
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = _children(node)
        if not children_done:
            if id(node) in open_nodes:
                raise ConfigError(f"{where}: an alias refers to a node that contains it")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in sizes)
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes[id(k)] for k in kids)
        if sizes[id(node)] > MAX_NODES:
            raise ConfigError(f"{where}: expands to more than {MAX_NODES:,} values (its aliases repeat "
                              "too much); a suite needs far fewer")
    return sizes.get(id(root), 0)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, within this module's limits; anything else is a ConfigError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES >> 20} MiB; a suite file is a few KB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    loader = _Loader(text, str(path))
    try:
        node = loader.get_single_node()
        expanded_size(node, str(path))
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except ValueError as exc:  # a value YAML parses but Python refuses (an integer of 5,000 digits)
        raise ConfigError(f"{path}: {first_line(exc)}") from None
    finally:
        loader.dispose()
