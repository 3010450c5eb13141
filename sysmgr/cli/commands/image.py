"""``sysmgr image``: build (busybox, debian), import, export, list, info, show, edit, delete
images and manage their aliases (create, rename, delete, list), with ``lxc image``'s output
conventions. Build, import and export report progress on stderr (a spinner with a clock on
a terminal); the result goes to stdout."""

from __future__ import annotations

import os
import platform
from typing import Any

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    DOC_FORMATS, AppContext, Group, confirm, echo_err, for_each, format_option, output,
    parse_assignments, pass_app)


HEADERS = ("ALIAS", "FINGERPRINT", "DESCRIPTION", "OS", "SIZE", "UPLOAD DATE")


def image_record(img: Any) -> dict[str, Any]:
    """An image as LXD's JSON has it: aliases as ``{name, description}`` objects."""
    props = dict(img.properties)
    return {
        "fingerprint": img.fingerprint,
        "aliases": [{"name": a, "description": ""} for a in sorted(img.aliases)],
        "type": "container",
        "architecture": platform.machine(),
        "description": props.get("description", ""),
        "os": props.get("os", ""),
        "release": props.get("release", ""),
        "size": img.size,
        "created_at": render.iso_time(img.created_at),
        "source": img.source,
        "properties": props,
    }


def _alias_cell(aliases: list[str]) -> str:
    if not aliases:
        return ""
    first = min(aliases, key=lambda a: (len(a), a))  # lxc shows the shortest alias
    return first + (f" ({len(aliases) - 1} more)" if len(aliases) > 1 else "")


def image_row(r: dict[str, Any]) -> list[object]:
    os_name = " ".join(x for x in (r["os"], r["release"]) if x)
    return [_alias_cell([a["name"] for a in r["aliases"]]), r["fingerprint"][:12], r["description"], os_name,
            render.format_size(r["size"]), render.format_date(render.parse_iso(r["created_at"]))]


@click.group(cls=Group)
def image() -> None:
    """Build, import and manage images."""


@image.command("build")
@click.argument("builder")
@click.option("--alias", help="Alias to give the image (e.g. debian/12; default: the "
                             "builder's name, which moves to the new image).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Builder option (repeatable).")
@click.option("--release", help="Shorthand for -o release=RELEASE.")
@click.option("-s", "--storage", "pool", metavar="POOL", help="Storage pool to keep the image in.")
@pass_app
def build(app: AppContext, builder: str, alias: str | None, options: tuple[str, ...],
          release: str | None, pool: str | None) -> None:
    """Build an image with a builder (busybox, debian); without --alias its alias is the
    builder's name, so `sysmgr launch busybox c1` can follow.

    \b
    Examples:
      sysmgr image build busybox
      sysmgr image build debian --release bookworm --alias debian/12
    """
    opts = parse_assignments(options)
    implied = alias is None
    if implied:
        alias = builder  # a user's next command is `launch busybox c1`
    if release is not None:
        opts["release"] = release
    with render.progress() as progress:
        img = app.client.images.build(builder, alias=alias, options=opts, pool=pool,
                                      progress=progress)
    # LXD's own line, word for word: scripts read the fingerprint after "fingerprint: "
    click.echo(f"Image built with fingerprint: {img.fingerprint}")
    if implied:
        echo_err(f"Alias: {alias} (--alias gives another)")


@image.command("import")
@click.argument("path")
@click.option("--alias", help="Alias to give the image.")
@click.option("-s", "--storage", "pool", metavar="POOL", help="Storage pool to keep the image in.")
@click.option("--allow-devices", is_flag=True,
              help="Keep the device nodes the image holds (dropped by default, with a warning: "
                   "every container gets its own /dev).")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="Which image of an OCI index to take (default: this host's, e.g. linux/amd64).")
