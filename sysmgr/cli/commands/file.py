"""``sysmgr file push|pull|edit|delete``: files in a container, with ``lxc file``'s path
rules: ``c1/etc/hosts`` is ``/etc/hosts`` in ``c1``, and a target ending in ``/`` is a
directory that receives the source's basename. ``-r`` copies directory trees (links as
links; devices, sockets and FIFOs skipped with a warning)."""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import sys
from typing import Any, BinaryIO, Sequence

import click

from sysmgr.cli.commands._common import (
    AppContext, Group, confirm, echo_err, pass_app, stdin_is_tty)
from sysmgr.errors import Issue, NotFound, SysmgrError, ValidationError

STDIO = "-"


def parse_container_path(spec: str) -> tuple[str, str, bool]:
    """Split ``NAME/PATH`` at the first ``/``.

    Returns:
        ``(name, absolute normalised path, is_dir)``; ``is_dir`` when ``spec`` ends in ``/``.

    Raises:
        ValidationError: no ``/`` or an empty container name.
    """
    name, sep, path = spec.partition("/")
    if not sep or not name:
        raise ValidationError([Issue(f"invalid container path {spec!r}: expected NAME/PATH, "
                                     "e.g. c1/etc/hosts")])
    return name, posixpath.normpath("/" + path.lstrip("/")), spec.endswith("/")


def push_targets(sources: Sequence[str], path: str, is_dir: bool) -> list[tuple[str, str]]:
    """Pair each local source with its path in the container."""
    if len(sources) > 1 and not is_dir:
        raise ValidationError(f"pushing {len(sources)} files needs a target directory ending in '/'",
                              hint="e.g. sysmgr file push a b c1/srv/")
    pairs = []
    for src in sources:
        if is_dir:
            if src == STDIO:
                raise ValidationError("cannot push stdin into a directory: give the file's name",
                                      hint="e.g. echo hi | sysmgr file push - c1/tmp/hi.txt")
            pairs.append((src, posixpath.join(path, os.path.basename(os.path.normpath(src)))))
        else:
            pairs.append((src, path))
    return pairs


def pull_target(path: str, local: str, count: int) -> str:
    """Where a pulled file goes: ``local`` itself, or ``local/<basename>`` for a directory."""
    if local == STDIO:
        return local
    if os.path.isdir(local) or local.endswith("/"):
        return os.path.join(local, posixpath.basename(path) or "root")
    if count > 1:
        raise ValidationError(f"pulling {count} files needs a local directory as the target")
    return local


