"""Image operations: build from a builder, import a tarball or directory, alias, delete.

An image is recorded by the sha256 fingerprint of its source (the tarball's bytes, or a
canonical walk of a built tree) and unpacked once into a pool as a read-only template.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Mapping

from sysmgr._util import exposure, proc
from sysmgr._util.exposure import Warn
from sysmgr.drivers import registry
from sysmgr.drivers.images.base import ImageMetadata, Progress
from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import records
from sysmgr.engine.host import DEFAULT_POOL, Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import AlreadyExists, Conflict, DriverError, Issue, NotFound, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state.db import ImageRecord


def _unpack():
    from sysmgr.drivers.images import unpack  # yaml + tar handling: only when images change

    return unpack


def _check_alias(alias: str | None) -> None:
    if alias:
        reason = mnames.alias_problem(alias)
        if reason:
            raise ValidationError([Issue(f"invalid image alias {alias!r}: {reason}", path="alias")])


def _pool_for_images(host: Host, pool: str | None) -> str:
    if pool:
        host.store.pool(pool)
        return pool
    if host.store.has_pool(DEFAULT_POOL):
        return DEFAULT_POOL
    pools = host.store.pools()
    if not pools:
        raise NotFound("no storage pool exists", hint="run 'sysmgr init --auto'")
    return pools[0].name


def build(host: Host, builder: str, *, alias: str | None = None,
          options: Mapping[str, str] | None = None, pool: str | None = None,
          progress: Progress | None = None) -> ImageRecord:
    """Build an image with a named builder (``busybox``, ``debian``) and store it."""
    _check_alias(alias)
    cls = registry.load("image", builder)
    options = dict(options or {})
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        known = ", ".join(sorted(cls.options)) or "none"
        raise ValidationError([Issue(f"unknown option {k!r} for builder {builder} (known: {known})",
                                     path=f"build.{k}") for k in unknown])
    with host.locked():
        pool = _pool_for_images(host, pool)
        host.layout.ensure()
        stage = tempfile.mkdtemp(prefix="build-", dir=host.layout.tmp)
        try:
            rootfs = os.path.join(stage, "rootfs")
            os.mkdir(rootfs, 0o755)
            meta = cls().build(rootfs, options, progress)
            if progress:
                progress("computing fingerprint")
            # a builder's /dev nodes (mmdebstrap makes some) are hidden by the runtime's
            # own /dev at every start: the store keeps no device nodes at all
            dropped = exposure.drop_devices(rootfs)
            if dropped and progress:
                progress(f"dropped {len(dropped)} device node(s) the builder made")
            fp = _unpack().fingerprint_tree(rootfs)
            return _store(host, fp, meta, pool, alias, f"build:{builder}",
                          fill=lambda dest: _move_tree(rootfs, dest))
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def import_image(host: Host, path: str, *, alias: str | None = None, pool: str | None = None,
                 progress: Progress | None = None, allow_devices: bool = False,
                 warn: Warn | None = None, platform: str | None = None) -> ImageRecord:
    """Import an LXD/LXC unified tarball, a plain rootfs tarball, or a directory.

    Device nodes in the image are dropped (``warn`` gets one message naming them) unless
    ``allow_devices``: an image comes from someone else, a block device node in it would
    open the host's disk to whoever reaches it, and the runtime gives every container a
    ``/dev`` of its own, so an image needs none. With ``allow_devices`` they are kept and
    ``warn`` still names them. An image already known by its fingerprint is not unpacked
    again (it only gets the alias), whatever ``allow_devices`` says.
    """
    _check_alias(alias)
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise NotFound(f"image file {path} not found")
    from sysmgr.drivers.images import oci

    if oci.detect(path):
        return _import_oci(host, path, alias, pool, progress, warn, platform)
    if platform:
        raise ValidationError(f"--platform is for OCI images; {path} is not one")
    with host.locked():
        pool = _pool_for_images(host, pool)
        if progress:
            progress(f"fingerprinting {path}")
        fp = _unpack().fingerprint_tree(path) if os.path.isdir(path) else _unpack().fingerprint_file(path)
        meta_box: list[ImageMetadata] = []

        def fill(dest: str) -> None:
            if progress:
                progress(f"unpacking {os.path.basename(path)}")
            meta_box.append(_unpack().unpack(path, dest))
            _check_devices(dest, f"image {path}", allow_devices, warn)

        # a known image only gets the alias (and a volume on this pool if it lacks one)
        return _store(host, fp, None, pool, alias, f"file:{path}", fill=fill, meta_box=meta_box)


def _import_oci(host: Host, path: str, alias: str | None, pool: str | None,
                progress: Progress | None, warn: Warn | None, platform: str | None) -> ImageRecord:
    """An OCI layout, oci-archive or docker archive: fingerprinted by its manifest digest
    (checked, like the config, before anything is made), its layers applied in order."""
    from sysmgr.drivers.images import oci

    with host.locked(), oci.open_image(path, platform) as img:
        pool = _pool_for_images(host, pool)
        meta_box: list[ImageMetadata] = []

        def fill(dest: str) -> None:
            if progress:
                progress(f"applying {len(img.layers)} layer(s) of {img.platform}")
            refused = oci.unpack(img, dest)
            if refused and warn:
                warn(exposure.devices_warning(f"image {path}", refused, exposure.REFUSED))
            meta_box.append(oci.metadata(img, dest, _unpack().detect_halt_signal))

        return _store(host, img.fingerprint, None, pool, alias, f"oci:{path}", fill=fill,
                      meta_box=meta_box)


def _check_devices(tree: str, what: str, allow: bool, warn: Warn | None) -> None:
    """Drop the device nodes under ``tree`` unless ``allow``; tell ``warn`` either way."""
    found = exposure.find_devices(tree) if allow else exposure.drop_devices(tree)
    if found and warn:
        warn(exposure.devices_warning(what, found, exposure.KEPT if allow else exposure.DROPPED))


def _store(host: Host, fp: str, meta: ImageMetadata | None, pool: str, alias: str | None,
           source: str, *, fill, meta_box: list[ImageMetadata] | None = None) -> ImageRecord:
    st = host.store
    if st.has_image(fp) and host.pool_driver(pool).has_image(fp):
        if alias:
            with st.transaction():
                st.set_alias(alias, fp)
        return st.image(fp)
    drv = host.pool_driver(pool)
    with Reverter() as r:
        if not drv.has_image(fp):
            with drv.create_image(fp) as dest:
                fill(dest)
            r.add(lambda: drv.delete_image(fp), f"delete image volume {fp[:12]}")
        if meta is None:
            meta = meta_box[0] if meta_box else ImageMetadata()
        size = _tree_size(drv.image_path(fp))
        with st.transaction():
            st.add_image(ImageRecord(fp, meta.to_dict(), size, time.time(), source,
                                     [alias] if alias else []))
            st.add_image_volume(pool, fp)
        r.success()
    return st.image(fp)


def delete(host: Host, ref: str) -> None:
    """Delete an image (all aliases and pool volumes). Containers made from it keep their
    own root filesystems, so this never destroys container data."""
    with host.locked():
        img = host.store.image(ref)
        for pool in host.store.image_pools(img.fingerprint):
            host.pool_driver(pool).delete_image(img.fingerprint)
        with host.store.transaction():
            host.store.delete_image(img.fingerprint)


def set_alias(host: Host, alias: str, ref: str) -> None:
    _check_alias(alias)
    with host.locked():
        img = host.store.image(ref)
        with host.store.transaction():
            host.store.set_alias(alias, img.fingerprint)


def delete_alias(host: Host, alias: str) -> None:
    with host.locked():
        if alias not in {a for i in host.store.images() for a in i.aliases}:
            raise NotFound(f"image alias {alias!r} not found")
        with host.store.transaction():
            host.store.delete_alias(alias)


def rename_alias(host: Host, alias: str, new: str) -> None:
    """Give the image ``alias`` points at the alias ``new`` instead (one transaction)."""
    _check_alias(new)
    with host.locked():
        st = host.store
        owner = next((i for i in st.images() if alias in i.aliases), None)
        if owner is None:
            raise NotFound(f"image alias {alias!r} not found")
        if any(new in i.aliases for i in st.images()):
            raise AlreadyExists(f"image alias {new!r} already exists")
        with st.transaction():
            st.delete_alias(alias)
            st.set_alias(new, owner.fingerprint)


def set_properties(host: Host, ref: str, properties: Mapping[str, str]) -> ImageRecord:
    """Replace an image's properties (``os``, ``release``, ``description``...: what ``image
    edit`` changes); its tree and fingerprint stay."""
    with host.locked():
        img = host.store.image(ref)
        meta = dict(img.metadata)
        meta["properties"] = {str(k): str(v) for k, v in properties.items()}
        with host.store.transaction():
            host.store.set_image_metadata(img.fingerprint, meta)
        return host.store.image(img.fingerprint)


def _move_tree(src: str, dest: str) -> None:
    """Move the contents of ``src`` into the (empty) ``dest``; a rename when on the same
    filesystem, else a copy."""
    st = os.stat(src)
    os.chmod(dest, st.st_mode & 0o7777)
    for entry in os.listdir(src):
        s, d = os.path.join(src, entry), os.path.join(dest, entry)
        try:
            os.rename(s, d)
        except OSError:
            proc.run(["cp", "-a", "--reflink=auto", s, d])


def _tree_size(path: str) -> int:
    total = 0
    dev = os.lstat(path).st_dev
    for base, dirs, files in os.walk(path):
        for n in files + dirs:
            try:
                s = os.lstat(os.path.join(base, n))
            except OSError:
                continue
            if s.st_dev == dev:
                total += s.st_blocks * 512
    return total


def in_use(host: Host, fingerprint: str) -> list[str]:
    return host.store.containers_using_image(fingerprint)


# -- copies between cluster members ------------------------------------------------------------

def export(host: Host, ref: str, path: str, *, progress: Progress | None = None) -> str:
    """Write image ``ref`` as a unified tarball (its metadata and root filesystem) to
    ``path``, for another member to :func:`receive`. Returns the digest of the tree sent
    (:func:`~sysmgr.drivers.images.unpack.fingerprint_tree`), which the receiver checks."""
    img = host.store.image(ref)
    pools = host.store.image_pools(img.fingerprint)
    if not pools:
        raise NotFound(f"image {img.fingerprint[:12]} has no volume on any pool of this host")
    tree = host.pool_driver(pools[0]).image_path(img.fingerprint)
    if progress:
        progress(f"exporting image {img.fingerprint[:12]}")
    digest = _unpack().fingerprint_tree(tree)
    _unpack().write_unified_tarball(tree, ImageMetadata.from_dict(img.metadata), path,
                                    compression="zstd")
    return digest


def receive(host: Host, path: str, *, fingerprint: str, digest: str,
            aliases: tuple[str, ...] = (), origin: str = "", pool: str | None = None,
            progress: Progress | None = None) -> ImageRecord:
    """Store an image another member exported (:func:`export`) under the SAME fingerprint,
    so a container's image means one thing across the cluster. The unpacked tree must have
    the ``digest`` the sender computed, else nothing is kept (DriverError). Aliases this
    host does not use yet are set; one already pointing elsewhere is left alone."""
    for a in aliases:
        _check_alias(a)
    with host.locked():
        pool = _pool_for_images(host, pool)
        meta_box: list[ImageMetadata] = []

        def fill(dest: str) -> None:
            if progress:
                progress(f"unpacking image {fingerprint[:12]}")
            meta_box.append(_unpack().unpack(path, dest))
            got = _unpack().fingerprint_tree(dest)
            if got != digest:
                raise DriverError(f"image {fingerprint[:12]} arrived damaged: its files do not "
                                  f"match the sender's (digest {got[:12]}, expected {digest[:12]})")

        _store(host, fingerprint, None, pool, None, f"copy:{origin}" if origin else "copy",
               fill=fill, meta_box=meta_box)
        st = host.store
        taken = {a for i in st.images() for a in i.aliases}
        with st.transaction():
            for a in aliases:
                if a not in taken:
                    st.set_alias(a, fingerprint)
        return st.image(fingerprint)


__all__ = ["build", "import_image", "delete", "set_alias", "delete_alias", "in_use", "export",
           "receive"]


# -- publish ----------------------------------------------------------------------------------

PUBLISH_FORMATS = ("image", "oci", "oci-layout")


def publish(host: Host, ref: str, *, fmt: str = "image", output: str | None = None,
            alias: str | None = None, progress: Progress | None = None) -> tuple[str, ImageRecord | None]:
    """A container (stopped) or one of its snapshots (``NAME/SNAP``) as an image: in this
    host's store (``image``, LXD's publish), or for OCI tooling as an oci-archive file or a
    layout directory at ``output``. Returns (the manifest digest, the stored image or None)."""
    from sysmgr.drivers.images import oci_write
    from sysmgr.engine import idshift
    from sysmgr.state.snapshots import SnapshotStore

    if fmt not in PUBLISH_FORMATS:
        raise ValidationError(f"unknown format {fmt!r} (use {', '.join(PUBLISH_FORMATS)})")
    if fmt != "image" and not output:
        raise ValidationError(f"--format {fmt} writes a file: give --output PATH")
    _check_alias(alias)
    name, _, snap = ref.partition("/")
    with host.locked():
        rec = host.store.container(name)
        drv = host.pool_driver(rec.pool)
        if snap:
            volatile = SnapshotStore(host.store).get(name, snap).volatile
            tree = drv.snapshot_path(name, snap)
        else:
            if records.status(host, rec).state != STOPPED:
                raise Conflict(f"container {name!r} is running",
                               hint=f"stop it, or publish a snapshot: sysmgr snapshot create {name} s0 && "
                                    f"sysmgr image publish {name}/s0")
            volatile, tree = rec.volatile, drv.container_path(rec.name)
        cfg, _ = records.expanded(host, rec)
        meta = records.image_meta(host, rec)
        init = cfg.get("boot.init")
        image = dict(
            owner=lambda u, g: idshift.container_ids(volatile, u, g),
            init=tuple(mkeys.parse_init(init)) if init else (meta.get("init") or "/sbin/init",),
            stop_signal=str(meta.get("halt_signal") or "SIGPWR"),
            env={**records.image_environment(rec), **mkeys.env_from_config(cfg)},
            labels={"org.opencontainers.image.title": name,
                    "org.opencontainers.image.description": f"published from {ref}"},
            ref=alias or name)
        if progress:
            progress(f"writing the layer of {ref}")
        if fmt != "image":
            return oci_write.write(tree, str(output), archive=fmt == "oci", **image), None
        host.layout.ensure()
        stage = tempfile.mkdtemp(prefix="publish-", dir=host.layout.tmp)
        try:
            digest = oci_write.write_layout(tree, os.path.join(stage, "oci"), **image)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    try:  # the store's own import (it takes the lock): fingerprint = the manifest digest
        return digest, import_image(host, os.path.join(stage, "oci"), alias=alias,
                                    progress=progress)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