@pass_app
def import_(app: AppContext, path: str, alias: str | None, pool: str | None,
            allow_devices: bool, platform: str | None) -> None:
    """Import an image: an LXD unified tarball, a rootfs tarball or a directory, or an OCI
    image (a layout directory, an oci-archive, a `docker save` archive).

    Device nodes in it are dropped, and a warning names them, unless --allow-devices (an
    OCI image's are always refused).
    """
    with render.progress() as progress:
        img = app.client.images.import_(path, alias=alias, pool=pool, progress=progress,
                                        allow_devices=allow_devices, platform=platform)
    for w in img.warnings:  # after the progress display: it owns stderr until then
        echo_err(f"warning: {w}")
    click.echo(f"Image imported with fingerprint: {img.fingerprint}")  # LXD's line, as above


@image.command("list")
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@format_option()
@pass_app
def list_(app: AppContext, filters: tuple[str, ...], fmt: str) -> None:
    """List images (FILTER: an alias or fingerprint prefix)."""
    images = sorted(app.client.images.all(), key=lambda i: (sorted(i.aliases) or ["~"],
                                                              i.fingerprint))
    if filters:
        images = [i for i in images if any(i.fingerprint.startswith(f) or
                                           any(a.startswith(f) for a in i.aliases) for f in filters)]
    output(render.listing(fmt, HEADERS, [image_record(i) for i in images], image_row))


@image.command("show")
@click.argument("ref")
@format_option(DOC_FORMATS, default="yaml")
@pass_app
def show(app: AppContext, ref: str, fmt: str) -> None:
    """Show an image (by alias or fingerprint prefix)."""
    img = app.client.images.get(ref)
    record = image_record(img)
    record["used_by"] = sorted(img.used_by)
    click.echo(render.document(fmt, record))


@image.command("info")
@click.argument("ref")
@pass_app
def info(app: AppContext, ref: str) -> None:
    """Show an image as lxc image info does (by alias or fingerprint prefix)."""
    img = app.client.images.get(ref)
    r = image_record(img)
    made = img.metadata.get("creation_date") or img.created_at
    lines = [f"Fingerprint: {r['fingerprint']}", f"Size: {render.format_size(r['size'])}",
             f"Architecture: {r['architecture']}", "Type: container", "Public: no",
             "Timestamps:", f"    Created: {render.format_timestamp(made)}",
             f"    Uploaded: {render.format_timestamp(img.created_at)}",
             "    Expires: never", "Properties:"]
    lines += [f"    {k}: {v}" for k, v in sorted(r["properties"].items())]
    lines += ["Aliases:"] + [f"    - {a['name']}" for a in r["aliases"]]
    lines += ["Cached: no", "Auto update: disabled", f"Source: {r['source'] or '-'}"]
    used = sorted(img.used_by)
    lines += ["Used by:"] + [f"    - {u}" for u in used] if used else []
    click.echo("\n".join(lines))


@image.command("export")
@click.argument("ref")
@click.argument("target", required=False, metavar="[TARGET]")
@pass_app
def export(app: AppContext, ref: str, target: str | None) -> None:
    """Write an image as an LXD unified tarball (metadata.yaml + rootfs/, zstd) to TARGET
    (default: FINGERPRINT.tar.zst here; a directory: that file in it)."""
    img = app.client.images.get(ref)
    path = target or "."
    if os.path.isdir(path):
        path = os.path.join(path, f"{img.fingerprint}.tar.zst")
    with render.progress() as progress:
        img.export(os.path.abspath(path), progress=progress)
    confirm("Image", img.fingerprint[:12], f"exported to {path}")


def _image_edit_document(img: Any) -> dict[str, Any]:
    return {"fingerprint": img.fingerprint,
            "properties": dict(sorted(img.properties.items()))}


@image.command("edit")
@click.argument("ref")
@pass_app
def edit(app: AppContext, ref: str) -> None:
    """Edit an image's properties as YAML ($EDITOR, or YAML on stdin)."""
    from sysmgr.cli.commands._keyvalue import edit_document, str_map
    from sysmgr.errors import Issue, ValidationError

    img = app.client.images.get(ref)

    def apply(doc: Any) -> None:
        if not isinstance(doc, dict):
            raise ValidationError("expected a YAML mapping with properties")
        if doc.get("fingerprint", img.fingerprint) != img.fingerprint:
            raise ValidationError([Issue("an image's fingerprint is its content's: it cannot "
                                         "change", path="fingerprint")])
        img.properties = str_map(doc.get("properties"), "properties")
        img.save()
        confirm("Image", img.fingerprint[:12], "updated")

    edit_document(render.yaml_text(_image_edit_document(img)) + "\n",
                  f"{img.fingerprint[:12]}.yaml", apply)


