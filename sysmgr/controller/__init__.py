"""The reconcile controller: one long-running ``sysmgr controller run`` per host root that
keeps the host matching its manifests (watched directories, a git working tree), on every
change and every interval, through the same Python API as the CLI (:mod:`.loop`). Its
sources (:mod:`.sources`), its lock, status and suspend flag (:mod:`.state`) and its
systemd unit (:mod:`.unit`) are small modules of their own.
"""
