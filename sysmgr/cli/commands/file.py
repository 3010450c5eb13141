"""``sysmgr file push`` / ``file pull``: copy files into and out of a container, with
``lxc file``'s path rules: ``c1/etc/hosts`` is ``/etc/hosts`` in ``c1``, and a target ending in
``/`` is a directory that receives the source's basename."""

from __future__ import annotations

import errno
import os
import posixpath
import sys
from typing import BinaryIO, Sequence

import click

from sysmgr.cli.commands._common import AppContext, pass_app
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


@click.group()
def file() -> None:
    """Copy files into and out of containers."""


@file.command("push")
@click.argument("sources", nargs=-1, required=True, metavar="LOCAL...")
@click.argument("target", metavar="NAME/PATH")
@click.option("--uid", type=int, help="Owner inside the container (default: the local file's).")
@click.option("--gid", type=int, help="Group inside the container (default: the local file's).")
@click.option("--mode", help="Octal mode (default: the local file's mode; 0644 for stdin).")
@click.option("-p", "--create-dirs", is_flag=True, help="Create missing parent directories.")
@pass_app
def push(app: AppContext, sources: tuple[str, ...], target: str, uid: int | None, gid: int | None,
         mode: str | None, create_dirs: bool) -> None:
    """Copy local files into a container ('-' reads stdin).

    \b
      sysmgr file push motd c1/etc/motd
      sysmgr file push a.conf b.conf c1/etc/app/
    """
    name, path, is_dir = parse_container_path(target)
    pairs = push_targets(sources, path, is_dir)
    want_mode = _parse_mode(mode)
    files = app.client.containers.get(name).files
    for src, dest in pairs:
        if src == STDIO:
            files.put(dest, sys.stdin.buffer, mode=0o644 if want_mode is None else want_mode,
                      uid=uid or 0, gid=gid or 0, mkdir=create_dirs)
            continue
        try:
            st = os.stat(src)
            if os.path.isdir(src):
                raise ValidationError(f"{src} is a directory: file push copies files",
                                      hint="push the files inside it, e.g. with a target ending in '/'")
            f: BinaryIO = open(src, "rb")
        except OSError as e:
            raise _local_error(src, e) from None
        with f:
            files.put(dest, f, mode=(st.st_mode & 0o7777) if want_mode is None else want_mode,
                      uid=st.st_uid if uid is None else uid, gid=st.st_gid if gid is None else gid,
                      mkdir=create_dirs)


@file.command("pull")
@click.argument("sources", nargs=-1, required=True, metavar="NAME/PATH...")
@click.argument("target", metavar="LOCAL")
@pass_app
def pull(app: AppContext, sources: tuple[str, ...], target: str) -> None:
    """Copy files out of a container ('-' writes to stdout).

    \b
      sysmgr file pull c1/etc/hosts ./hosts
      sysmgr file pull c1/etc/os-release -
    """
    for spec in sources:
        name, path, _ = parse_container_path(spec)
        files = app.client.containers.get(name).files
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