def _parse_mode(mode: str | None) -> int | None:
    if mode is None:
        return None
    try:
        value = int(mode, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise ValidationError([Issue(f"invalid mode {mode!r}: expected octal such as 0644", path="--mode")])
    return value


def _local_error(path: str, e: OSError) -> SysmgrError:
    cls = NotFound if e.errno == errno.ENOENT else SysmgrError
    return cls(f"{path}: {e.strerror or e}")


@click.group(cls=Group)
def file() -> None:
    """Copy files into and out of containers."""


def _warn_skipped(skipped: Sequence[str]) -> None:
    for s in skipped:
        echo_err(f"warning: skipped {s}: not a regular file, directory or symlink")


@file.command("push")
@click.argument("sources", nargs=-1, required=True, metavar="LOCAL...")
@click.argument("target", metavar="NAME/PATH")
@click.option("--uid", type=int, help="Owner inside the container (default: the local file's).")
@click.option("--gid", type=int, help="Group inside the container (default: the local file's).")
@click.option("--mode", help="Octal mode (default: the local file's mode; 0644 for stdin).")
@click.option("-p", "--create-dirs", is_flag=True, help="Create missing parent directories.")
@click.option("-r", "--recursive", is_flag=True,
              help="Copy directories with everything in them (links stay links).")
@pass_app
def push(app: AppContext, sources: tuple[str, ...], target: str, uid: int | None, gid: int | None,
         mode: str | None, create_dirs: bool, recursive: bool) -> None:
    """Copy local files (-r: directories) into a container ('-' reads stdin).

    \b
    Examples:
      sysmgr file push motd c1/etc/motd
      sysmgr file push a.conf b.conf c1/etc/app/
      sysmgr file push -r ./site c1/srv/       (makes /srv/site in c1)
    """
    name, path, is_dir = parse_container_path(target)
    want_mode = _parse_mode(mode)
    files = app.client.containers.get(name).files
    if recursive:
        if len(sources) > 1 and not is_dir:
            raise ValidationError("pushing several directories needs a target ending in '/'")
        for src in sources:
            if not os.path.isdir(src):
                raise ValidationError(f"{src} is not a directory (-r copies directories)")
            dest = posixpath.join(path, os.path.basename(os.path.normpath(src))) \
                if is_dir or _is_dir_inside(files, path) else path
            _warn_skipped(files.push_tree(src, dest, uid=uid, gid=gid, mode=want_mode,
                                          parents=create_dirs))
            confirm("Directory", f"{name}{dest}", f"pushed from {src}")
        return
    for src, dest in push_targets(sources, path, is_dir):
        _push_file(files, src, dest, uid=uid, gid=gid, mode=want_mode, mkdir=create_dirs)
        confirm("File", f"{name}{dest}", "pushed" if src == STDIO else f"pushed from {src}")


def _push_file(files: Any, src: str, dest: str, *, uid: int | None, gid: int | None,
               mode: int | None, mkdir: bool) -> None:
    """One file (``-``: stdin) to ``dest``: the local file's mode and owner unless given."""
    if src == STDIO:
        files.put(dest, sys.stdin.buffer, mode=0o644 if mode is None else mode,
                  uid=uid or 0, gid=gid or 0, mkdir=mkdir)
        return
    try:
        st = os.stat(src)
        if os.path.isdir(src):
            raise ValidationError(f"{src} is a directory: file push copies files",
                                  hint="push -r copies a directory with everything in it")
        f: BinaryIO = open(src, "rb")
    except OSError as e:
        raise _local_error(src, e) from None
    with f:
        files.put(dest, f, mode=(st.st_mode & 0o7777) if mode is None else mode,
                  uid=st.st_uid if uid is None else uid, gid=st.st_gid if gid is None else gid,
                  mkdir=mkdir)


def _is_dir_inside(files: Any, path: str) -> bool:
    """Whether ``path`` is an existing directory inside (``push -r d c1/srv``: into it)."""
    try:
        return stat.S_ISDIR(files.stat(path).mode)
    except NotFound:
        return False


@file.command("pull")
@click.argument("sources", nargs=-1, required=True, metavar="NAME/PATH...")
@click.argument("target", metavar="LOCAL")
@click.option("-p", "--create-dirs", is_flag=True, help="Create missing local parent directories.")
@click.option("-r", "--recursive", is_flag=True,
              help="Copy directories with everything in them (links stay links).")
@pass_app
def pull(app: AppContext, sources: tuple[str, ...], target: str, create_dirs: bool,
         recursive: bool) -> None:
    """Copy files (-r: directories) out of a container ('-' writes to stdout).

    \b
    Examples:
      sysmgr file pull c1/etc/hosts ./hosts
      sysmgr file pull c1/etc/os-release -
      sysmgr file pull -r c1/etc ./backup/     (makes ./backup/etc)
    """
    if create_dirs and target != STDIO:
        into = target.endswith("/") or len(sources) > 1
        os.makedirs(target if into else os.path.dirname(target) or ".", exist_ok=True)
    for spec in sources:
        name, path, _ = parse_container_path(spec)
        files = app.client.containers.get(name).files
        if recursive:
            if target == STDIO:
                raise ValidationError("-r copies directories: give a local directory, not '-'")
            dest = os.path.join(target, posixpath.basename(path) or "root") \
                if os.path.isdir(target) else target
            _warn_skipped(files.pull_tree(path, dest))
            continue
        dest = pull_target(path, target, len(sources))
        if dest == STDIO:
            files.pull(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            continue
        tmp = f"{dest}.sysmgr-{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as out:
                files.pull(path, out)
            os.replace(tmp, dest)
        except OSError as e:
            raise _local_error(dest, e) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@file.command("delete")
@click.argument("targets", nargs=-1, required=True, metavar="NAME/PATH...")
@click.option("-f", "--force", is_flag=True,
              help="Also delete directories that are not empty, with everything in them.")
@pass_app
def delete(app: AppContext, targets: tuple[str, ...], force: bool) -> None:
    """Delete files, links or empty directories in a container (-f: any directory)."""
    for spec in targets:
        name, path, _ = parse_container_path(spec)
        app.client.containers.get(name).files.delete(path, recursive=force)
        confirm("File", f"{name}{path}", "deleted")


@file.command("edit")
@click.argument("target", metavar="NAME/PATH")
@pass_app
def edit(app: AppContext, target: str) -> None:
    """Edit a file in a container with $VISUAL/$EDITOR (or its new content on stdin);
    its mode and owner stay."""
    name, path, _ = parse_container_path(target)
    files = app.client.containers.get(name).files
    try:
        st = files.stat(path)
        old = files.get(path)
    except NotFound:
        st, old = None, b""  # a new file, as lxc file edit makes one
    if not stdin_is_tty():
        new = sys.stdin.buffer.read()
    else:
        edited = click.edit(old.decode(errors="surrogateescape"), require_save=False,
                            extension=posixpath.splitext(path)[1] or ".txt")
        if edited is None:
            click.echo("No changes", err=True)
            return
        new = edited.encode(errors="surrogateescape")
    if st is not None and new == old:
        click.echo("No changes", err=True)
        return
    files.put(path, new, mode=stat.S_IMODE(st.mode) if st else 0o644,
              uid=st.uid if st else 0, gid=st.gid if st else 0)
    confirm("File", f"{name}{path}", "saved")
