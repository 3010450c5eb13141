"""A small etcd v3 client over etcd's JSON gateway (HTTP/1.1, standard library only).

Why the gateway: Debian 12's ``etcd-server`` is 3.4, which serves the gateway at ``/v3/``;
the ``etcd3`` package breaks with protobuf >= 4 and ``aetcd`` pulls grpcio (large wheels and
an import time a CLI that must start fast cannot pay). The gateway speaks the same
operations as gRPC: ``kv/range|put|deleterange|txn``, ``lease/grant|keepalive|revoke``,
``watch`` (a streamed response of JSON objects). Keys and values travel base64-encoded;
64-bit numbers come back as strings.

Endpoints fail over: a connection error or an answer meaning "no leader / timed out" moves
on to the next member, so a 3-node cluster keeps working with one node down. When no
endpoint answers the operation raises :class:`~sysmgr.errors.StoreUnavailable` (exit 1).
One HTTP connection per endpoint per thread (``threading.local``): the lease keeper and
the watcher run in threads of their own.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from sysmgr.errors import StoreUnavailable, SysmgrError

#: seconds an endpoint has to answer one request (a member without quorum holds a
#: linearizable read until its own request timeout: this bounds it)
TIMEOUT = 3.0
#: gRPC codes meaning "this member cannot serve now": Unavailable, DeadlineExceeded
_RETRY_CODES = {14, 4}


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that selects every key starting with ``prefix`` (b64)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1  # our prefixes end in "/", never in 0xff
    return b64(bytes(raw))


@dataclass(frozen=True)
class KV:
    """One key as etcd returns it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def of(cls, d: dict[str, Any]) -> "KV":
        return cls(unb64(d.get("key")).decode(), unb64(d.get("value")),
                   int(d.get("create_revision", 0)), int(d.get("mod_revision", 0)),
                   int(d.get("lease", 0)))

    def json(self) -> Any:
        return json.loads(self.value) if self.value else None


