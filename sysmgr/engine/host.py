"""``Host``: the store, the lock and the drivers of one host root.

The bottom of the engine: every engine module takes a :class:`Host` and works through it, and
this module imports no other engine module. It holds nothing but the handles (the state store,
the root's change lock, the runtime, storage and network drivers, loaded lazily and cached);
the operations on containers, pools, profiles and networks live in modules of their own
(:mod:`~sysmgr.engine.containers`, :mod:`~sysmgr.engine.lifecycle`, :mod:`~sysmgr.engine.pools`,
...).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable, Iterator

from sysmgr.drivers import registry
from sysmgr.errors import SysmgrError
from sysmgr.layout import Layout
from sysmgr.state import locks
from sysmgr.state.db import PoolRecord, Store

if TYPE_CHECKING:  # pragma: no cover - annotations only: these modules cost the CLI's hot verbs
    from sysmgr.drivers.network.base import NetworkDriver
    from sysmgr.drivers.runtime.base import InitRecord, Runtime
    from sysmgr.drivers.storage.base import StoragePool

DEFAULT_POOL = "default"
DEFAULT_PROFILE = "default"
DEFAULT_STOP_TIMEOUT = 30.0


class Host:
    """One host root: state, lock and drivers."""

    def __init__(self, layout: Layout, *, runtime: str | None = None) -> None:
        self.layout = layout
        self._runtime_name = runtime
        self._store: Store | None = None
        self._runtime: Runtime | None = None
        self._engines: dict[str, Runtime] = {}
        self._pools: dict[str, StoragePool] = {}
        self._network: "NetworkDriver | None" = None
        self._lock_depth = 0
        self._lock_cm: contextlib.AbstractContextManager[None] | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            if not self.layout.exists():
                raise SysmgrError(
                    f"host root {self.layout.root} is not initialised",
                    hint="run 'sysmgr init --auto' (or pass --root / set SYSMGR_ROOT)")
            self._store = Store(self.layout.db)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- drivers ---------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            name = self._runtime_name or self.store.get_meta("runtime", "native") or "native"
            self._runtime = self.engine(name)
        return self._runtime

    def runtime_for(self, init: InitRecord | None) -> Runtime:
        """The runtime that started ``init`` (a running container keeps the engine it was
        started with, whatever its ``runtime.engine`` says since); the default without one."""
        return self.engine(init.engine) if init is not None and init.engine else self.runtime

    def engine(self, name: str) -> Runtime:
        """The runtime driver ``name`` (``runtime.engine``: native, crun, runc), for this root."""
        rt = self._engines.get(name)
        if rt is None:
            cls = registry.load("runtime", name)
            rt = self._engines[name] = cls.for_root(os.path.join(self.layout.root, "runtimes", name))
        return rt

    def pool_driver(self, name: str) -> StoragePool:
        drv = self._pools.get(name)
        if drv is None:
            drv = self.make_pool_driver(self.store.pool(name))
            if drv.needs_mount():
                # after a reboot, or in a fresh mount namespace: any command that needs the
                # pool mounts it (``init`` mounts them all)
                drv.mount()
            self._pools[name] = drv
        return drv

    def make_pool_driver(self, rec: PoolRecord) -> StoragePool:
        """A driver for a pool that may not be recorded yet (``create_pool``)."""
        cls = registry.load("storage", rec.driver)
        return cls(rec.name, rec.config, os.path.join(self.layout.pools, rec.name))

    def remember_pool_driver(self, name: str, drv: StoragePool | None) -> None:
        """Cache (or, with None, forget) the driver of pool ``name``."""
        if drv is None:
            self._pools.pop(name, None)
        else:
            self._pools[name] = drv

    def network_driver_name(self) -> str:
        name = self.store.get_meta("network.driver")
        if name:
            return name
        # inits without a network namespace (the fake runtime's) have nowhere to plug a veth
        return "bridge" if self.runtime.info.network_namespaces else "fake"

    @property
    def network_driver(self) -> "NetworkDriver":
        if self._network is None:
            cls = registry.load("network", self.network_driver_name())
            self._network = cls(self.layout.root_id, self.layout.networks)
        return self._network

    # -- the lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """The root's change lock; re-entrant within this Host. ``on_wait``: told who holds
        it (``pid N (command)``) before waiting for it."""
        if self._lock_depth == 0:
            self._lock_cm = locks.exclusive(self.layout.lock, on_wait=on_wait)
            self._lock_cm.__enter__()
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_cm is not None:
                self._lock_cm.__exit__(None, None, None)
                self._lock_cm = None
