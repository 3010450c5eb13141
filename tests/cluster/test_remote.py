"""The SSH transport, the RPC and RemoteBackend against real test hosts (network namespaces
with their own sshd and sysmgr root, :mod:`tests.cluster.hosts`)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest

from sysmgr.api import remote
from sysmgr.api.remote import RemoteBackend
from sysmgr.engine.events import Event
from sysmgr.errors import (HostKeyRejected, MemberUnreachable, NotFound, RemoteRejected,
                           ValidationError)
from tests.cluster.hosts import keygen, write_script

FAKE_OLD_SYSMGR = """\
#!{python}
# a member whose sysmgr speaks another RPC version: it answers hello, then waits
import json, sys
if "_rpc" in sys.argv:
    req = json.loads(sys.stdin.readline())
    print(json.dumps({{"id": req["id"], "result": {{"rpc": 999, "version": "9.9.9", "root": "/",
          "hostname": "old", "initialised": True, "facts": {{}}, "containers": 0}}}}), flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def member(test_cluster):
    """One member with the busybox image, and a connected RemoteBackend to it (opened from
    the admin side); the backend is closed afterwards."""
    cluster = test_cluster(1)
    m = cluster.members[0]
    with cluster.admin():
        backend = remote.connect(m.spec(), admin_root=cluster.admin_root)
    assert isinstance(backend, RemoteBackend)
    lines: list[str] = []
    backend.image_build("busybox", alias="busybox", options=None, pool=None,
                        progress=lines.append)
    assert lines, "the build's progress came back as notifications"
    yield cluster, m, backend
    backend.close()


def test_hello_over_ssh(test_cluster):
    cluster = test_cluster(2)
    with cluster.admin():
        hellos = [remote.hello(m.spec(), admin_root=cluster.admin_root) for m in cluster.members]
    assert [h.root for h in hellos] == [m.root for m in cluster.members]
    for h in hellos:
        assert (h.rpc, h.initialised, h.containers) == (remote.RPC_VERSION, True, 0)
        assert h.cpus >= 1 and 0 < h.memory_free <= h.memory_total


def test_container_life_on_a_member(member, tmp_path):
    cluster, m, b = member
    b.container_create("c1", "busybox", profiles=None, config={"limits.memory": "64MiB"},
                       devices=None, pool=None, description="remote", start=True)
    views = b.container_views()
    assert [(v.name, v.status.state) for v in views] == [("c1", "RUNNING")]
    assert views[0].record.config["limits.memory"] == "64MiB" and views[0].status.pid > 0
    # the container runs on the member's root, seen from the member's own sysmgr
    local = subprocess.run(m.ns.argv(m.sysmgr, "--root", m.root, "list", "--format", "csv"),
                           capture_output=True, text=True)
    assert "c1" in local.stdout
    code, out, err = b.exec_capture("c1", ["sh", "-c", "hostname; cat; echo oops >&2; exit 3"],
                                    env=None, cwd=None, stdin=b"in\n")
    assert (code, out, err) == (3, b"c1\nin\n", b"oops\n")
    # files travel on streams of their own
    b.file_put("c1", "/tmp/blob", io.BytesIO(os.urandom(3 << 20)), mode=0o600, uid=5, gid=6,
               mkdir=False)
    st = b.file_stat("c1", "/tmp/blob")
    assert (st.size, st.mode & 0o777, st.uid, st.gid) == (3 << 20, 0o600, 5, 6)
    data = os.urandom(100_000)
    b.file_put("c1", "/srv/x/data", io.BytesIO(data), mode=0o644, uid=0, gid=0, mkdir=True)
    sink = io.BytesIO()
    b.file_pull("c1", "/srv/x/data", sink)
    assert sink.getvalue() == data == b.file_get("c1", "/srv/x/data")
    assert b.container_stop("c1", timeout=10, force=False) in (True, False)
    b.container_delete("c1", force=False)
    assert b.container_views() == [] and not b.container_exists("c1")


def test_exec_interactive_passes_stdin_output_and_exit_code(member, tmp_path):
    cluster, m, b = member
    b.container_create("c1", "busybox", profiles=None, config=None, devices=None, pool=None,
                       description="", start=True)
    stdin = tmp_path / "stdin"
    stdin.write_bytes(b"line one\nline two\n")
    out, err = tmp_path / "out", tmp_path / "err"
    with open(stdin, "rb") as i, open(out, "wb") as o, open(err, "wb") as e:
        code = b.exec_interactive("c1", ["sh", "-c", "wc -l; echo to-stderr >&2; exit 42"],
                                  env={"X": "1"}, cwd="/tmp", tty=False, stdin=i.fileno(),
                                  stdout=o.fileno(), stderr=e.fileno())
    assert (code, out.read_bytes(), err.read_bytes()) == (42, b"2\n", b"to-stderr\n")
    # with a tty: the command runs on a pty, piped input ends with ^D, exit code passes
    with open(stdin, "rb") as i, open(out, "wb") as o, open(err, "wb") as e:
        code = b.exec_interactive("c1", ["sh", "-c", "tty; read a; echo got:$a; exit 5"],
                                  env=None, cwd=None, tty=True, stdin=i.fileno(),
                                  stdout=o.fileno(), stderr=e.fileno())
    text = out.read_bytes().decode()
    assert code == 5 and "/dev/pts/" in text and "got:line one" in text
    # a stopped container: the engine's own error, raised on the admin side
    b.container_stop("c1", timeout=10, force=True)
    with open(stdin, "rb") as i, pytest.raises(Exception) as exc:
        b.exec_interactive("c1", ["true"], env=None, cwd=None, tty=False, stdin=i.fileno(),
                           stdout=1, stderr=2)
    assert "not running" in str(exc.value)


def test_errors_keep_their_class_and_exit_code(member):
    cluster, m, b = member
    with pytest.raises(NotFound) as exc:
        b.container_view("ghost")
    assert exc.value.exit_code == 2 and "ghost" in exc.value.message
    with pytest.raises(NotFound):
        b.file_get("ghost", "/etc/hostname")
    with pytest.raises(ValidationError) as verr:
        b.container_create("c1", "busybox", profiles=None, config={"limits.memroy": "1GB"},
                           devices=None, pool=None, description="", start=False)
    assert any("limits.memroy" in str(i) for i in verr.value.issues)
    # the session survives errors
    assert b.profile_exists("default")


def test_manifests_travel_with_the_call(member, tmp_path):
    cluster, m, b = member
    good = tmp_path / "web.yaml"
    good.write_text("kind: Profile\nname: web\nconfig:\n  limits.memory: 128MiB\n")
    plan = b.manifest_plan([str(good)])
    assert [a.describe() for a in plan.actions] == ["create Profile web"]
    result = b.manifest_apply(plan, progress=None)
    assert result.done == ["create Profile web"]
    assert b.profile_get("web").config == {"limits.memory": "128MiB"}
    assert b.manifest_plan([str(good)]).empty
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Container\nname: c9\nimage: busybox\nconfig:\n  limits.memroy: 1GB\n")
    with pytest.raises(ValidationError) as exc:
        b.manifest_validate([str(bad)])
    assert any(i.file == str(bad) and i.line for i in exc.value.issues), exc.value.issues


def test_export_and_import_stream_through_the_admin(member, tmp_path):
    cluster, m, b = member
    b.container_create("c1", "busybox", profiles=None, config=None, devices=None, pool=None,
                       description="", start=False)
    said: list[str] = []
    backup = tmp_path / "c1.tar.zst"
    result = b.container_export("c1", str(backup), optimized=False, progress=said.append)
    assert result.path == str(backup) and backup.stat().st_size == result.size > 0
    name = b.container_import(str(backup), name="c2", pool=None, progress=said.append)
    assert name == "c2" and b.container_exists("c2") and said
    with pytest.raises(NotFound):
        b.container_import(str(tmp_path / "missing.tar.zst"), name=None, pool=None, progress=None)


def test_unknown_host_key_is_refused_with_its_fingerprint(test_cluster):
    cluster = test_cluster(1, trust=False, init=False)
    m = cluster.members[0]
    with cluster.admin(), pytest.raises(HostKeyRejected) as exc:
        remote.connect(m.spec(), admin_root=cluster.admin_root)
    assert exc.value.exit_code == 2 and exc.value.fingerprint == m.host_key
    assert m.host_key in exc.value.message
    # cluster add's path: fetch the key, accept it by fingerprint, then connect works
    with cluster.admin():
        assert remote.fetch_host_key(m.url).fingerprint == m.host_key
        with pytest.raises(HostKeyRejected):
            remote.accept_host_key(cluster.admin_root, m.url, "SHA256:not-this-one")
        remote.accept_host_key(cluster.admin_root, m.url, m.host_key)
        remote.connect(m.spec(), admin_root=cluster.admin_root).close()
        # a recorded fingerprint that does not match is refused too
        with pytest.raises(HostKeyRejected):
            remote.connect(m.spec(host_key="SHA256:recorded-another"),
                           admin_root=cluster.admin_root)
        remote.forget_host_key(cluster.admin_root, m.url)
        with pytest.raises(HostKeyRejected):
            remote.connect(m.spec(), admin_root=cluster.admin_root)


def test_wrong_key_and_bad_key_file_are_refused(test_cluster, tmp_path):
    cluster = test_cluster(1, init=False)
    m = cluster.members[0]
    other = str(tmp_path / "other_key")
    keygen(other, "not-authorized")
    junk = tmp_path / "junk_key"
    junk.write_text("not a key\n")
    with cluster.admin():
        with pytest.raises(RemoteRejected) as exc:
            remote.connect(m.spec(key=other), admin_root=cluster.admin_root)
        assert exc.value.exit_code == 2 and "authentication failed" in exc.value.message
        with pytest.raises(RemoteRejected) as exc:
            remote.connect(m.spec(url=f"ssh://nobody@{m.address}"), admin_root=cluster.admin_root)
        assert "nobody@" in exc.value.message
        for bad in (str(junk), str(tmp_path / "missing")):
            with pytest.raises(RemoteRejected) as exc:
                remote.connect(m.spec(key=bad), admin_root=cluster.admin_root)
            assert bad in exc.value.message and exc.value.exit_code == 2


def test_member_with_sshd_stopped_is_unreachable(test_cluster):
    cluster = test_cluster(2, init=False)
    down, up = cluster.members
    down.stop_sshd()
    with cluster.admin():
        with pytest.raises(MemberUnreachable) as exc:
            remote.connect(down.spec(), admin_root=cluster.admin_root)
        assert exc.value.exit_code == 1 and down.address in exc.value.message
        remote.connect(up.spec(), admin_root=cluster.admin_root).close()  # the other still works


def test_incompatible_rpc_version_is_refused(test_cluster):
    cluster = test_cluster(1, init=False)
    m = cluster.members[0]
    fake = os.path.join(m.dir, "old-sysmgr")
    write_script(fake, FAKE_OLD_SYSMGR.format(python=sys.executable))
    missing = os.path.join(m.dir, "no-such-sysmgr")
    with cluster.admin():
        with pytest.raises(RemoteRejected) as exc:
            remote.connect(m.spec(sysmgr=fake), admin_root=cluster.admin_root, hello=True)
        assert "RPC v999" in exc.value.message and exc.value.exit_code == 2
        # connected lazily, the first call says the same; a stream is refused as well
        with remote.connect(m.spec(sysmgr=fake), admin_root=cluster.admin_root) as b:
            with pytest.raises(RemoteRejected) as exc:
                b.container_views()
            assert "RPC v999" in exc.value.message
            with pytest.raises(RemoteRejected) as exc:
                b.file_get("c1", "/etc/hostname")
            assert "does not answer" in exc.value.message
        with pytest.raises(RemoteRejected) as exc:
            remote.hello(m.spec(sysmgr=missing), admin_root=cluster.admin_root)
        assert "does not answer" in exc.value.message and "No such file" in exc.value.message


def test_readme_cluster_snippet_runs(test_cluster):
    """The README's transport example, against a test host whose key is not yet trusted."""
    import re

    from tests.conftest import REPO

    cluster = test_cluster(1, trust=False)
    m = cluster.members[0]
    with open(os.path.join(REPO, "README.md")) as f:
        block = next(b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S)
                     if "remote.connect" in b)
    spec = f"MemberSpec('node2', {m.url!r}, root={m.root!r}, key={cluster.key!r}, sysmgr={m.sysmgr!r})"
    code = re.sub(r"^spec = .*$", f"spec = {spec}", block, flags=re.M)
    code = code.replace('admin_root = "/var/lib/sysmgr"', f"admin_root = {cluster.admin_root!r}")
    res = subprocess.run(cluster.argv(sys.executable, "-c", code), capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert res.returncode == 0, res.stderr
    assert m.host_key in res.stdout and "rpc=1" in res.stdout and res.stdout.endswith("default\n")


NOT_SSH = """\
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{address}", 2222))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"220 this is not an ssh server\\r\\n")
    c.close()
"""


def test_a_port_without_sshd_is_unreachable_in_one_line(test_cluster, capsys):
    cluster = test_cluster(1, init=False)
    m = cluster.members[0]
    server = subprocess.Popen(m.ns.argv(sys.executable, "-c", NOT_SSH.format(address=m.address)),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        with cluster.admin(), pytest.raises(MemberUnreachable) as exc:
            remote.connect(m.spec(url=f"ssh://root@{m.address}:2222"),
                           admin_root=cluster.admin_root, timeout=2)
    finally:
        server.kill()
        server.wait()
    assert exc.value.exit_code == 1 and f"{m.address}:2222" in exc.value.message
    assert capsys.readouterr().err == ""  # paramiko's own logging stays quiet


def test_init_through_the_rpc(test_cluster):
    cluster = test_cluster(1, init=False)
    m = cluster.members[0]
    with cluster.admin(), remote.connect(m.spec(), admin_root=cluster.admin_root) as b:
        assert b.initialised() is False and b.hello.initialised is False
        done = b.init(storage_driver="dir", network=None)
        assert done and b.initialised() is True
        assert [p.name for p in b.pool_list()] == ["default"]
        assert b.pool_get("default").driver == "dir"
    assert os.path.exists(os.path.join(m.root, "root.id"))


def test_exec_on_the_callers_terminal(member):
    """A terminal on the admin side: a pty on the member, the window size passed on, the
    local terminal raw during the session and as it was afterwards."""
    import fcntl
    import struct
    import termios
    import threading

    cluster, m, b = member
    b.container_create("c1", "busybox", profiles=None, config=None, devices=None, pool=None,
                       description="", start=True)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    before = termios.tcgetattr(slave)
    os.write(master, b"abc\r")  # typed ahead: waits in the terminal's input queue
    out = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            out.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = b.exec_interactive("c1", ["sh", "-c", "stty size; read x; echo got:$x; exit 4"],
                                  env=None, cwd=None, tty=None, stdin=slave, stdout=slave,
                                  stderr=slave)
        after = termios.tcgetattr(slave)
    finally:
        os.close(slave)
        reader.join(5)
        os.close(master)
    assert code == 4 and b"40 100" in out and b"got:abc" in out, bytes(out)
    assert after == before


def test_a_members_events_come_over_the_rpc(member):
    """``event_list`` travels as it is (Event records); ``event_follow`` asks the member what
    is new (its log cannot be watched from here)."""
    cluster, m, b = member
    stop = threading.Event()
    # the member's root has no event yet: from its start, nothing depends on when it begins
    assert b.event_list(since=None, types=None) == []
    follow = b.event_follow(types=["lifecycle"], from_end=False, since=None, stop=stop)
    got: list = []
    t = threading.Thread(target=lambda: got.extend(follow), daemon=True)
    t.start()
    try:
        b.container_create("c1", "busybox", profiles=None, config=None, devices=None, pool=None,
                           description="", start=True)
        b.container_delete("c1", force=True)
        events = b.event_list(since=None, types=["lifecycle"])
        assert [(e.object, e.action) for e in events] == [
            ("container/c1", "created"), ("container/c1", "started"),
            ("container/c1", "stopped"), ("container/c1", "deleted")]
        assert all(isinstance(e, Event) and e.pid > 0 for e in events)
        deadline = time.monotonic() + 30
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(30)
    assert got == events
