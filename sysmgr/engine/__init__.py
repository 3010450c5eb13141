"""The engine: operations on one host root, imperative and declarative.

Floor plan, bottom up (each module imports only modules below it; no circles):

- ``host``: :class:`~sysmgr.engine.host.Host` holds the store, the lock and the drivers,
  nothing else; ``reverter`` undoes completed steps on failure.
- ``records`` (a record read once with its expansion, init record, status, cgroup path),
  ``runspec`` (expanded config -> the runtime's spec, host facts passed to the pure model),
  ``volumes`` (root disk sizes, full pools), ``idshift`` (the ids a container's files carry
  on disk; the shift where a filesystem cannot idmap), ``restoring`` and ``journal`` (intents
  that a killed sysmgr's next run resolves).
- networks: ``nicrules`` (pure nic checks), ``netplan`` (pure planning), ``networks``
  (networks on the host, nic records and allocation), ``nics`` (plugging nics in on the
  start path, views).
- containers: ``lifecycle`` (start/stop/freeze), ``containers`` (create, delete, definition,
  live keys), ``execution`` (exec, pty sessions, files), ``views``; ``pools``, ``profiles``,
  ``images``, ``snapshots``, ``copy``, ``backup`` over ``streams``; ``bootstrap`` (``init``).
- declarative: ``observed``/``observe`` -> ``planner`` (pure) -> ``actions`` (a Plan is data)
  -> ``apply`` (refuses a stale plan, reverts on failure); ``manifests`` ties them to files.

Every function takes the :class:`Host` it works on; the API's local backend is the only
caller from above.
"""
