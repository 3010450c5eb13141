"""Every command's ``--help`` shows an example: the test walks the whole click command tree
(every lazily loaded verb, every subcommand of every group) and fails on any command whose
help has no ``Examples:`` section with at least one ``sysmgr ...`` line."""

from __future__ import annotations

import click

from sysmgr.cli import main as climain


def walk(ctx: click.Context, cmd: click.Command, path: tuple[str, ...]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(click.Context(sub, parent=ctx, info_name=name), sub, path + (name,))


def names_of(group: click.Command, ctx: click.Context, cmd: click.Command) -> set[str]:
    """Every name ``group`` has ``cmd`` under (``device set`` is also ``device override``)."""
    if not isinstance(group, click.Group):
        return set()
    return {n for n in group.list_commands(ctx) if group.get_command(ctx, n) is cmd}


def examples(cmd: click.Command, ctx: click.Context) -> list[str]:
    text = cmd.get_help(ctx)
    _, found, rest = text.partition("Examples:")
    if not found:
        return []
    block = []
    for ln in rest.splitlines()[1:]:  # the lines of the block, up to the first blank one
        if not ln.strip():
            break
        block.append(ln.strip())
    return [ln for ln in block if ln.startswith("sysmgr ")]


def test_every_command_has_an_example():
    root = click.Context(climain.cli, info_name="sysmgr")
    missing = []
    count = 0
    for path, cmd in walk(root, climain.cli, ()):
        if not path:
            continue  # the root's help lists the verbs
        count += 1
        ctx = click.Context(cmd, info_name=" ".join(path), parent=root)
        if not examples(cmd, ctx):
            missing.append(" ".join(path))
    assert count > 100  # the walk reached the subcommands
    assert missing == [], f"{len(missing)} commands without an Examples: section: {missing}"


def test_examples_name_their_own_command():
    """An example of ``image build`` starts with ``sysmgr image build`` (or an option of the
    root first, e.g. ``sysmgr --root DIR ...``)."""
    root = click.Context(climain.cli, info_name="sysmgr")
    parents = {(): climain.cli}
    wrong = []
    for path, cmd in walk(root, climain.cli, ()):
        parents[path] = cmd
        if not path:
            continue
        ctx = click.Context(cmd, info_name=" ".join(path), parent=root)
        names = names_of(parents[path[:-1]], root, cmd) | {path[-1]}
        for line in examples(cmd, ctx):
            words = [w for w in line.split()[1:] if not w.startswith("-")]
            if line.split()[1].startswith("--"):
                words = words[1:]  # a root option's value (sysmgr --root /srv/lab uninit)
            if tuple(words[:len(path) - 1]) != path[:-1] or words[len(path) - 1] not in names:
                wrong.append(f"{' '.join(path)}: {line}")
    assert wrong == []
