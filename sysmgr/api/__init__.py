"""The Python API: ``Client`` and its managers (pylxd's shape). The CLI's only door.

Every manager and object (``containers``, ``images``, ``profiles``, ``networks``,
``storage_pools``, ``manifests``, ``container.snapshots``; one module per kind on the
``base`` Manager/Model classes) reaches a host only through a
:class:`~sysmgr.api.backend.Backend`: ``LocalBackend`` calls the engine of this host; a remote
backend sends the same calls to a cluster member. Nothing here imports the state, the drivers
or the model (import-linter checks it).
"""
