"""The RPC server: it dispatches only to Backend methods (and hello), answers every request,
good or bad, and never dies on one; ``sysmgr _rpc`` serves it on stdin/stdout."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

import sysmgr

from sysmgr.api.local import LocalBackend
from sysmgr.errors import MemberUnreachable
from sysmgr.layout import Layout
from sysmgr.remote import protocol, server
from tests.conftest import REPO


def _serve(backend: LocalBackend, *lines: bytes) -> list[dict]:
    out = io.BytesIO()
    server.serve(backend, io.BytesIO(b"".join(lines)), out)
    return [json.loads(x) for x in out.getvalue().splitlines()]


def _req(rid: int, method: str, *args: object, **kwargs: object) -> bytes:
    return protocol.dumps(protocol.request(rid, method, list(args), kwargs))


def test_only_backend_methods_are_served(tmp_path) -> None:
    backend = LocalBackend(Layout(str(tmp_path / "root")))
    methods = server.backend_methods(backend)
    assert {"container_views", "init", "manifest_apply", "exec_capture"} <= methods
    assert not methods & {"close", "exec_interactive", "file_put", "file_pull", "__init__",
                          "_networks", "host", "layout"}
    replies = _serve(
        backend,
        _req(1, "hello"),
        _req(2, "initialised"),
        _req(3, "__class__"), _req(4, "_networks"), _req(5, "close"), _req(6, "host"),
        _req(7, "exec_interactive", "c1", ["sh"]), _req(8, "system", "rm -rf /"),
        b"this is not json\n", b"[1, 2]\n",
        protocol.dumps({"id": 9, "method": "initialised", "args": {"x": 1}}),
        protocol.dumps({"id": 10, "method": "profile_list", "kwargs": {"not-an-id": 1}}),
        _req(11, "container_view", "ghost"),
        _req(12, "initialised"))
    assert [r.get("id") for r in replies] == [1, 2, 3, 4, 5, 6, 7, 8, None, None, 9, 10, 11, 12]
    assert replies[0]["result"]["rpc"] == protocol.RPC_VERSION
    assert replies[1]["result"] is False and replies[-1]["result"] is False
    for r in replies[2:8]:
        assert "offers no method" in r["error"]["message"]
    for r in replies[8:12]:
        assert r["error"]["class"] == "SysmgrError" and "result" not in r
    # the call ran and failed as the engine fails: not initialised
    assert "not initialised" in replies[12]["error"]["message"]
    assert not os.path.exists(tmp_path / "root")  # nothing was created by any of it


def test_sysmgr_rpc_serves_on_stdin_and_stdout(tmp_path) -> None:
    root = str(tmp_path / "root")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "sysmgr", "--root", root, "_rpc"],
                          input=_req(1, "hello") + b"garbage\n" + _req(2, "initialised"),
                          capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r.get("id") for r in replies] == [1, None, 2]
    hello = protocol.parse_hello(replies[0]["result"])
    assert (hello.rpc, hello.root, hello.initialised, hello.containers) == \
        (protocol.RPC_VERSION, root, False, 0)
    assert replies[2]["result"] is False


def test_hidden_stream_refuses_another_rpc_version(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "sysmgr", "--root", str(tmp_path), "_stream",
                           "pull", '{"name": "c1", "path": "/etc/hostname"}', "--rpc", "999"],
                          capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    status = json.loads(proc.stdout.splitlines()[0])
    assert status["error"]["class"] == "RemoteRejected" and proc.returncode == 2


def test_paramiko_is_imported_only_when_a_member_is_reached() -> None:
    code = ("import sys, sysmgr.cli.main, sysmgr.api.remote, sysmgr.api.client\n"
            "print('paramiko' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert res.stdout.strip() == "False", res.stderr


def test_local_members_need_no_ssh(tmp_path) -> None:
    from sysmgr.api import remote
    from sysmgr.types import MemberSpec

    spec = MemberSpec("here", "local:", root=str(tmp_path / "root"))
    with pytest.raises(MemberUnreachable, match="not an initialised sysmgr root"):
        remote.hello(spec, admin_root=str(tmp_path / "admin"))  # a root moved away, or never made
    with sysmgr.Client(root=spec.root, runtime="fake") as c:
        c.init(storage_driver="dir")
    backend = remote.connect(spec, admin_root=str(tmp_path / "admin"))
    assert isinstance(backend, LocalBackend) and backend.root == spec.root
    backend.close()
    h = remote.hello(spec, admin_root=str(tmp_path / "admin"))
    assert (h.rpc, h.root, h.initialised, h.containers) == (protocol.RPC_VERSION, spec.root, True, 0)
    assert h.cpus >= 1 and h.memory_total >= h.memory_free > 0


def test_member_store_set_travels_as_a_call(tmp_path) -> None:
    """The admin host tells a member which cluster store it reports to with one Backend
    call (a plain map in, a word out); a root that is not initialised is refused."""
    root = tmp_path / "root"
    conf = {"kind": "etcd", "endpoints": ["10.0.0.1:2379"], "cluster_id": "c1",
            "member": "n2", "ttl": 10.0, "cacert": "/etc/sysmgr/ca.pem"}
    backend = LocalBackend(Layout(str(root)))
    try:
        replies = _serve(backend, _req(1, "member_store_set", conf))
        assert "not an initialised sysmgr root" in replies[0]["error"]["message"]
        assert not root.exists()
        root.mkdir()
        (root / "root.id").write_text("test\n")  # (what makes a root "initialised")
        replies = _serve(
            backend, _req(2, "member_store_set", conf),
            _req(3, "member_store_set", conf),
            _req(4, "member_store_set", None, only_cluster="etcd://10.0.0.9:2379#c1"),
            _req(5, "member_store_set", None, only_cluster="etcd://10.0.0.1:2379#c1"))
    finally:
        backend.close()
    assert [r["result"] for r in replies] == ["recorded", "unchanged", "unchanged", "cleared"]
    assert not (root / "cluster-member.json").exists()