@image.command("delete")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@pass_app
def delete(app: AppContext, refs: tuple[str, ...]) -> None:
    """Delete images (containers made from them keep their own root filesystems).

    An image is needed only to create containers: those made from it go on working (their
    manifests too), and the command names them."""
    images = app.client.images

    def delete_one(ref: str) -> None:
        img = images.get(ref)
        users = img.used_by
        img.delete()
        confirm("Image", ref, "deleted")
        if users:
            echo_err("note: made from it (they keep their root filesystems): "
                     + ", ".join(users))

    for_each(refs, delete_one)


@image.command("publish")
@click.argument("ref", metavar="NAME[/SNAPSHOT]")
@click.option("--alias", help="Alias of the new image (in this host's store).")
@click.option("--format", "fmt", type=click.Choice(["image", "oci", "oci-layout"]),
              default="image", show_default=True,
              help="image: into this host's store; oci: an oci-archive file; oci-layout: an "
                   "OCI image layout directory (both for skopeo, umoci, podman).")
@click.option("-o", "--output", metavar="PATH", help="Where --format oci/oci-layout writes.")
@pass_app
def publish(app: AppContext, ref: str, alias: str | None, fmt: str, output: str | None) -> None:
    """Make an image of a stopped container or of a snapshot (lxc publish).

    The image holds the container's files with the container's own owners, its init as the
    entrypoint, its halt signal as StopSignal and its environment. On a cluster's admin
    root the member holding the container publishes it: into that member's store, or
    streamed back here for --format oci / oci-layout.

    \b
    Examples:
      sysmgr image publish web1/s0 --alias web-base
      sysmgr image publish web1 --format oci -o web1.oci.tar
      skopeo inspect oci-archive:web1.oci.tar
      sysmgr image publish web1 --format oci-layout -o web1.d --target node2
    """
    with render.progress() as progress:
        digest, img = app.client.images.publish(ref, format=fmt, output=output, alias=alias,
                                                progress=progress)
    if img is not None:
        click.echo(f"Image published with fingerprint: {img.fingerprint}")
        if img.location:  # on an admin root: the store of the member holding the container
            echo_err(f"In the image store of member {img.location} "
                     f"(sysmgr image list --target {img.location})")
    else:
        click.echo(f"Image published to {output} (manifest {digest})")


@image.group("alias")
def alias() -> None:
    """Manage image aliases."""


@alias.command("create")
@click.argument("name", metavar="ALIAS")
@click.argument("ref", metavar="FINGERPRINT")
@pass_app
def alias_create(app: AppContext, name: str, ref: str) -> None:
    """Point an alias at an image."""
    app.client.images.alias(name, ref)
    confirm("Image alias", name, "created")


@alias.command("rename")
@click.argument("name", metavar="ALIAS")
@click.argument("new", metavar="NEW")
@pass_app
def alias_rename(app: AppContext, name: str, new: str) -> None:
    """Rename an alias (its image keeps it under the new name)."""
    app.client.images.rename_alias(name, new)
    confirm("Image alias", name, f"renamed to {new}")


@alias.command("delete")
@click.argument("name", metavar="ALIAS")
@pass_app
def alias_delete(app: AppContext, name: str) -> None:
    """Delete an alias (the image stays)."""
    app.client.images.delete_alias(name)
    confirm("Image alias", name, "deleted")


@alias.command("list")
@format_option()
@pass_app
def alias_list(app: AppContext, fmt: str) -> None:
    """List image aliases."""
    records = sorted(({"name": a, "target": i.fingerprint, "type": "container",
                       "description": i.properties.get("description", "")}
                      for i in app.client.images.all() for a in i.aliases), key=lambda r: r["name"])
    output(render.listing(fmt, ("ALIAS", "FINGERPRINT", "TYPE", "DESCRIPTION"), records,
                          lambda r: [r["name"], r["target"][:12], "CONTAINER", r["description"]]))
