"""Reaching cluster members over SSH (layer: below the API, above the engine).

The transport (paramiko, imported lazily), the versioned JSON-lines RPC both ends speak, and
the codec for the API's plain records. The admin side's door is
:class:`sysmgr.api.remote.RemoteBackend`; the member side is ``sysmgr _rpc``.
"""
