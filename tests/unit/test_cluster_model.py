"""``kind: Member`` documents, member URLs, ``target:`` on containers, the cluster.evacuate
key, and the admin root's cluster store (SQLite)."""

from __future__ import annotations

import textwrap

import pytest

from sysmgr.errors import AlreadyExists, NotFound, ValidationError
from sysmgr.model import keys, members
from sysmgr.model.loader import load_text
from sysmgr.model.objects import MemberDoc
from sysmgr.state.cluster import SQLiteClusterStore
from sysmgr.types import MemberSpec

FP = "SHA256:" + "A" * 43


def load(text: str):
    return load_text(textwrap.dedent(text), "cluster.yaml")


def test_member_from_address_and_ssh() -> None:
    m = load(f"""\
        kind: Member
        name: node2
        address: 10.0.0.2
        ssh: {{user: admin, port: 2222, key: /root/.ssh/id_ed25519}}
        root: /srv/sysmgr
        groups: [web, db]
        sysmgr: /opt/sysmgr/bin/sysmgr
        host_key: {FP}
        config:
          scheduler.instance: manual
        """)
    (doc,) = m.of("Member")
    assert isinstance(doc, MemberDoc)
    assert doc.member == MemberSpec(
        name="node2", url="ssh://admin@10.0.0.2:2222", root="/srv/sysmgr",
        key="/root/.ssh/id_ed25519", sysmgr="/opt/sysmgr/bin/sysmgr", groups=("web", "db"),
        config=(("scheduler.instance", "manual"),), host_key=FP)
    assert doc.source.line == 1


def test_member_from_url_defaults() -> None:
    (doc,) = load("""\
        kind: Member
        name: node3
        url: ssh://10.0.0.3
        """).of("Member")
    assert doc.member.url == "ssh://root@10.0.0.3"      # the user is always written
    assert doc.member.root == "/var/lib/sysmgr" and doc.member.sysmgr == "sysmgr"
    (local,) = load('kind: Member\nname: here\nurl: "local:"\nroot: /srv/r\n').of("Member")
    assert local.member.is_local and local.member.root == "/srv/r"


BAD = [
    # (id, yaml, line, path, text in the reason)
    ("neither-url-nor-address", "kind: Member\nname: n\n", 1, None, "needs either url"),
    ("both", "kind: Member\nname: n\nurl: 'local:'\naddress: h\n", 1, None, "not both"),
    ("bad-url", "kind: Member\nname: n\nurl: http://h\n", 3, "url", "expected ssh://USER@HOST"),
    ("bad-port", "kind: Member\nname: n\naddress: h\nssh: {port: 70000}\n", 4, "ssh.port",
     "max value is 65535"),
    ("user-with-url", "kind: Member\nname: n\nurl: ssh://h\nssh: {user: x}\n", 4, "ssh",
     "part of the URL"),
    ("bad-name", "kind: Member\nname: n-\naddress: h\n", 2, "name", "invalid member name"),
    ("bad-group", "kind: Member\nname: n\naddress: h\ngroups: [a b]\n", 4, "groups.0",
     "invalid group name"),
    ("dup-group", "kind: Member\nname: n\naddress: h\ngroups: [a, a]\n", 4, "groups.1",
     "listed twice"),
    ("relative-root", "kind: Member\nname: n\naddress: h\nroot: srv\n", 4, "root", "absolute"),
    ("bad-host-key", "kind: Member\nname: n\naddress: h\nhost_key: md5:xx\n", 4, "host_key",
     "SHA256:"),
    ("bad-scheduler", "kind: Member\nname: n\naddress: h\nconfig: {scheduler.instance: x}\n",
     4, "config.scheduler.instance", "expected one of all, manual, group"),
    ("unknown-member-key", "kind: Member\nname: n\naddress: h\nconfig: {limits.cpu: 2}\n",
     4, "config.limits.cpu", "unknown member config key"),
    ("unknown-field", "kind: Member\nname: n\naddress: h\nport: 22\n", 4, "port",
     "unknown field 'port'"),
    ("bad-target", "kind: Container\nname: c\nimage: i\ntarget: '@'\n", 4, "target",
     "invalid group"),
    ("bad-target-name", "kind: Container\nname: c\nimage: i\ntarget: 'a/b'\n", 4, "target",
     "invalid member name"),
]


@pytest.mark.parametrize("text,line,path,reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_member_documents(text: str, line: int, path: str | None, reason: str) -> None:
    with pytest.raises(ValidationError) as e:
        load_text(text, "cluster.yaml")
    issue = e.value.issues[0]
    assert (issue.file, issue.line, issue.path) == ("cluster.yaml", line, path), e.value.issues
    assert reason in issue.message


def test_container_target() -> None:
    (c,) = load("kind: Container\nname: c\nimage: busybox\ntarget: '@web'\n").of("Container")
    assert c.target == "@web"
    (c,) = load("kind: Container\nname: c\nimage: busybox\n").of("Container")
    assert c.target is None


def test_urls() -> None:
    assert members.parse_url("ssh://u@h:2") == ("u", 2, "h")
    assert members.parse_url("ssh://[fd00::2]:22") == ("root", 22, "[fd00::2]")
    assert members.url_problem("local:") is None
    assert "out of range" in members.url_problem("ssh://h:0")
    assert members.url_problem("ssh://u@") is not None


def test_cluster_evacuate_key() -> None:
    assert keys.validate_config({"cluster.evacuate": "Stop"}) == []
    assert keys.normalize_config({"cluster.evacuate": "Stop"}) == {"cluster.evacuate": "stop"}
    ((path, reason),) = keys.validate_config({"cluster.evacuate": "move"})
    assert path == "config.cluster.evacuate" and "auto, migrate, stop" in reason
    assert keys.is_live("cluster.evacuate")


# -- the store ---------------------------------------------------------------------------------

def test_store_round_trip(tmp_path) -> None:
    path = str(tmp_path / "admin" / "cluster.db")
    spec = MemberSpec("n2", "ssh://root@h", groups=("web",), config=(("user.a", "b"),),
                      host_key=FP, key="/k")
    with SQLiteClusterStore(path) as st:
        st.add(spec)
        st.add(MemberSpec("n1", "local:", root="/srv/r"))
        with pytest.raises(AlreadyExists):
            st.add(spec)
        assert [m.name for m in st.members()] == ["n1", "n2"]
        assert st.member("n2") == spec
        st.set_evacuated("n2", True)
        st.record_evacuated("n2", "c1", "stop")
        st.put(MemberSpec("n2", "ssh://root@h2"))          # a new record keeps the mark
        assert st.member("n2").evacuated and st.member("n2").url == "ssh://root@h2"
        assert st.evacuated_containers("n2") == [("c1", "stop")]
        st.set_groups("n1", ("a", "b"))
    with SQLiteClusterStore(path) as st:                     # persisted
        assert st.member("n1").groups == ("a", "b")
        st.forget_evacuated("n2", "c1")
        assert st.evacuated_containers("n2") == []
        st.remove("n2")
        with pytest.raises(NotFound):
            st.member("n2")
        with pytest.raises(NotFound):
            st.remove("n2")
