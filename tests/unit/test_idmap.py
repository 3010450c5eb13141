"""Id maps as data: raw.idmap parsing, the uid/gid map lines with extra entries punched into
the base range, and the allocation of isolated ranges (fake runtime: no kernel needed)."""

from __future__ import annotations

import pytest

from sysmgr.drivers.runtime.fake import FakeRuntime
from sysmgr.errors import ValidationError
from sysmgr.model.idmaps import normalize_raw_idmap, parse_raw_idmap
from sysmgr.types import IdMap, IdMapEntry


@pytest.mark.parametrize("text,entries", [
    ("both 1000 1000", [IdMapEntry("both", 1000, 1000, 1)]),
    ("uid 5000-5009 100-109\n\ngid 7 0", [IdMapEntry("uid", 5000, 100, 10), IdMapEntry("gid", 7, 0, 1)]),
    ("", []),
])
def test_raw_idmap_parses(text, entries):
    assert list(parse_raw_idmap(text)) == entries


@pytest.mark.parametrize("text,reason", [
    ("both 1000", "expected 'uid|gid|both HOST NS'"),
    ("user 1 1", "expected 'uid|gid|both HOST NS'"),
    ("uid 1-5 1-3", "ranges of different lengths"),
    ("uid x 1", "is not an id"),
    ("uid 5-1 1-5", "the first no larger than the last"),
])
def test_raw_idmap_rejects_with_the_line(text, reason):
    with pytest.raises(ValueError, match=reason) as e:
        parse_raw_idmap(text)
    assert "line 1" in str(e.value)


def test_raw_idmap_normalises():
    assert normalize_raw_idmap("both  1000  1000\nuid 5-5 7-7") == "both 1000 1000\nuid 5 7"


def test_map_lines_punch_extras_into_the_base_range():
    m = IdMap(1_000_000, 65536, (IdMapEntry("both", 1000, 1000), IdMapEntry("uid", 4242, 0)))
    assert m.mappings("uid") == [(0, 4242, 1), (1, 1_000_001, 999), (1000, 1000, 1),
                                 (1001, 1_001_001, 64535)]
    assert m.mappings("gid") == [(0, 1_000_000, 1000), (1000, 1000, 1), (1001, 1_001_001, 64535)]
    assert m.host_id("uid", 0) == 4242 and m.host_id("gid", 0) == 1_000_000
    assert IdMap(5, 10).mappings("uid") == [(0, 5, 10)]


@pytest.fixture
def subids(tmp_path, monkeypatch):
    """/etc/subuid and /etc/subgid of the test's own (init writes root's ranges there)."""
    monkeypatch.setenv("SYSMGR_SUBUID", str(tmp_path / "subuid"))
    monkeypatch.setenv("SYSMGR_SUBGID", str(tmp_path / "subgid"))


@pytest.fixture
def client(subids, fake_client):
    return fake_client  # tests/unit/conftest.py, initialised with the subids above


def started_map(client, name: str) -> IdMap | None:
    spec = next(s for cg, s in FakeRuntime.running().items() if cg.endswith("/" + name))
    return spec.idmap


def test_init_gives_root_a_range_once(client, tmp_path):
    text = (tmp_path / "subuid").read_text()
    assert text == "root:1000000:1000000000\n" == (tmp_path / "subgid").read_text()
    client.init()
    assert (tmp_path / "subuid").read_text() == text


def test_shared_isolated_and_privileged_maps(client):
    client.containers.create("s1", "img", start=True)
    client.containers.create("s2", "img", start=True)
    client.containers.create("i1", "img", config={"security.idmap.isolated": "true"}, start=True)
    client.containers.create("i2", "img", config={"security.idmap.isolated": "true",
                                                  "security.idmap.size": "131072"}, start=True)
    client.containers.create("p", "img", config={"security.privileged": "true"}, start=True)
    s1, s2, i1, i2 = (started_map(client, n) for n in ("s1", "s2", "i1", "i2"))
    assert s1 == s2 == IdMap(1_000_000, 65536)
    assert i1 == IdMap(1_065_536, 65536) and i2 == IdMap(1_131_072, 131072)
    assert started_map(client, "p") is None
    # an isolated block is kept across restarts, and freed blocks are reused
    client.containers.get("i1").restart(force=True)
    assert started_map(client, "i1") == i1
    client.containers.get("i1").delete(force=True)
    client.containers.create("i3", "img", config={"security.idmap.isolated": "true"}, start=True)
    assert started_map(client, "i3") == i1


def test_a_map_bigger_than_roots_range_is_refused(client, tmp_path):
    (tmp_path / "subuid").write_text("root:1000000:65536\n")
    (tmp_path / "subgid").write_text("root:1000000:65536\n")
    with pytest.raises(ValidationError, match="security.idmap.size"):
        client.containers.create("big", "img", config={"security.idmap.size": "131072"}, start=True)
    assert not client.containers.exists("big")  # a failed launch leaves nothing
