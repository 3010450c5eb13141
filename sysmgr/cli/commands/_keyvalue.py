"""The noun-generic ``show/get/set/unset/edit`` verbs: one implementation that containers
(``sysmgr config``), profiles, networks and storage pools register through a :class:`Noun`
adapter saying how to fetch an object, what ``show`` prints and how changes are saved.

Only click and the standard library are imported here (``yaml`` on first use), so a command
module that registers these verbs stays cheap to load.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    DOC_FORMATS, AppContext, confirm, echo_err, format_option, parse_assignments, pass_app,
    report_pending, stdin_is_tty)
from sysmgr.errors import Issue, NotFound, SysmgrError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client

# ``(object, values to set, keys to unset) -> what needs a restart``
ConfigSetter = Callable[[Any, Mapping[str, str], Sequence[str]], list[str]]

# the fields ``edit`` can change, in the order the error message names them
EDIT_FIELDS = ("config", "devices", "profiles", "description")


class Noun:
    """How the generic verbs reach one kind of object.

    Attributes:
        name: the noun in help and error text ("container", "storage pool").
        fetch: the object called NAME (raises NotFound).
        document: what ``show`` prints; the flag is ``--expanded`` (only for ``expandable``).
        edit_document: what ``edit`` opens; None means the noun has no ``edit``.
        edit_fields: the fields of :data:`EDIT_FIELDS` that ``edit`` replaces.
        set_config: applies ``set``/``unset``; None means the noun has neither.
        report: says on stderr what a saved change leaves pending (the save's return value).
        expandable: ``show``/``get`` take ``-e/--expanded`` (profiles included).
        help: per-verb help replacing the generated one (the commands' historical wording).
        keys_doc: where the config keys are documented, shown below ``set``'s help.
        properties: the object's own fields ``get/set/unset --property`` reach (LXD's
            ``--property``: ``description``...); set through the object's ``save()``.
        parse_edit: turns an edited document into the new field values (default
            :func:`parse_edited`); a noun whose ``fetch`` returns several kinds of object
            (a container or, for ``NAME/SNAP``, a snapshot) dispatches here.
    """

    # a plain class, not a dataclass: generating one costs ~1 ms on every command start
    __slots__ = ("name", "fetch", "document", "edit_document", "edit_fields", "set_config",
                 "report", "expandable", "help", "keys_doc", "properties", "parse_edit")

    def __init__(self, name: str, *, fetch: Callable[["Client", str], Any],
                 document: Callable[[Any, bool], dict[str, Any]],
                 edit_document: Callable[[Any], dict[str, Any]] | None = None,
                 edit_fields: tuple[str, ...] = ("config", "description"),
                 set_config: ConfigSetter | None = None,
                 report: Callable[[str, Sequence[str]], None] = report_pending,
                 expandable: bool = False, help: Mapping[str, str] | None = None,
                 keys_doc: str | None = None, properties: tuple[str, ...] = (),
                 parse_edit: Callable[["Noun", Any, str, Any], dict[str, Any]] | None = None
                 ) -> None:
        self.name = name
        self.fetch = fetch
        self.document = document
        self.edit_document = edit_document
        self.edit_fields = edit_fields
        self.set_config = set_config
        self.report = report
        self.expandable = expandable
        self.help: Mapping[str, str] = help or {}
        self.keys_doc = keys_doc
        self.properties = properties
        self.parse_edit = parse_edit or parse_edited

    def help_for(self, verb: str) -> str:
        default = {
            "show": f"Show a {self.name} as YAML.",
            "get": f"Print a {self.name}'s config value (empty when unset).",
            "set": f"Set {self.name} config keys (KEY=VALUE..., or KEY VALUE).",
            "unset": f"Remove config keys from a {self.name}.",
            "edit": f"Edit a {self.name} as YAML ($EDITOR, or YAML on stdin).",
        }
        return self.help.get(verb, default[verb])


def register(group: click.Group, noun: Noun) -> None:
    """Add the verbs ``noun`` supports to ``group``: show and get always, set and unset when
    it has a ``set_config`` or ``properties``, edit when it has an ``edit_document``."""
    _show_command(group, noun)
    _get_command(group, noun)
    if noun.set_config is not None or noun.properties:
        _set_command(group, noun, noun.set_config)
        _unset_command(group, noun, noun.set_config)
    if noun.edit_document is not None:
        _edit_command(group, noun, noun.edit_document)


def is_snapshot(obj: Any) -> bool:
    """Whether ``obj`` is the API's Snapshot (``config ... NAME/SNAP``; not imported here:
    the API costs start-up time)."""
    return hasattr(obj, "expires_at")


def updated(noun: Noun, name: str, what: str, obj: Any = None) -> None:
    """The confirmation of a saved change: ``Container c1 updated: limits.memory set``
    (``Snapshot c1/snap0 updated`` for a snapshot)."""
    kind = "snapshot" if is_snapshot(obj) else noun.name
    confirm(kind[:1].upper() + kind[1:], name, f"updated{': ' + what if what else ''}")


def save_local_config(what: str) -> ConfigSetter:
    """A :data:`ConfigSetter` for objects edited in place then ``save()`` d (profiles,
    networks); unsetting a key that is not set is an error naming ``what``."""

    def set_config(obj: Any, values: Mapping[str, str], unset: Sequence[str]) -> list[str]:
        obj.config.update(values)
        for key in unset:
            if key not in obj.config:
                raise NotFound(f"config key {key!r} is not set on {what} {obj.name!r}")
            del obj.config[key]
        return obj.save() or []  # a profile's save() returns None: nothing pending

    return set_config


# -- the verbs ------------------------------------------------------------------------------

def _show_command(group: click.Group, noun: Noun) -> None:
    def show(app: AppContext, name: str, fmt: str, expanded: bool = False) -> None:
        click.echo(render.document(fmt, noun.document(noun.fetch(app.client, name), expanded)))

    if noun.expandable:
        show = click.option("-e", "--expanded", is_flag=True,
                            help="Include what the profiles contribute.")(show)
    show = format_option(DOC_FORMATS, default="yaml")(show)
    group.command("show", help=noun.help_for("show"))(click.argument("name")(pass_app(show)))


_property = click.option("-p", "--property", "prop", is_flag=True,
                         help="A property of the object (description...), not a config key.")


def _check_properties(noun: Noun, keys: Sequence[str]) -> None:
    bad = [k for k in keys if k not in noun.properties]
    if bad:
        have = ", ".join(noun.properties) or "none"
        raise ValidationError([Issue(f"{noun.name} has no property {k!r} (properties: {have})",
                                     path=k) for k in bad])


def _get_command(group: click.Group, noun: Noun) -> None:
    def get(app: AppContext, name: str, key: str, prop: bool, expanded: bool = False) -> None:
        obj = noun.fetch(app.client, name)
        if prop:
            _check_properties(noun, [key])
            value = getattr(obj, key)
            click.echo(",".join(value) if isinstance(value, list) else (value or ""))
            return
        config = getattr(obj, "expanded_config", obj.config) if expanded else obj.config
        click.echo(config.get(key, ""))

    if noun.expandable:
        get = click.option("-e", "--expanded", is_flag=True,
                           help="Read the expanded config (profiles included).")(get)
    get = _property(get)
    group.command("get", help=noun.help_for("get"))(
        click.argument("name")(click.argument("key")(pass_app(get))))


def _set_properties(noun: Noun, obj: Any, values: Mapping[str, str]) -> list[str]:
    _check_properties(noun, list(values))
    for key, value in values.items():
        setattr(obj, key, [p for p in value.split(",") if p] if key == "profiles" else value)
    return obj.save() or []


def _set_command(group: click.Group, noun: Noun, set_config: ConfigSetter | None) -> None:
    @group.command("set", help=noun.help_for("set"), epilog=noun.keys_doc)
    @click.argument("name")
    @click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
    @_property
    @pass_app
    def set_(app: AppContext, name: str, assignments: tuple[str, ...], prop: bool) -> None:
        values = parse_set_args(assignments)
        obj = noun.fetch(app.client, name)
        if prop or set_config is None:
            pending = _set_properties(noun, obj, values)
        else:
            pending = set_config(obj, values, ())
        updated(noun, name, ", ".join(values) + " set")
        noun.report(name, pending)


def _unset_command(group: click.Group, noun: Noun, set_config: ConfigSetter | None) -> None:
    @group.command("unset", help=noun.help_for("unset"))
    @click.argument("name")
    @click.argument("keys", nargs=-1, required=True, metavar="KEY...")
    @_property
    @pass_app
    def unset(app: AppContext, name: str, keys: tuple[str, ...], prop: bool) -> None:
        obj = noun.fetch(app.client, name)
        if prop or set_config is None:
            pending = _set_properties(noun, obj, {k: "" for k in keys})
        else:
            pending = set_config(obj, {}, list(keys))
        updated(noun, name, ", ".join(keys) + " unset")
        noun.report(name, pending)


def _edit_command(group: click.Group, noun: Noun, document: Callable[[Any], dict[str, Any]]) -> None:
    @group.command("edit", help=noun.help_for("edit"))
    @click.argument("name")
    @pass_app
    def edit(app: AppContext, name: str) -> None:
        obj = noun.fetch(app.client, name)

        def apply(doc: Any) -> None:
            # validate every field before touching the object: a bad document changes nothing
            for attr, value in noun.parse_edit(noun, obj, name, doc).items():
                setattr(obj, attr, value)
            pending = obj.save() or []
            updated(noun, name, "", obj)
            noun.report(name, pending)

        edit_document(render.yaml_text(document(obj)) + "\n", f"{name}.yaml", apply)


# -- KEY=VALUE and YAML documents ---------------------------------------------------------

def parse_set_args(args: Sequence[str]) -> dict[str, str]:
    """Arguments of ``config set`` / ``profile set``: ``KEY=VALUE...`` or LXD's ``KEY VALUE``;
    ``KEY -`` reads the value from stdin (a certificate, a multi-line ``raw.idmap``; one
    trailing newline is dropped)."""
    if not args:
        raise click.UsageError("expected KEY=VALUE (or KEY VALUE)")
    if len(args) == 2 and "=" not in args[0]:
        value = args[1]
        if value == "-":
            value = sys.stdin.read()
            value = value[:-1] if value.endswith("\n") else value
        return {args[0]: value}
    return parse_assignments(args)


def parse_edited(noun: Noun, obj: Any, name: str, doc: Any) -> dict[str, Any]:
    """The new values of ``noun.edit_fields`` from an edited document (ValidationError when it
    is not one). A field left out is emptied, except ``profiles``, which stays as it was."""
    if doc in (None, ""):
        doc = {}
    fields = [f for f in EDIT_FIELDS if f in noun.edit_fields]
    if not isinstance(doc, dict):
        raise ValidationError(f"expected a YAML mapping with {', '.join(fields)}")
    if doc.get("name", name) != name:
        raise ValidationError([Issue(f"renaming a {noun.name} is not supported here", path="name")])
    new: dict[str, Any] = {}
    if "profiles" in fields:  # checked first, as the container edit always has
        profiles = doc.get("profiles", obj.profiles) or []
        if not isinstance(profiles, list):
            raise ValidationError([Issue("expected a list of profile names", path="profiles")])
        new["profiles"] = [str(p) for p in profiles]
    if "config" in fields:
        new["config"] = str_map(doc.get("config"), "config")
    if "devices" in fields:
        new["devices"] = devices_map(doc.get("devices"))
    if "description" in fields:
        new["description"] = str(doc.get("description") or "")
    return new


def to_str(value: object, where: str) -> str:
    """A YAML scalar as the string LXD stores (``true``, ``2``, ``64MiB``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValidationError([Issue(f"expected a string, got {type(value).__name__}", path=where)])


def str_map(value: object, where: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError([Issue(f"expected a mapping, got {type(value).__name__}", path=where)])
    return {str(k): to_str(v, f"{where}.{k}") for k, v in value.items()}


def devices_map(value: object, where: str = "devices") -> dict[str, dict[str, str]]:
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError([Issue(f"expected a mapping, got {type(value).__name__}", path=where)])
    return {str(k): str_map(v, f"{where}.{k}") for k, v in value.items()}


def load_yaml(text: str, what: str) -> Any:
    """Parse a YAML document typed by a user; ValidationError (with the line) when broken.

    Scalars stay the text as written (YAML's base loader), as the manifest loader keeps them:
    ``0755`` must not become 493, nor ``1.50`` become ``1.5``.
    """
    import yaml  # only edit/show pay for yaml's ~20 ms

    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e)
        raise ValidationError([Issue(f"invalid YAML: {reason}", file=what, line=line)]) from None


def edit_document(text: str, what: str, apply: Callable[[Any], None]) -> None:
    """``lxc ... edit``: read the new YAML from stdin when it is not a terminal, else open
    ``$VISUAL``/``$EDITOR`` on a temporary file and re-open it while the result is invalid."""
    if not stdin_is_tty():
        apply(load_yaml(sys.stdin.read(), "<stdin>"))
        return
    while True:
        edited = click.edit(text, extension=".yaml", require_save=False)
        if edited is None or edited == text:
            click.echo("No changes", err=True)
            return
        try:
            apply(load_yaml(edited, what))
            return
        except SysmgrError as e:
            for line in e.message.splitlines():
                echo_err(f"Error: {line}")
            click.prompt("Press enter to open the editor again or ctrl+c to abort change",
                         default="", show_default=False, err=True)
            text = edited
