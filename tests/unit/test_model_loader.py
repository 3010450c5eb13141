"""Unit tests for sysmgr.model.loader: YAML -> specs, and every problem reported with file:line."""

from __future__ import annotations

import io
import os
import sys
import textwrap

import pytest

from sysmgr.errors import Issue, ValidationError
from sysmgr.model import loader
from sysmgr.model.loader import load_paths, load_text
from sysmgr.model.objects import (
    KIND_ORDER,
    ContainerSpec,
    ImageSpec,
    ProfileSpec,
    Source,
    StoragePoolSpec,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFESTS = os.path.join(HERE, "manifests")


def issues_of(text: str, filename: str = "x.yaml") -> list[Issue]:
    """The issues load_text reports for ``text`` (dedented); fails if it loads cleanly."""
    with pytest.raises(ValidationError) as exc:
        load_text(textwrap.dedent(text), filename)
    return exc.value.issues


def one_issue(text: str) -> Issue:
    issues = issues_of(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


# -- a valid tree of manifests -------------------------------------------------------------

def test_directory_is_read_recursively_sorted_and_hidden_entries_skipped() -> None:
    tree = os.path.join(MANIFESTS, "tree")
    m = load_paths([tree])
    kinds = [s.kind for s in m.specs]
    assert kinds == sorted(kinds, key=KIND_ORDER.index)
    assert [(s.kind, s.name) for s in m.specs] == [
        ("StoragePool", "default"),
        ("Profile", "default"),
        ("Profile", "small"),
        # images/ sorts after containers/, but kinds come in KIND_ORDER; stable within a kind
        ("Image", "busybox"),
        ("Image", "debian/12"),
        ("Image", "alpine"),
        ("Container", "db1"),   # containers/nested/db.yaml sorts before containers/web.yaml
        ("Container", "web1"),
    ]


def test_specs_carry_typed_values_and_their_source() -> None:
    tree = os.path.join(MANIFESTS, "tree")
    m = load_paths([tree])
    pool, = m.of("StoragePool")
    assert pool == StoragePoolSpec(
        name="default", driver="dir", config={"source": "/srv/sysmgr/pool"},
        description="Default pool", source=Source(os.path.join(tree, "pools.yaml"), 2))
    web = next(s for s in m.of("Container") if s.name == "web1")
    assert isinstance(web, ContainerSpec)
    assert web.profiles == ("default", "small")
    assert web.config == {"limits.memory": "64MiB", "environment.FOO": "bar", "user.owner": "alice"}
    assert web.devices == {"eth1": {"type": "none"}}
    assert web.state == "running"
    assert web.source == Source(os.path.join(tree, "containers", "web.yaml"), 1)
    db = next(s for s in m.of("Container") if s.name == "db1")
    assert db.profiles == ("default",) and db.state == "stopped" and db.image == "debian/12"
    small = next(s for s in m.of("Profile") if s.name == "small")
    assert small.source.line == 7  # the second document's first key
    assert small.config == {"limits.memory": "256MiB", "limits.cpu": "1"}


def test_image_build_shorthand_and_path_relative_to_the_manifest() -> None:
    tree = os.path.join(MANIFESTS, "tree")
    images = {s.name: s for s in load_paths([os.path.join(tree, "images", "images.yaml")]).specs}
    assert images["busybox"] == ImageSpec(
        name="busybox", build={"builder": "busybox"},
        source=Source(os.path.join(tree, "images", "images.yaml"), 1))
    assert images["debian/12"].build == {"builder": "debian", "release": "bookworm"}
    assert images["alpine"].build is None
    assert images["alpine"].path == os.path.join(tree, "tarballs", "alpine.tar.xz")
    assert os.path.isabs(images["alpine"].path or "")


def test_load_text_resolves_image_paths_against_base_dir() -> None:
    m = load_text("kind: Image\nname: a\npath: img/a.tar\n", base_dir="/repo/manifests")
    assert m.specs[0].path == "/repo/manifests/img/a.tar"  # type: ignore[union-attr]


def test_files_and_directories_mix_and_a_file_given_twice_is_read_once() -> None:
    tree = os.path.join(MANIFESTS, "tree")
    pools = os.path.join(tree, "pools.yaml")
    m = load_paths([pools, tree])
    assert [s.name for s in m.of("StoragePool")] == ["default"]


def test_explicit_file_is_read_whatever_its_extension(tmp_path) -> None:
    f = tmp_path / "manifest.txt"
    f.write_text("kind: Profile\nname: p\n")
    assert [s.name for s in load_paths([str(f)]).specs] == ["p"]


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("kind: Profile\nname: fromstdin\n"))
    m = load_paths(["-"])
    assert m.specs[0].name == "fromstdin"
    assert m.specs[0].source == Source("<stdin>", 1)


def test_stdin_issue_names_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("kind: Profile\nname: a/b\n"))
    with pytest.raises(ValidationError) as exc:
        load_paths(["-"])
    assert str(exc.value.issues[0]).startswith("<stdin>:2: name: invalid name 'a/b'")


