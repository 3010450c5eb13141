"""``sysmgr completion bash|zsh|fish``: the shell's completion script.

The script calls ``sysmgr`` back with ``_SYSMGR_COMPLETE`` set on every TAB; click answers
from the command tree and :mod:`sysmgr.cli.completion` adds the live names (containers,
images, profiles, snapshots...) in the same positions as the admin shell (``sysmgr shell``)
completes them: one engine for both.
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script of SHELL (verbs, options, config keys, live names).

    \b
      bash: eval "$(sysmgr completion bash)"   (or save it in /etc/bash_completion.d/sysmgr)
      zsh:  sysmgr completion zsh > "${fpath[1]}/_sysmgr"
      fish: sysmgr completion fish > ~/.config/fish/completions/sysmgr.fish
    """
    from click.shell_completion import get_completion_class

    from sysmgr.cli.completion import COMPLETE_VAR, PROG

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"click has no completion for {shell}")
    click.echo(cls(ctx.find_root().command, {}, PROG, COMPLETE_VAR).source())
