"""The ``btrfs`` storage driver: subvolumes, snapshots, qgroup quotas, send/receive.

Images are read-only subvolumes; a container volume is a writable snapshot of its image, so
creating one takes constant time whatever the image's size. Snapshots, restores and copies
are snapshots too. Quotas are qgroup limits on the referenced bytes of a container's
subvolume; streams are ``btrfs send`` / ``btrfs receive`` (full, or incremental from a
snapshot both pools hold).

Two ways to get a pool, as LXD does:

* ``source: /some/btrfs/dir`` — an existing directory on a btrfs filesystem (checked with
  ``statfs``: a non-btrfs path is rejected before anything changes); it must be empty or a
  sysmgr pool already.
* ``size: 10GiB`` (or no config at all) — a sparse loop file ``<dir>/pool.img`` that sysmgr
  creates (``truncate`` + ``mkfs.btrfs``) and loop-mounts at ``<dir>/mnt``, where ``<dir>`` is
  ``source`` when given with ``size``, else the pool's default directory under the sysmgr
  root. ``mount()`` re-mounts it after a host restart; ``delete()`` unmounts it, detaches the
  loop device and removes the file. Without ``size`` the file gets LXD's automatic size: 20%
  of the free space, at least 5 GiB and at most 30 GiB (it is sparse: nothing is used yet).

Layout inside the pool root (the ``source`` directory or the loop mount)::

    .sysmgr-pool              marker: this is a sysmgr pool
    images/<fingerprint>      read-only subvolume: an image's root filesystem
    containers/<name>         writable subvolume: the container's root filesystem itself
    snapshots/<name>/<snap>   read-only subvolume: a snapshot of containers/<name>
    .staging-<tag>-<pid>-<r>  a subvolume (or receive directory) being made

Modules by role: :mod:`.pool` (the :class:`BtrfsPool` driver class: layout and lifecycle),
:mod:`.volumes` (subvolume create/snapshot/delete, ``btrfs send``/``receive``), :mod:`.loop`
(the loop file: mkfs, mount, loop device release), :mod:`.qgroups` (quota ioctls and usage
counters), :mod:`.host` (the ``btrfsutil`` binding, btrfs-progs, the ``statfs`` check).
Subvolume operations go through the ``btrfsutil`` binding (imported lazily: importing this
package needs nothing); quotas through the ``BTRFS_IOC_QGROUP_LIMIT`` ioctl and sysfs;
``btrfs`` and ``mkfs.btrfs`` through :mod:`sysmgr._util.proc`. The registry loads
``sysmgr.drivers.storage.btrfs:BtrfsPool``, re-exported here.

Layer: drivers (storage). Errors: :class:`ValidationError` (bad config or names, non-btrfs
source), :class:`NotFound`, :class:`AlreadyExists`, :class:`Conflict`, :class:`DriverError`,
:class:`DriverUnavailable` (btrfs-progs or the btrfsutil binding missing).
"""

from sysmgr.drivers.storage.btrfs.host import BTRFS_SUPER_MAGIC, fs_type
from sysmgr.drivers.storage.btrfs.loop import MIN_LOOP_SIZE
from sysmgr.drivers.storage.btrfs.pool import BtrfsPool

__all__ = ["BTRFS_SUPER_MAGIC", "MIN_LOOP_SIZE", "BtrfsPool", "fs_type"]
