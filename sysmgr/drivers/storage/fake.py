"""The ``fake`` storage driver, for fast engine/API/CLI unit tests.

Volumes are real (tiny) directories under the pool path so callers that look at the rootfs
path still work, but nothing is copied: a container volume is an empty root filesystem with a
placeholder ``/sbin/init``. It uses no kernel feature and no subprocess. The truth is the
directory tree, so two ``FakePool`` objects for the same pool agree (the engine builds a driver
object per call).

Config key ``fail`` (comma-separated operation names such as ``create_container``) makes those
operations raise :class:`DriverError`, to test the engine's revert paths.

Layer: drivers (storage).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import ClassVar, Iterator, Mapping

from sysmgr._util.safefs import rename_noreplace
from sysmgr.drivers.storage.base import (
    CONTAINER_TOPS,
    CUSTOM_TOPS,
    PoolUsage,
    StorageInfo,
    StoragePool,
    check_name,
    pool_dir,
    temp_name,
)
from sysmgr.errors import AlreadyExists, DriverError, NotFound

FAKE_TOTAL_BYTES = 10 * 1024**3
_INIT = b"#!/bin/sh\n# placeholder init of a fake-pool volume\nexec sleep infinity\n"


class FakePool(StoragePool):
    """Cheap directories, no copies, optional injected failures."""

    name: ClassVar[str] = "fake"
    info: ClassVar[StorageInfo] = StorageInfo()
    # source: as for dir; fail: see the module docstring. The fake driver has no table in the
    # model (test-only), so this guard is its only config check
    config_keys: ClassVar[frozenset[str]] = frozenset({"source", "fail"})

    def __init__(self, pool: str, config: Mapping[str, str], default_path: str) -> None:
        super().__init__(pool, config, default_path)
        self.path = pool_dir(pool, self.config, default_path)
        self._fail = {s.strip() for s in self.config.get("fail", "").split(",") if s.strip()}

    def _maybe_fail(self, op: str) -> None:
        if op in self._fail:
            raise DriverError(f"fake storage pool {self.pool}: injected failure in {op}")

    @property
    def _images(self) -> str:
        return os.path.join(self.path, "images")

    @property
    def _containers(self) -> str:
        return os.path.join(self.path, self.tops[0])

    def _require(self) -> None:
        if not os.path.isdir(self._containers):
            raise NotFound(f"storage pool {self.pool} does not exist at {self.path}")

    # -- pool ----------------------------------------------------------------------------
    def create(self) -> None:
        self._maybe_fail("create")
        os.makedirs(self._images, exist_ok=True)
        for top in (CONTAINER_TOPS[0], CUSTOM_TOPS[0]):
            os.makedirs(os.path.join(self.path, top), exist_ok=True)

    def mount(self) -> None:
        self._maybe_fail("mount")
        self._require()
        os.makedirs(os.path.join(self.path, CUSTOM_TOPS[0]), exist_ok=True)

    def delete(self) -> None:
        self._maybe_fail("delete")
        self._refuse_if_in_use()
        shutil.rmtree(self.path, ignore_errors=True)

    def usage(self) -> PoolUsage:
        self._require()
        used = 0
        for dirpath, _dirs, files in os.walk(self.path):
            for f in files:
                with contextlib.suppress(OSError):
                    used += os.lstat(os.path.join(dirpath, f)).st_size
        return PoolUsage(used_bytes=used, total_bytes=FAKE_TOTAL_BYTES)

    # -- images --------------------------------------------------------------------------
    def image_path(self, fingerprint: str) -> str:
        return os.path.join(self._images, check_name("image fingerprint", fingerprint))

    def list_images(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._images) if not n.startswith("."))
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def create_image(self, fingerprint: str) -> Iterator[str]:
        final = self.image_path(fingerprint)
        self._require()
        self._maybe_fail("create_image")
        if os.path.exists(final):
            raise AlreadyExists(f"image {fingerprint} already exists in storage pool {self.pool}")
        staging = temp_name(self.path, ".staging-", fingerprint)
        os.mkdir(staging, 0o755)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            rename_noreplace(staging, final)
        except FileExistsError:  # made concurrently; same fingerprint, same content
            shutil.rmtree(staging, ignore_errors=True)

    def delete_image(self, fingerprint: str) -> None:
        self._maybe_fail("delete_image")
        shutil.rmtree(self.image_path(fingerprint), ignore_errors=True)

    # -- containers ----------------------------------------------------------------------
    def _cdir(self, name: str) -> str:
        return os.path.join(self._containers, check_name("container name", name))

    def container_path(self, name: str) -> str:
        return os.path.join(self._cdir(name), "rootfs")

    def list_containers(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._containers) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def create_container(self, name: str, fingerprint: str) -> str:
        cdir = self._cdir(name)
        self._require()
        if not self.has_image(fingerprint):
            raise NotFound(f"image {fingerprint} not found in storage pool {self.pool}")
        if os.path.exists(cdir):
            raise self._volume_exists(name)
        self._maybe_fail("create_container")
        rootfs = os.path.join(cdir, "rootfs")
        try:
            os.makedirs(os.path.join(rootfs, "sbin"))
            init = os.path.join(rootfs, "sbin", "init")
            with open(init, "wb") as f:
                f.write(_INIT)
            os.chmod(init, 0o755)
        except BaseException:
            shutil.rmtree(cdir, ignore_errors=True)
            raise
        return rootfs

    def delete_container(self, name: str) -> None:
        self._maybe_fail("delete_container")
        shutil.rmtree(self._cdir(name), ignore_errors=True)

    def rename_container(self, old: str, new: str) -> str:
        self._maybe_fail("rename_container")
        src, dst = self._cdir(old), self._cdir(new)
        if not os.path.isdir(src):
            raise self._no_volume(old)
        try:
            rename_noreplace(src, dst)
        except FileExistsError as e:
            raise self._volume_exists(new) from e
        return os.path.join(dst, "rootfs")

    def container_usage(self, name: str) -> int | None:
        cdir = self._cdir(name)
        if not os.path.isdir(cdir):
            raise self._no_volume(name)
        total = 0
        for dirpath, _dirs, files in os.walk(cdir):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_size
        return total
