"""YAML as the manifest loader reads it: a composed node tree turned into Python data that
remembers each key's line and each scalar's text as written, with duplicate keys and alias
bombs caught; and a YAML error put in a user's words (:func:`yaml_reason`)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MERGE_TAG = "tag:yaml.org,2002:merge"
# guards against alias bombs ("billion laughs"): no real manifest document comes close
MAX_NODES = 200_000


def dotted(path: Sequence[object]) -> str:
    return ".".join(str(p) for p in path)


class TooLarge(Exception):
    """A document with more than :data:`MAX_NODES` nodes (aliases counted each time)."""


class Tree:
    """Turns a composed YAML document into Python data, remembering where everything is."""

    def __init__(self, report: Callable[[str | None, int | None, str], None]) -> None:
        self._ctor = yaml.SafeLoader("")
        self._report = report
        self._count = 0
        self.lines: dict[str, int] = {}   # dotted key path -> line of the key (or item)
        self.text: dict[str, str] = {}    # dotted key path -> scalar text as written
        self.broken: set[str] = set()     # paths already reported as unreadable

    def _fail(self, path: tuple[str, ...], line: int, reason: str) -> None:
        self.broken.add(dotted(path))
        self._report(dotted(path) or None, line, reason)

    def _construct(self, node: Node) -> Any:
        try:
            return self._ctor.construct_object(node)
        except yaml.YAMLError:
            # PyYAML leaves the node marked "in progress"; a retry would claim recursion
            self._ctor.recursive_objects.clear()
            raise

    def convert(self, node: Node, path: tuple[str, ...] = (), stack: tuple[int, ...] = ()) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise TooLarge
        if id(node) in stack:
            self._fail(path, node.start_mark.line + 1, "recursive alias: a node cannot contain itself")
            return None
        stack = stack + (id(node),)
        if isinstance(node, MappingNode):
            return self._mapping(node, path, stack)
        if isinstance(node, SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                ipath = path + (str(i),)
                self.lines[dotted(ipath)] = item.start_mark.line + 1
                out.append(self.convert(item, ipath, stack))
            return out
        assert isinstance(node, ScalarNode)
        self.text[dotted(path)] = node.value
        try:
            return self._construct(node)
        except yaml.YAMLError as e:
            self._fail(path, node.start_mark.line + 1, yaml_reason(e))
            return None

    def _key(self, knode: Node, path: tuple[str, ...]) -> tuple[bool, Any]:
        if not isinstance(knode, ScalarNode):
            self._report(dotted(path) or None, knode.start_mark.line + 1,
                         "a mapping key must be a plain value, not a mapping or list")
            return False, None
        try:
            return True, self._construct(knode)
        except yaml.YAMLError as e:
            self._report(dotted(path) or None, knode.start_mark.line + 1, yaml_reason(e))
            return False, None

    def _mapping(self, node: MappingNode, path: tuple[str, ...], stack: tuple[int, ...]) -> dict:
        # duplicates among the keys written here; keys brought in by a "<<" merge may be
        # overridden, that is what merging is for
        first: dict[Any, int] = {}
        for knode, _ in node.value:
            if knode.tag == MERGE_TAG or not isinstance(knode, ScalarNode):
                continue
            try:
                key = self._construct(knode)
            except yaml.YAMLError:
                continue  # reported below, once
            line = knode.start_mark.line + 1
            if key in first:
                self._report(dotted(path + (str(key),)), line,
                             f"duplicate key {key!r} (first at line {first[key]})")
            else:
                first[key] = line
        try:
            self._ctor.flatten_mapping(node)
        except yaml.YAMLError as e:
            self._fail(path, node.start_mark.line + 1, yaml_reason(e))
            return {}
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            ok, key = self._key(knode, path)
            if not ok:
                continue
            try:
                hash(key)
            except TypeError:
                continue
            kpath = path + (str(key),)
            self.lines[dotted(kpath)] = knode.start_mark.line + 1
            out[key] = self.convert(vnode, kpath, stack)
        return out


def yaml_reason(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    cmark = getattr(e, "context_mark", None)
    pmark = getattr(e, "problem_mark", None)
    if context and cmark is not None and (pmark is None or cmark.line != pmark.line):
        context = f"{context} at line {cmark.line + 1}"
    return f"invalid YAML: {problem}" + (f" ({context})" if context else "")


def yaml_line(e: yaml.YAMLError) -> int | None:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return mark.line + 1 if mark is not None else None
