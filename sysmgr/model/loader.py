"""Load manifests: YAML files -> validated, typed specs with file:line (model layer, pure).

This is the boundary where YAML enters sysmgr: ``yaml.YAMLError`` becomes an :class:`Issue`
here, and so does every other problem with the input. Loading never stops at the first
problem: it reports *every* problem across all files in one :class:`ValidationError`
(one issue per problem, in file order), so a user fixes a manifest in one round.

How a document is checked:

1. YAML is composed (safe loader only) into a node tree, so each key keeps its line and each
   scalar its text as written; duplicate keys in one mapping are caught here (PyYAML would
   silently keep the last one).
2. ``kind:`` selects an entry of :data:`KINDS`: a cerberus schema (structure,
   :mod:`~sysmgr.model.schemas`) and a builder (names, config keys, devices, ... then the
   typed spec).
3. Names must be unique per kind across all files.

Config and device values are kept as the text written in the YAML, as LXD does
(``true`` -> ``"true"``, ``1.50`` -> ``"1.50"``, ``0755`` -> ``"0755"``): YAML 1.1 would
otherwise turn ``1:30`` into 90 or a MAC address into an integer.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sysmgr.errors import Issue, ValidationError
from sysmgr.model import keys, members, names, network_keys, schemas, volume_keys
from sysmgr.model.objects import (
    KIND_ORDER,
    ContainerSpec,
    ImageSpec,
    Manifest,
    NetworkSpec,
    ProfileSpec,
    Source,
    Spec,
    StoragePoolSpec,
)

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# guards against alias bombs ("billion laughs"): no real manifest document comes close
_MAX_NODES = 200_000


def _dotted(path: Sequence[object]) -> str:
    return ".".join(str(p) for p in path)


class _TooLarge(Exception):
    pass


class _Tree:
    """Turns a composed YAML document into Python data, remembering where everything is."""

    def __init__(self, report: Callable[[str | None, int | None, str], None]) -> None:
        self._ctor = yaml.SafeLoader("")
        self._report = report
        self._count = 0
        self.lines: dict[str, int] = {}   # dotted key path -> line of the key (or item)
        self.text: dict[str, str] = {}    # dotted key path -> scalar text as written
        self.broken: set[str] = set()     # paths already reported as unreadable

    def _fail(self, path: tuple[str, ...], line: int, reason: str) -> None:
        self.broken.add(_dotted(path))
        self._report(_dotted(path) or None, line, reason)

    def _construct(self, node: Node) -> Any:
        try:
            return self._ctor.construct_object(node)
        except yaml.YAMLError:
            # PyYAML leaves the node marked "in progress"; a retry would claim recursion
            self._ctor.recursive_objects.clear()
            raise

    def convert(self, node: Node, path: tuple[str, ...] = (), stack: tuple[int, ...] = ()) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooLarge
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
                self.lines[_dotted(ipath)] = item.start_mark.line + 1
                out.append(self.convert(item, ipath, stack))
            return out
        assert isinstance(node, ScalarNode)
        self.text[_dotted(path)] = node.value
        try:
            return self._construct(node)
        except yaml.YAMLError as e:
            self._fail(path, node.start_mark.line + 1, _yaml_reason(e))
            return None

    def _key(self, knode: Node, path: tuple[str, ...]) -> tuple[bool, Any]:
        if not isinstance(knode, ScalarNode):
            self._report(_dotted(path) or None, knode.start_mark.line + 1,
                         "a mapping key must be a plain value, not a mapping or list")
            return False, None
        try:
            return True, self._construct(knode)
        except yaml.YAMLError as e:
            self._report(_dotted(path) or None, knode.start_mark.line + 1, _yaml_reason(e))
            return False, None

    def _mapping(self, node: MappingNode, path: tuple[str, ...], stack: tuple[int, ...]) -> dict:
        # duplicates among the keys written here; keys brought in by a "<<" merge may be
        # overridden, that is what merging is for
        first: dict[Any, int] = {}
        for knode, _ in node.value:
            if knode.tag == _MERGE_TAG or not isinstance(knode, ScalarNode):
                continue
            try:
                key = self._construct(knode)
            except yaml.YAMLError:
                continue  # reported below, once
            line = knode.start_mark.line + 1
            if key in first:
                self._report(_dotted(path + (str(key),)), line,
                             f"duplicate key {key!r} (first at line {first[key]})")
            else:
                first[key] = line
        try:
            self._ctor.flatten_mapping(node)
        except yaml.YAMLError as e:
            self._fail(path, node.start_mark.line + 1, _yaml_reason(e))
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
            self.lines[_dotted(kpath)] = knode.start_mark.line + 1
            out[key] = self.convert(vnode, kpath, stack)
        return out


def _yaml_reason(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    cmark = getattr(e, "context_mark", None)
    pmark = getattr(e, "problem_mark", None)
    if context and cmark is not None and (pmark is None or cmark.line != pmark.line):
        context = f"{context} at line {cmark.line + 1}"
    return f"invalid YAML: {problem}" + (f" ({context})" if context else "")


def _yaml_line(e: yaml.YAMLError) -> int | None:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return mark.line + 1 if mark is not None else None


@dataclass
class DocContext:
    """What a kind's builder gets besides the document: where it is, and a place for issues.

    Attributes:
        file: the file name as the user gave it (``<stdin>`` for stdin).
        line: line of the document's first key.
        base_dir: directory relative paths in the document are resolved against.
        issues: problems found in this document so far (cerberus + builder).
    """

    file: str | None
    line: int
    base_dir: str
    lines: Mapping[str, int]
    text: Mapping[str, str]
    issues: list[Issue] = field(default_factory=list)
    broken: frozenset[str] = frozenset()  # paths with a YAML-level issue: not reported again

    @property
    def source(self) -> Source:
        return Source(self.file, self.line)

    def line_of(self, path: str | Sequence[object]) -> int:
        """Line of the key at ``path`` (dotted or a tuple), or of its nearest parent."""
        dotted = path if isinstance(path, str) else _dotted(path)
        while dotted:
            if dotted in self.lines:
                return self.lines[dotted]
            dotted = dotted.rpartition(".")[0]
        return self.line

    def problem(self, path: str | Sequence[object] | None, reason: str) -> None:
        """Record an issue at ``path`` (dotted or tuple; None for the whole document)."""
        dotted = None if path is None else (path if isinstance(path, str) else _dotted(path))
        if dotted in self.broken or any(i.path == dotted for i in self.issues if dotted):
            # one issue per problem: the schema and the key tables may both see a missing
            # device type, and a value whose YAML was unreadable needs no second issue
            return
        line = self.line_of(dotted) if dotted else self.line
        self.issues.append(Issue(reason, file=self.file, line=line, path=dotted or None))

    def problems(self, found: Sequence[tuple[str, str]]) -> None:
        """Record several ``(dotted path, reason)`` problems (as returned by :mod:`keys`)."""
        for path, reason in found:
            self.problem(path, reason)

    def string(self, path: str, value: object) -> str:
        """A scalar as a string, using the text as written in the YAML when there is one."""
        if path in self.text and not isinstance(value, (dict, list)):
            return self.text[path]
        return keys.value_to_str(value)

    def string_map(self, field_name: str, value: object) -> dict[str, str]:
        """``{key: str}`` from a mapping of scalars (anything else is skipped: the schema
        has reported it)."""
        if not isinstance(value, Mapping):
            return {}
        return {str(k): self.string(f"{field_name}.{k}", v) for k, v in value.items()
                if isinstance(k, str) and v is not None and not isinstance(v, (dict, list))}

    def devices(self, field_name: str, value: object) -> dict[str, dict[str, str]]:
        """``{device: {key: str}}`` from a devices mapping (malformed entries are skipped)."""
        if not isinstance(value, Mapping):
            return {}
        return {str(n): self.string_map(f"{field_name}.{n}", d) for n, d in value.items()
                if isinstance(n, str) and isinstance(d, Mapping)}


Builder = Callable[[Mapping[str, Any], DocContext], Spec]


def _text(ctx: DocContext, doc: Mapping[str, Any], key: str) -> str:
    v = doc.get(key)
    if v is None or isinstance(v, (dict, list)):
        return ""
    return ctx.string(key, v)


def _check_name(ctx: DocContext, doc: Mapping[str, Any], rule: Callable[[str], str | None]) -> str:
    name = doc.get("name")
    if not isinstance(name, str):
        return ""  # wrong type: the schema has reported it
    reason = rule(name)
    if reason:
        ctx.problem("name", f"invalid name {name!r}: {reason}")
    return name


def _build_pool(doc: Mapping[str, Any], ctx: DocContext) -> Spec:
    name = _check_name(ctx, doc, names.object_name_problem)
    driver = doc.get("driver") if isinstance(doc.get("driver"), str) else ""
    config = ctx.string_map("config", doc.get("config"))
    if driver:
        ctx.problems(keys.validate_pool_config(driver, config))
    return StoragePoolSpec(name=name, driver=driver, config=config,
                           description=_text(ctx, doc, "description"), source=ctx.source)


def _build_network(doc: Mapping[str, Any], ctx: DocContext) -> Spec:
    name = _check_name(ctx, doc, names.object_name_problem)
    raw_type = doc.get("type")
    ntype = ctx.string("type", raw_type).strip() if isinstance(raw_type, str) else \
        network_keys.DEFAULT_TYPE
    config = ctx.string_map("config", doc.get("config"))
    reason = network_keys.type_problem(ntype)
    if reason:
        ctx.problem("type", reason)
    else:
        ctx.problems(network_keys.validate_network_config(ntype, config))
    return NetworkSpec(name=name, type=ntype, config=config,
                       description=_text(ctx, doc, "description"), source=ctx.source)


def _build_profile(doc: Mapping[str, Any], ctx: DocContext) -> Spec:
    name = _check_name(ctx, doc, names.object_name_problem)
    config = ctx.string_map("config", doc.get("config"))
    devices = ctx.devices("devices", doc.get("devices"))
    ctx.problems(keys.validate_config(config))
    ctx.problems(keys.validate_devices(devices))
    return ProfileSpec(name=name, description=_text(ctx, doc, "description"), config=config,
                       devices=devices, source=ctx.source)


def _build_image(doc: Mapping[str, Any], ctx: DocContext) -> Spec:
    name = _check_name(ctx, doc, names.alias_problem)
    raw_build, raw_path = doc.get("build"), doc.get("path")
    build: dict[str, str] | None = None
    path: str | None = None
    if "build" in doc and "path" in doc:
        ctx.problem("path", "an Image has either build or path, not both")
    elif "build" not in doc and "path" not in doc:
        ctx.problem(None, "an Image needs build (e.g. build: busybox) or path "
                          "(an image tarball or directory)")
    if isinstance(raw_build, str):
        build = {"builder": ctx.string("build", raw_build).strip()}
        if not build["builder"]:
            ctx.problem("build", "build needs a builder name, e.g. build: busybox")
    elif isinstance(raw_build, Mapping):
        build = ctx.string_map("build", raw_build)
        if not build.get("builder", "").strip():
            ctx.problem("build", "build needs a builder, e.g. {builder: debian, release: bookworm}")
    if isinstance(raw_path, str):
        if not raw_path.strip():
            ctx.problem("path", "path must not be empty")
        else:
            # relative to the manifest file, so a repo of manifests works from any cwd
            path = os.path.normpath(os.path.join(ctx.base_dir, raw_path))
    return ImageSpec(name=name, build=build, path=path, description=_text(ctx, doc, "description"),
                     source=ctx.source)


def _build_container(doc: Mapping[str, Any], ctx: DocContext) -> Spec:
    name = _check_name(ctx, doc, names.name_problem)
    image = doc.get("image") if isinstance(doc.get("image"), str) else ""
    if image:
        reason = names.alias_problem(image)
        if reason:
            ctx.problem("image", f"invalid image {image!r}: {reason}")
    profiles: tuple[str, ...] = ("default",)
    raw_profiles = doc.get("profiles")
    if isinstance(raw_profiles, list):
        seen: set[str] = set()
        kept = []
        for i, p in enumerate(raw_profiles):
            if not isinstance(p, str):
                continue
            reason = names.object_name_problem(p)
            if reason:
                ctx.problem(f"profiles.{i}", f"invalid profile name {p!r}: {reason}")
            elif p in seen:
                ctx.problem(f"profiles.{i}", f"profile {p!r} is listed twice")
            seen.add(p)
            kept.append(p)
        profiles = tuple(kept)
    config = ctx.string_map("config", doc.get("config"))
    devices = ctx.devices("devices", doc.get("devices"))
    ctx.problems(keys.validate_config(config))
    ctx.problems(keys.validate_devices(devices))
    state = doc.get("state") if doc.get("state") in ("running", "stopped") else None
    target = doc.get("target") if isinstance(doc.get("target"), str) else None
    if target is not None and members.target_problem(target):
        ctx.problem("target", f"{members.target_problem(target)} (target: names a cluster "
                              "member, or @GROUP)")
    ignore = doc.get("ignore") if isinstance(doc.get("ignore"), Mapping) else {}
    return ContainerSpec(name=name, image=image, profiles=profiles, config=config,
                         devices=devices, state=state, description=_text(ctx, doc, "description"),
                         source=ctx.source, target=target,
                         ignore_config=_strings(ignore.get("config")),
                         ignore_devices=_strings(ignore.get("devices")))


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


#: kind -> (cerberus schema, builder). Adding a kind (Network, Member) is one entry here plus
#: its spec class and its place in ``objects.KIND_ORDER``.
KINDS: dict[str, tuple[Mapping[str, Any], Builder]] = {
    "StoragePool": (schemas.STORAGE_POOL, _build_pool),
    "Network": (schemas.NETWORK, _build_network),
    "Profile": (schemas.PROFILE, _build_profile),
    "Image": (schemas.IMAGE, _build_image),
    "Container": (schemas.CONTAINER, _build_container),
    "Member": (members.MEMBER_SCHEMA, members.build_member),
    "StorageVolume": (volume_keys.SCHEMA, volume_keys.build),
}


def _known_kinds() -> str:
    order = [k for k in KIND_ORDER if k in KINDS] + [k for k in KINDS if k not in KIND_ORDER]
    return ", ".join(order)


@dataclass
class _Loaded:
    spec: Spec | None
    kind: str
    name: str | None
    name_line: int
    file: str | None
    issues: list[Issue]
    keep: bool = False     # prune: false


def _load_document(node: Node, file: str | None, base_dir: str) -> _Loaded:
    doc_line = node.start_mark.line + 1
    ctx_issues: list[Issue] = []

    def report(path: str | None, line: int | None, reason: str) -> None:
        ctx_issues.append(Issue(reason, file=file, line=line, path=path))

    tree = _Tree(report)
    try:
        data = tree.convert(node)
    except _TooLarge:
        return _Loaded(None, "", None, doc_line, file, [Issue(
            f"document too large (more than {_MAX_NODES} nodes, aliases included)",
            file=file, line=doc_line)])
    ctx = DocContext(file, doc_line, base_dir, tree.lines, tree.text, ctx_issues,
                     frozenset(tree.broken))
    if not isinstance(data, Mapping):
        ctx.problem(None, "a document must be a mapping with a kind: field (one of "
                          f"{_known_kinds()}), got {schemas.describe_type(data)}")
        return _Loaded(None, "", None, doc_line, file, ctx.issues)
    kind = data.get("kind")
    if kind is None:
        ctx.problem("kind" if "kind" in data else None,
                    f"missing kind: expected one of {_known_kinds()}")
        return _Loaded(None, "", None, doc_line, file, ctx.issues)
    if not isinstance(kind, str) or kind not in KINDS:
        close = difflib.get_close_matches(str(kind), list(KINDS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        ctx.problem("kind", f"unknown kind {kind!r}{hint}: expected one of {_known_kinds()}")
        return _Loaded(None, "", None, doc_line, file, ctx.issues)
    schema, builder = KINDS[kind]
    for path, reason in schemas.check(schema, data):
        ctx.problem(path, reason)
    spec = builder(data, ctx)
    # the identity names are unique by: the name, or a volume's POOL/NAME
    name = spec.name if isinstance(data.get("name"), str) and spec.name else None
    return _Loaded(spec if not ctx.issues else None, kind, name, ctx.line_of("name"), file,
                   ctx.issues, data.get("prune") is False)


def _load_file(text: str, file: str | None, base_dir: str) -> tuple[list[_Loaded], list[Issue]]:
    """All documents of one file, or the one YAML syntax issue that spoils the file."""
    loaded: list[_Loaded] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG
                                and node.value == ""):
                continue  # empty document
            loaded.append(_load_document(node, file, base_dir))
    except yaml.YAMLError as e:
        # the boundary: a syntax error makes the whole file unreadable; report just that
        return [], [Issue(_yaml_reason(e), file=file, line=_yaml_line(e))]
    return loaded, []


def _finish(files: Sequence[tuple[str | None, str | None, str, Issue | None]]) -> Manifest:
    """Load ``(file, text, base_dir, read_issue)`` entries into one Manifest or raise."""
    issues: list[Issue] = []
    specs: list[Spec] = []
    keep: set[tuple[str, str]] = set()
    first: dict[tuple[str, str], _Loaded] = {}
    for file, text, base_dir, read_issue in files:
        if read_issue is not None:
            issues.append(read_issue)
            continue
        assert text is not None
        docs, file_issues = _load_file(text, file, base_dir)
        for d in docs:
            file_issues.extend(d.issues)
            if d.name is not None:
                prev = first.get((d.kind, d.name))
                if prev is not None:
                    where = f"{prev.file}:{prev.name_line}" if prev.file else f"line {prev.name_line}"
                    file_issues.append(Issue(f"duplicate {d.kind} {d.name!r} (also defined at {where})",
                                             file=file, line=d.name_line, path="name"))
                    continue
                first[(d.kind, d.name)] = d
            if d.spec is not None:
                specs.append(d.spec)
                if d.keep:
                    keep.add((d.kind, d.name or ""))
        # in file order: sort by line; the sort is stable, so one line keeps its order
        issues.extend(sorted(file_issues, key=lambda i: i.line or 0))
    if issues:
        raise ValidationError(issues)
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    specs.sort(key=lambda s: rank.get(s.kind, len(rank)))
    return Manifest(tuple(specs), keep=tuple(sorted(keep)))


def load_text(text: str, filename: str | None = "<stdin>", *, base_dir: str | None = None) -> Manifest:
    """Load manifests from a string.

    Args:
        text: YAML, one or more documents.
        filename: shown in issues and recorded in each spec's source.
        base_dir: directory relative image paths are resolved against (default: the cwd).

    Returns:
        The :class:`Manifest`, specs sorted by ``KIND_ORDER`` (stable within a kind).

    Raises:
        ValidationError: one issue per problem found.
    """
    return _finish([(filename, text, base_dir or os.getcwd(), None)])


def _is_yaml(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def expand_paths(paths: Sequence[str]) -> list[tuple[str, Issue | None]]:
    """Files to read, in order: directories recursively (sorted, hidden entries skipped)."""
    out: list[tuple[str, Issue | None]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        real = os.path.realpath(path) if path != "-" else "-"
        if real not in seen:
            seen.add(real)
            out.append((path, None))

    for p in paths:
        if p == "-":
            add(p)
        elif os.path.isdir(p):
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found.extend(os.path.join(dirpath, f) for f in filenames
                             if not f.startswith(".") and _is_yaml(f))
            for f in sorted(found):
                add(f)
        elif os.path.exists(p):
            add(p)  # a file named explicitly is read whatever its extension
        else:
            out.append((p, Issue("no such file or directory", file=p)))
    return out


def load_paths(paths: Sequence[str]) -> Manifest:
    """Load manifests from files, directories (recursive ``*.yaml``/``*.yml``) and ``-`` (stdin).

    Args:
        paths: files, directories, or ``-``.

    Returns:
        The :class:`Manifest`, specs sorted by ``KIND_ORDER`` (stable within a kind).

    Raises:
        ValidationError: every problem found across all files, one issue each, in file order.
    """
    entries: list[tuple[str | None, str | None, str, Issue | None]] = []
    for path, issue in expand_paths(paths):
        if issue is not None:
            entries.append((path, None, "", issue))
            continue
        if path == "-":
            entries.append(("<stdin>", sys.stdin.read(), os.getcwd(), None))
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            entries.append((path, None, "", Issue(f"not UTF-8 text: {e.reason} at byte {e.start}",
                                                  file=path)))
            continue
        except OSError as e:
            entries.append((path, None, "", Issue(e.strerror or str(e), file=path)))
            continue
        entries.append((path, text, os.path.dirname(os.path.abspath(path)), None))
    origin = ",".join(sorted(p if p == "-" else os.path.abspath(p) for p in paths))
    return dataclasses.replace(_finish(entries), origin=origin)
