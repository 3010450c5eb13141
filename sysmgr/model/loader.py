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
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import yaml
from yaml.nodes import Node, ScalarNode

from sysmgr.errors import Issue, ValidationError
from sysmgr.model import keys, members, names, network_keys, pool_keys, schemas, volume_keys
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
from sysmgr.model.suggest import did_you_mean
from sysmgr.model.yaml_tree import MAX_NODES, Tree, TooLarge, dotted, yaml_line, yaml_reason

_NULL_TAG = "tag:yaml.org,2002:null"
#: top-level fields whose keys' lines a spec keeps (they name other objects)
_REFERENCE_FIELDS = frozenset({"profiles", "image", "devices", "target"})


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
        refs = tuple(sorted((k, v) for k, v in self.lines.items()
                            if k.split(".", 1)[0] in _REFERENCE_FIELDS))
        return Source(self.file, self.line, refs)

    def line_of(self, path: str | Sequence[object]) -> int:
        """Line of the key at ``path`` (dotted or a tuple), or of its nearest parent."""
        key = path if isinstance(path, str) else dotted(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return self.line

    def problem(self, path: str | Sequence[object] | None, reason: str) -> None:
        """Record an issue at ``path`` (dotted or tuple; None for the whole document)."""
        key = None if path is None else (path if isinstance(path, str) else dotted(path))
        if key in self.broken or any(i.path == key for i in self.issues if key):
            # one issue per problem: the schema and the key tables may both see a missing
            # device type, and a value whose YAML was unreadable needs no second issue
            return
        line = self.line_of(key) if key else self.line
        self.issues.append(Issue(reason, file=self.file, line=line, path=key or None))

    def problems(self, found: Sequence[tuple[str, str]]) -> None:
        """Record several ``(dotted path, reason)`` problems (as returned by :mod:`keys`)."""
        for path, reason in found:
            self.problem(path, reason)

    def string(self, path: str, value: object) -> str:
        """A scalar as a string, using the text as written in the YAML when there is one."""
        if path in self.text and not isinstance(value, (dict, list)):
            return self.text[path]
        return keys.value_to_str(value)

    def string_map(self, field_name: str, value: object,
                   listable: Callable[[str], bool] | None = None) -> dict[str, str]:
        """``{key: str}`` from a mapping of scalars (anything else is skipped: the schema
        has reported it); a list of scalars, where ``listable(key)`` allows one, becomes
        its comma-separated string (else it is reported)."""
        if not isinstance(value, Mapping):
            return {}
        out = {}
        for k, v in value.items():
            path = f"{field_name}.{k}"
            if not isinstance(k, str) or v is None or isinstance(v, dict):
                continue
            if not isinstance(v, list):
                out[k] = self.string(path, v)
            elif listable is not None and listable(k):
                if all(x is not None and not isinstance(x, (dict, list)) for x in v):
                    out[k] = ",".join(keys.value_to_str(x) for x in v)
            else:
                self.problem(path, "expected a string, number or boolean, got a list")
        return out

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
    reason = pool_keys.driver_problem(driver) if driver else None
    if reason:  # caught here with its file:line, not by apply when it makes the driver
        ctx.problem("driver", reason)
    elif driver:
        ctx.problems(pool_keys.validate_pool_config(driver, config))
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
    config = ctx.string_map("config", doc.get("config"), keys.is_listable)
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
    config = ctx.string_map("config", doc.get("config"), keys.is_listable)
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
    draft: Spec | None = None  # built despite its issues: its references are checked too


def _load_document(node: Node, file: str | None, base_dir: str) -> _Loaded:
    doc_line = node.start_mark.line + 1
    ctx_issues: list[Issue] = []

    def report(path: str | None, line: int | None, reason: str) -> None:
        ctx_issues.append(Issue(reason, file=file, line=line, path=path))

    tree = Tree(report)
    try:
        data = tree.convert(node)
    except TooLarge:
        return _Loaded(None, "", None, doc_line, file, [Issue(
            f"document too large (more than {MAX_NODES} nodes, aliases included)",
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
        hint = did_you_mean(kind, KINDS)
        ctx.problem("kind", f"unknown kind {kind!r}{hint}: expected one of {_known_kinds()}")
        return _Loaded(None, "", None, doc_line, file, ctx.issues)
    schema, builder = KINDS[kind]
    for path, reason in schemas.check(schema, data):
        ctx.problem(path, reason)
    spec = builder(data, ctx)
    # the identity names are unique by: the name, or a volume's POOL/NAME
    name = spec.name if isinstance(data.get("name"), str) and spec.name else None
    return _Loaded(spec if not ctx.issues else None, kind, name, ctx.line_of("name"), file,
                   ctx.issues, data.get("prune") is False, spec)


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
        return [], [Issue(yaml_reason(e), file=file, line=yaml_line(e))]
    return loaded, []


def _finish(files: Sequence[tuple[str | None, str | None, str, Issue | None]]) -> Manifest:
    """Load ``(file, text, base_dir, read_issue)`` entries into one Manifest or raise."""
    issues: list[Issue] = []
    specs: list[Spec] = []
    keep: set[tuple[str, str]] = set()
    broken: set[tuple[str, str]] = set()
    drafts: list[Spec] = []
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
            elif d.draft is not None and d.name:
                drafts.append(d.draft)
            elif d.name is not None:
                broken.add((d.kind, d.name))
        # in file order: sort by line; the sort is stable, so one line keeps its order
        issues.extend(sorted(file_issues, key=lambda i: i.line or 0))
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    specs.sort(key=lambda s: rank.get(s.kind, len(rank)))
    if issues:
        drafts.sort(key=lambda s: rank.get(s.kind, len(rank)))
        raise ManifestError(issues, Manifest(tuple(specs) + tuple(drafts),
                                             keep=tuple(sorted(keep)),
                                             broken=tuple(sorted(broken))))
    return Manifest(tuple(specs), keep=tuple(sorted(keep)))


class ManifestError(ValidationError):
    """Manifests with problems; ``partial`` holds the documents that loaded and the drafts
    of those with problems (built from what could be read), with the (kind, name) of those
    that could not be built as its ``broken``: references can be checked in the same
    round."""

    def __init__(self, issues: Sequence[Issue], partial: Manifest) -> None:
        super().__init__(issues)
        self.partial = partial


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