@dataclass(frozen=True)
class TLS:
    """Client certificates for an etcd that wants them (paths; any may be None)."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cacert or self.cert)

    def context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.cacert)
            if self.cert:
                ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            raise SysmgrError(f"cannot load the etcd TLS files: {e}",
                              hint="check --cacert, --cert and --key") from e
        return ctx


class _Retry(Exception):
    """This endpoint cannot answer now: try the next one."""


class EtcdClient:
    """The operations sysmgr needs, on a list of endpoints (``host:port``)."""

    def __init__(self, endpoints: Sequence[str], tls: TLS | None = None,
                 timeout: float = TIMEOUT) -> None:
        if not endpoints:
            raise SysmgrError("an etcd store needs at least one endpoint (host:port)")
        self.endpoints = list(endpoints)
        self.tls = tls or TLS()
        self.timeout = timeout
        self._ctx = self.tls.context() if self.tls.enabled else None
        self._local = threading.local()
        self._first = 0  # the endpoint that answered last: asked first next time

    # -- transport --------------------------------------------------------------------------
    def _connect(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        host, _, port = endpoint.rpartition(":")
        if self._ctx is not None:
            return http.client.HTTPSConnection(host, int(port), timeout=timeout,
                                               context=self._ctx)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    def _conn(self, endpoint: str) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        if endpoint not in conns:
            conns[endpoint] = self._connect(endpoint, self.timeout)
        return conns[endpoint]

    def _drop(self, endpoint: str) -> None:
        conn = getattr(self._local, "conns", {}).pop(endpoint, None)
        if conn is not None:
            conn.close()

    def _post_one(self, endpoint: str, path: str, body: bytes) -> Any:
        conn = self._conn(endpoint)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop(endpoint)
            raise _Retry(f"{endpoint}: {e or type(e).__name__}") from e
        try:
            answer = json.loads(data) if data else {}
        except ValueError as e:
            raise _Retry(f"{endpoint}: not a JSON answer ({resp.status})") from e
        if resp.status >= 400 or "error" in answer:
            msg = answer.get("message") or answer.get("error") or f"HTTP {resp.status}"
            if resp.status >= 500 or answer.get("code") in _RETRY_CODES:
                raise _Retry(f"{endpoint}: {msg}")
            raise SysmgrError(f"etcd refused {path}: {msg}")
        return answer

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        """POST ``payload`` to the first endpoint that can answer (failover)."""
        body = json.dumps(payload).encode()
        reasons = []
        n = len(self.endpoints)
        for i in range(n):
            idx = (self._first + i) % n
            try:
                answer = self._post_one(self.endpoints[idx], path, body)
            except _Retry as e:
                reasons.append(str(e))
                continue
            self._first = idx
            return answer
        raise StoreUnavailable(
            "the cluster store does not answer (etcd: " + "; ".join(reasons) + ")",
            hint="placement, moves and prunes wait for the store's quorum; read-only "
                 "commands answer from the members (marked stale)")

    def close(self) -> None:
        for endpoint in list(getattr(self._local, "conns", {})):
            self._drop(endpoint)

    # -- kv -----------------------------------------------------------------------------------
    def get(self, key: str) -> KV | None:
        kvs = self.post("/v3/kv/range", {"key": b64(key)}).get("kvs") or []
        return KV.of(kvs[0]) if kvs else None

    def range(self, prefix: str, *, keys_only: bool = False,
              min_mod_revision: int = 0) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (sorted by key; ``keys_only``: without the values;
        only those changed at ``min_mod_revision`` or later) and the store's revision."""
        body = key_range(prefix, prefix=True)
        if keys_only:
            body["keys_only"] = True
        if min_mod_revision:
            body["min_mod_revision"] = min_mod_revision
        answer = self.post("/v3/kv/range", body)
        revision = int(answer.get("header", {}).get("revision", 0))
        return [KV.of(d) for d in answer.get("kvs") or []], revision

    def put(self, key: str, value: Any, lease: int = 0) -> None:
        self.post("/v3/kv/put", put_op(key, value, lease)["request_put"])

    def delete(self, key: str, *, prefix: bool = False) -> int:
        body = delete_op(key, prefix=prefix)["request_delete_range"]
        return int(self.post("/v3/kv/deleterange", body).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, list[Any]]:
        """All of ``success`` if every comparison holds, else ``failure``, atomically."""
        answer = self.post("/v3/kv/txn", {"compare": compare, "success": success,
                                          "failure": failure or []})
        return bool(answer.get("succeeded")), answer.get("responses") or []

    # -- leases -------------------------------------------------------------------------------
    def grant(self, ttl: float) -> int:
        answer = self.post("/v3/lease/grant", {"TTL": max(1, int(round(ttl)))})
        return int(answer["ID"])

    def keepalive(self, lease: int) -> bool:
        """Renew ``lease``; False when it had expired already."""
        answer = self.post("/v3/lease/keepalive", {"ID": lease})
        return int((answer.get("result") or {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        try:
            self.post("/v3/lease/revoke", {"ID": lease})
        except SysmgrError as e:
            if "not found" not in e.message:
                raise  # an expired lease is as good as revoked

    def status(self) -> dict[str, Any]:
        """The answering member's status (its leader, raft term) - a quorum probe is a
        linearizable read, see :meth:`get`."""
        return self.post("/v3/maintenance/status", {})

    # -- watch --------------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int, stop: threading.Event,
              poll: float = 0.5) -> Iterator[tuple[str, KV]]:
        """``(type, kv)`` for every change under ``prefix`` from ``start_revision`` until
        ``stop`` is set (``type``: PUT or DELETE). Reconnects (next endpoint) on errors."""
        revision = start_revision
        while not stop.is_set():
            for endpoint in self.endpoints:
                try:
                    for kind, kv in self._watch_one(endpoint, prefix, revision, stop, poll):
                        revision = kv.mod_revision + 1
                        yield kind, kv
                except (OSError, http.client.HTTPException, ValueError):
                    continue
                if stop.is_set():
                    return
            stop.wait(poll)

    def _watch_one(self, endpoint: str, prefix: str, revision: int, stop: threading.Event,
                   poll: float) -> Iterator[tuple[str, KV]]:
        conn = self._connect(endpoint, poll)
        try:
            body = {"create_request": {"key": b64(prefix), "range_end": prefix_end(prefix),
                                       "start_revision": revision}}
            conn.request("POST", "/v3/watch", json.dumps(body).encode(),
                         {"Content-Type": "application/json"})
            conn.sock.settimeout(max(self.timeout, 5.0))
            resp = conn.getresponse()
            conn.sock.settimeout(poll)  # wake up to look at ``stop``
            decoder, buf = json.JSONDecoder(), ""
            while not stop.is_set():
                try:
                    chunk = resp.read1(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                buf += chunk.decode()
                while buf.strip():
                    try:
                        obj, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break  # half an object: wait for the rest
                    buf = buf.lstrip()[end:]
                    for ev in (obj.get("result") or {}).get("events") or []:
                        yield ev.get("type", "PUT"), KV.of(ev.get("kv") or {})
        finally:
            conn.close()


def put_op(key: str, value: Any, lease: int = 0) -> dict[str, Any]:
    """A txn operation putting ``value`` (JSON-encoded unless bytes) at ``key``."""
    raw = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode()
    body: dict[str, Any] = {"key": b64(key), "value": b64(raw)}
    if lease:
        body["lease"] = lease
    return {"request_put": body}


def key_range(key: str, prefix: bool = False) -> dict[str, Any]:
    """``key`` alone, or (``prefix``) every key under it, as etcd's requests name them."""
    body = {"key": b64(key)}
    if prefix:
        body["range_end"] = prefix_end(key)
    return body


def delete_op(key: str, *, prefix: bool = False) -> dict[str, Any]:
    """A txn operation deleting ``key`` (``prefix``: every key under it)."""
    return {"request_delete_range": key_range(key, prefix)}


def range_op(key: str, *, prefix: bool = False) -> dict[str, Any]:
    """A txn operation reading ``key`` (``prefix``: every key under it)."""
    return {"request_range": key_range(key, prefix)}


def compare(key: str, target: str, value: Any, result: str = "EQUAL") -> dict[str, Any]:
    """A txn comparison: ``target`` is VERSION, CREATE, MOD, VALUE or LEASE."""
    field = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
             "VALUE": "value", "LEASE": "lease"}[target]
    if target == "VALUE":
        value = b64(value if isinstance(value, bytes) else
                    json.dumps(value, sort_keys=True).encode())
    return {"key": b64(key), "target": target, "result": result, field: value}