def test_empty_documents_and_files_are_skipped(tmp_path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# nothing here\n")
    (tmp_path / "docs.yaml").write_text("---\n---\nkind: Profile\nname: p\n---\n# end\n")
    m = load_paths([str(tmp_path)])
    assert [s.name for s in m.specs] == ["p"]
    assert m.specs[0].source.line == 3


def test_empty_directory_gives_an_empty_manifest(tmp_path) -> None:
    assert load_paths([str(tmp_path)]).specs == ()


def test_kind_order_is_stable_within_a_kind() -> None:
    text = "".join(
        f"---\nkind: {kind}\nname: {name}\n" + extra
        for kind, name, extra in [
            ("Container", "c2", "image: i\n"),
            ("Profile", "p2", ""),
            ("Container", "c1", "image: i\n"),
            ("StoragePool", "s1", "driver: dir\n"),
            ("Profile", "p1", ""),
            ("Image", "i", "build: busybox\n"),
        ]
    )
    m = load_text(text)
    assert [s.name for s in m.specs] == ["s1", "p2", "p1", "i", "c2", "c1"]


@pytest.mark.parametrize("yaml_value, expected", [
    ("true", "true"),
    ("yes", "yes"),       # kept as written; booleans are normalised only for comparison
    ("2", "2"),
    ("1.5", "1.5"),
    ("1.50", "1.50"),     # as LXD: the text as written, not float formatting
    ("0755", "0755"),     # not YAML 1.1's octal 493
    ("1:30", "1:30"),     # not YAML 1.1's sexagesimal 90
    ("2024-01-01", "2024-01-01"),
    ('"quoted: yes"', "quoted: yes"),
    ("''", ""),
])
def test_config_values_become_strings_as_written(yaml_value: str, expected: str) -> None:
    m = load_text(f"kind: Profile\nname: p\nconfig:\n  user.v: {yaml_value}\n")
    assert m.specs[0].config == {"user.v": expected}  # type: ignore[union-attr]


def test_a_list_key_may_be_a_yaml_list_and_other_keys_may_not() -> None:
    m = load_text("kind: Container\nname: web1\nimage: busybox\nconfig:\n"
                  "  boot.depends: [db1, cache1]\n")
    assert m.specs[0].config == {"boot.depends": "db1,cache1"}  # type: ignore[union-attr]
    with pytest.raises(ValidationError) as e:
        load_text("kind: Container\nname: web1\nimage: busybox\nconfig:\n"
                  "  boot.depends: [db1, 'bad name']\n  user.x: [1]\n")
    assert [(i.line, i.path) for i in e.value.issues] == [
        (5, "config.boot.depends"), (6, "config.user.x")]
    assert "got a list" in e.value.issues[1].message


def test_device_values_become_strings() -> None:
    m = load_text("kind: Profile\nname: p\ndevices:\n"
                  "  eth0: {type: nic, network: br0, mtu: 1500, hwaddr: 10:20:30:40:50:59}\n")
    assert m.specs[0].devices == {  # type: ignore[union-attr]
        "eth0": {"type": "nic", "network": "br0", "mtu": "1500", "hwaddr": "10:20:30:40:50:59"}}


def test_null_config_and_devices_are_empty_maps() -> None:
    m = load_text("kind: Profile\nname: p\nconfig:\ndevices:\ndescription:\n")
    p = m.specs[0]
    assert isinstance(p, ProfileSpec)
    assert (p.config, p.devices, p.description) == ({}, {}, "")


def test_container_defaults() -> None:
    c = load_text("kind: Container\nname: c\nimage: busybox\n").specs[0]
    assert isinstance(c, ContainerSpec)
    assert (c.profiles, c.state, c.config, c.devices) == (("default",), None, {}, {})
    c = load_text("kind: Container\nname: c\nimage: busybox\nprofiles: []\nstate:\n").specs[0]
    assert c.profiles == () and c.state is None  # type: ignore[union-attr]


def test_yaml_merge_keys_work_and_are_not_duplicates() -> None:
    m = load_text(textwrap.dedent("""\
        kind: Profile
        name: p
        config:
          <<: {limits.memory: 64MiB, limits.cpu: "2"}
          limits.cpu: "3"
        """))
    assert m.specs[0].config == {"limits.memory": "64MiB", "limits.cpu": "3"}  # type: ignore[union-attr]


# -- bad input: one issue each, with the right line, path and reason -------------------------

BAD = [
    # (id, yaml, line, path, text in the reason)
    ("malformed-flow", """\
        kind: Container
        name: web1
        image: [busybox
        state: running
        """, 4, None, "invalid YAML: expected ',' or ']'"),
    ("malformed-indent", """\
        kind: Container
        name: web1
          image: busybox
        """, 3, None, "invalid YAML: mapping values are not allowed here"),
    ("malformed-tab", "kind: Profile\nname: p\nconfig:\n\tuser.a: b\n", 4, None, "invalid YAML"),
    ("unknown-kind", """\
        kind: Contianer
        name: web1
        """, 1, "kind", "unknown kind 'Contianer' (did you mean 'Container'?): expected one of "
                        "StoragePool, StorageVolume, Network, Profile, Image, Container"),
    ("kind-not-a-string", "kind: [Container]\nname: a\n", 1, "kind", "unknown kind ['Container']"),
    ("missing-kind", """\
        name: web1
        image: busybox
        """, 1, None, "missing kind: expected one of StoragePool, StorageVolume, Network, Profile, Image, Container"),
    ("null-kind", "kind:\nname: a\n", 1, "kind", "missing kind"),
    ("document-is-a-list", "- kind: Container\n", 1, None,
     "a document must be a mapping with a kind: field"),
    ("document-is-a-scalar", "just text\n", 1, None, "got a string"),
    ("unknown-field", """\
        kind: Container
        name: web1
        image: busybox
        colour: blue
        """, 4, "colour", "unknown field 'colour'"),
    ("misspelt-field-suggests-and-is-one-issue", """\
        kind: Container
        name: web1
        imgae: busybox
        """, 3, "imgae", "unknown field 'imgae' (did you mean 'image'?)"),
    ("missing-required", """\
        kind: Container
        name: web1
        """, 1, "image", "required field is missing"),
    ("unknown-config-key-suggestion", """\
        kind: Container
        name: web1
        image: busybox
        config:
          limits.memroy: 64MiB
        """, 5, "config.limits.memroy",
     "unknown config key 'limits.memroy' (did you mean 'limits.memory'?)"),
    ("unknown-config-family-suggestion", """\
        kind: Profile
        name: p
        config:
          enviroment.FOO: bar
        """, 4, "config.enviroment.FOO", "did you mean 'environment.FOO'?"),
    ("bad-size", """\
        kind: Container
        name: web1
        image: busybox
        config:
          user.a: b
          limits.memory: lots
        """, 6, "config.limits.memory",
     "invalid size 'lots': expected a number with a unit such as 64MiB or 1GB"),
    ("memory-too-small", "kind: Profile\nname: p\nconfig:\n  limits.memory: 1MiB\n", 4,
     "config.limits.memory", "the minimum is 4MiB"),
    ("mistyped-bool", "kind: Profile\nname: p\nconfig:\n  boot.autostart: maybe\n", 4,
     "config.boot.autostart", "invalid boolean 'maybe'"),
    ("mistyped-cpu", "kind: Profile\nname: p\nconfig:\n  limits.cpu: two\n", 4,
     "config.limits.cpu", "invalid CPU limit 'two'"),
    ("volatile-key", """\
        kind: Container
        name: web1
        image: busybox
        config:
          volatile.eth0.hwaddr: 00:16:3e:00:00:01
        """, 5, "config.volatile.eth0.hwaddr", "volatile keys are managed by sysmgr"),
    ("image-key", "kind: Profile\nname: p\nconfig:\n  image.os: debian\n", 4,
     "config.image.os", "managed by sysmgr"),
    ("raw-key", "kind: Profile\nname: p\nconfig:\n  raw.lxc: x\n", 4, "config.raw.lxc",
     "not supported"),
    ("bad-env-name", "kind: Profile\nname: p\nconfig:\n  environment.1X: a\n", 4,
     "config.environment.1X", "invalid environment variable name '1X'"),
    ("null-config-value", "kind: Profile\nname: p\nconfig:\n  user.a:\n", 4, "config.user.a",
     "must not be null"),
    ("map-config-value", "kind: Profile\nname: p\nconfig:\n  user.a: {b: c}\n", 4,
     "config.user.a", "expected a string, number or boolean, got a mapping"),
    ("list-config-value", "kind: Profile\nname: p\nconfig:\n  user.a: [1]\n", 4,
     "config.user.a", "got a list"),
    ("config-is-a-list", "kind: Profile\nname: p\nconfig: [a]\n", 3, "config",
     "expected a mapping, got a list"),
    ("profiles-is-a-string", """\
        kind: Container
        name: web1
        image: busybox
        profiles: default
        """, 4, "profiles", "expected a list, got a string"),
    ("profiles-null", "kind: Container\nname: c\nimage: i\nprofiles:\n", 4, "profiles",
     "must not be empty"),
    ("profile-entry-not-a-string", "kind: Container\nname: c\nimage: i\nprofiles:\n  - a\n  - [b]\n",
     6, "profiles.1", "expected a string, got a list"),
    ("profile-listed-twice", "kind: Container\nname: c\nimage: i\nprofiles: [a, b, a]\n", 4,
     "profiles.2", "profile 'a' is listed twice"),
    ("name-not-a-string", "kind: Profile\nname: 5\n", 2, "name", "expected a string, got an integer"),
    ("bad-state", "kind: Container\nname: c\nimage: i\nstate: runing\n", 4, "state",
     "invalid value 'runing' (did you mean 'running'?): expected one of running, stopped"),
    ("name-dotdot", "kind: Container\nname: ../x\nimage: i\n", 2, "name",
     "invalid name '../x': must not contain '/'"),
    ("name-slash", "kind: Container\nname: a/b\nimage: i\n", 2, "name",
     "invalid name 'a/b': must not contain '/'"),
    ("name-64-chars", f"kind: Container\nname: {'a' * 64}\nimage: i\n", 2, "name",
     "is 64 characters long, at most 63 are allowed"),
    ("name-all-digits", "kind: Container\nname: \"1234\"\nimage: i\n", 2, "name",
     "must not be all digits"),
    ("profile-name-hidden", "kind: Profile\nname: .p\n", 2, "name", "must not start with '.'"),
    ("profile-name-slash", "kind: Profile\nname: a/b\n", 2, "name", "must not contain '/'"),
    ("pool-name-space", "kind: StoragePool\nname: a b\ndriver: dir\n", 2, "name",
     "must not contain whitespace"),
    ("alias-dotdot", "kind: Image\nname: a/../b\nbuild: busybox\n", 2, "name",
     "'..' path segment"),
    ("alias-leading-slash", "kind: Image\nname: /a\nbuild: busybox\n", 2, "name",
     "must not start with '/'"),
    ("container-image-bad", "kind: Container\nname: c\nimage: ../x\n", 3, "image",
     "invalid image '../x'"),
    ("duplicate-top-level-key", """\
        kind: Container
        name: web1
        image: busybox
        name: web2
        """, 4, "name", "duplicate key 'name' (first at line 2)"),
    ("duplicate-config-key", """\
        kind: Profile
        name: p
        config:
          limits.memory: 64MiB
          limits.cpu: "1"
          limits.memory: 128MiB
        """, 6, "config.limits.memory", "duplicate key 'limits.memory' (first at line 4)"),
    ("device-without-type", """\
        kind: Profile
        name: p
        devices:
          root: {path: /, pool: default}
        """, 4, "devices.root.type", "required field is missing"),
    ("device-unknown-type", "kind: Profile\nname: p\ndevices:\n  d: {type: dsk}\n", 4,
     "devices.d.type", "unknown device type 'dsk' (did you mean 'disk'?)"),
    ("device-unknown-key", """\
        kind: Profile
        name: p
        devices:
          eth0:
            type: nic
            network: br0
            mtuu: 1500
        """, 7, "devices.eth0.mtuu", "unknown nic device key 'mtuu' (did you mean 'mtu'?)"),
    ("device-not-a-map", "kind: Profile\nname: p\ndevices:\n  d: disk\n", 4, "devices.d",
     "expected a mapping, got a string"),
    ("root-disk-without-pool", "kind: Profile\nname: p\ndevices:\n  root: {type: disk, path: /}\n",
     4, "devices.root.pool", "the root disk (path: /) needs a pool"),
    ("bad-mac", "kind: Profile\nname: p\ndevices:\n  e: {type: nic, network: n, hwaddr: zz}\n", 4,
     "devices.e.hwaddr", "invalid MAC address 'zz'"),
    ("image-build-and-path", "kind: Image\nname: a\nbuild: busybox\npath: x.tar\n", 4, "path",
     "either build or path, not both"),
    ("image-neither", "kind: Image\nname: a\n", 1, None, "needs build"),
    ("image-build-without-builder", "kind: Image\nname: a\nbuild: {release: x}\n", 3, "build",
     "build needs a builder"),
    ("image-build-wrong-type", "kind: Image\nname: a\nbuild: [x]\n", 3, "build",
     "expected a string or a mapping, got a list"),
    ("pool-missing-driver", "kind: StoragePool\nname: p\n", 1, "driver", "required field is missing"),
    ("pool-relative-source", "kind: StoragePool\nname: p\ndriver: dir\nconfig: {source: rel}\n", 4,
     "config.source", "must be absolute"),
    ("pool-unknown-key", "kind: StoragePool\nname: p\ndriver: btrfs\nconfig:\n  sise: 1GiB\n", 5,
     "config.sise", "unknown btrfs pool config key 'sise' (did you mean 'size'?)"),
    # drivers and values the driver would refuse at apply time: refused here, with the line
    ("pool-unknown-driver", "kind: StoragePool\nname: p\ndriver: zfs9\n", 3, "driver",
     "unknown storage pool driver 'zfs9' (known: btrfs, dir)"),
    ("pool-driver-typo", "kind: StoragePool\nname: p\ndriver: btrf\n", 3, "driver",
     "unknown storage pool driver 'btrf' (did you mean 'btrfs'?)"),
    ("pool-loop-too-small", "kind: StoragePool\nname: p\ndriver: btrfs\nconfig: {size: 64MiB}\n",
     4, "config.size", "size 64MiB is too small for a btrfs loop file (at least 128.00MiB)"),
    ("unknown-tag", "kind: Profile\nname: p\nconfig:\n  user.a: !secret x\n", 4, "config.user.a",
     "could not determine a constructor for the tag '!secret'"),
    ("recursive-alias", "kind: Profile\nname: p\nconfig: &x {user.a: *x}\n", 3, "config.user.a",
     "recursive alias"),
]


@pytest.mark.parametrize("text, line, path, reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gives_one_precise_issue(text: str, line: int, path: str | None, reason: str) -> None:
    issue = one_issue(text)
    assert issue.file == "x.yaml"
    assert (issue.line, issue.path) == (line, path), str(issue)
    assert reason in issue.message, str(issue)


def test_issue_renders_as_file_line_path_reason() -> None:
    issue = one_issue("""\
        kind: Container
        name: web1
        image: busybox
        config:
          limits.memory: lots
        """)
    assert str(issue) == ("x.yaml:5: config.limits.memory: invalid size 'lots': "
                          "expected a number with a unit such as 64MiB or 1GB")


def test_yaml_error_spoils_only_its_file(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("kind: Profile\nname: ok\n---\nkind: [\n")
    (tmp_path / "b.yaml").write_text("kind: Profile\nname: a/b\n")
    with pytest.raises(ValidationError) as exc:
        load_paths([str(tmp_path)])
    got = [(os.path.basename(i.file or ""), i.line) for i in exc.value.issues]
    assert got == [("a.yaml", 5), ("b.yaml", 2)]


def test_three_problems_give_three_issues_in_file_order() -> None:
    path = os.path.join(MANIFESTS, "three_problems.yaml")
    with pytest.raises(ValidationError) as exc:
        load_paths([path])
    assert [(i.file, i.line, i.path) for i in exc.value.issues] == [
        (path, 2, "name"),
        (path, 5, "config.limits.memory"),
        (path, 6, "colour"),
    ]


def test_every_problem_across_documents_and_files_is_reported(tmp_path) -> None:
    (tmp_path / "1.yaml").write_text(textwrap.dedent("""\
        kind: Container
        name: c
        image: i
        state: up
        ---
        kind: Profile
        name: p
        config: {limits.cpu: "0", user.x: ok, limits.processes: -1}
        """))
    (tmp_path / "2.yaml").write_text("kind: Nope\n")
    with pytest.raises(ValidationError) as exc:
        load_paths([str(tmp_path)])
    got = [(os.path.basename(i.file or ""), i.line, i.path) for i in exc.value.issues]
    assert got == [
        ("1.yaml", 4, "state"),
        ("1.yaml", 8, "config.limits.cpu"),
        ("1.yaml", 8, "config.limits.processes"),
        ("2.yaml", 1, "kind"),
    ]


def test_duplicate_names_across_files_name_both_places() -> None:
    dups = os.path.join(MANIFESTS, "dups")
    with pytest.raises(ValidationError) as exc:
        load_paths([dups])
    a, b = os.path.join(dups, "a.yaml"), os.path.join(dups, "b.yaml")
    assert [str(i) for i in exc.value.issues] == [
        f"{b}:5: name: duplicate Container 'web1' (also defined at {a}:2)",
    ]  # the Profile web1 is a different kind: no conflict


def test_duplicate_names_within_one_file() -> None:
    issue = one_issue("kind: Profile\nname: p\n---\nkind: Profile\nname: p\n")
    assert (issue.line, issue.path) == (5, "name")
    assert issue.message == "duplicate Profile 'p' (also defined at x.yaml:2)"


def test_missing_path_is_an_issue(tmp_path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ValidationError) as exc:
        load_paths([missing])
    assert str(exc.value.issues[0]) == f"{missing}: no such file or directory"


def test_not_utf8_is_an_issue(tmp_path) -> None:
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"kind: Profile\nname: \xff\n")
    with pytest.raises(ValidationError) as exc:
        load_paths([str(f)])
    assert "not UTF-8" in exc.value.issues[0].message


def test_alias_bomb_is_rejected_not_expanded() -> None:
    levels = ["x0: &a0 [1,1,1,1,1,1,1,1,1,1]"] + [
        f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    issue = one_issue("kind: Profile\nname: p\n" + "\n".join(levels) + "\n")
    assert "document too large" in issue.message


def test_validation_error_exit_code_is_bad_input() -> None:
    with pytest.raises(ValidationError) as exc:
        load_text("kind: Nope\n")
    assert exc.value.exit_code == 2


def test_kind_table_is_extensible() -> None:
    """A new kind is one entry: a schema and a builder."""
    schema = {"kind": {"type": "string"}, "name": {"type": "string", "required": True}}

    def build(doc, ctx):
        return ProfileSpec(name=doc["name"], source=ctx.source)

    loader.KINDS["Thing"] = (schema, build)
    try:
        m = load_text("kind: Thing\nname: t\n")
        assert m.specs[0].name == "t"
        issue = one_issue("kind: Thing\nname: t\nsize: 1\n")
        assert issue.path == "size"
    finally:
        del loader.KINDS["Thing"]


def test_unknown_capability_is_reported_with_file_and_line() -> None:
    issue = one_issue("""\
        kind: Container
        name: c1
        image: busybox
        config:
          security.capabilities.add: syslog,sys_everything
        """)
    assert (issue.file, issue.line, issue.path) == ("x.yaml", 5, "config.security.capabilities.add")
    assert "unknown capability 'sys_everything'" in str(issue)
