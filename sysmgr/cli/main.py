"""The ``sysmgr`` root command and the one place where exceptions become exit codes.

Subcommands are imported lazily from ``COMMANDS`` (name -> ``module:function``), so
``sysmgr --help`` loads click and nothing else, and ``sysmgr list`` loads only its own
module. This module must never import rich, pyroute2, paramiko, yaml or the API at import
time (``tests/unit/test_cli_main.py`` checks it). The console script enters through
:mod:`sysmgr.cli.fast`, which runs the common forms of the hot verbs without click and hands
everything else to :func:`main` here.

Exit codes: :mod:`sysmgr.cli.exits` maps every exception (:func:`run` turns click's own usage
errors and aborts into codes first).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, NoReturn, Sequence

import click

from sysmgr import __version__
from sysmgr.cli import exits
from sysmgr.cli.commands._common import AppContext, Group, add_target_option

_PKG = "sysmgr.cli.commands"

# name -> "module:function" below sysmgr.cli.commands; one module per noun
COMMANDS: dict[str, str] = {
    "init": "init:init",
    "launch": "container:launch",
    "create": "container:create",
    "start": "lifecycle:start",
    "stop": "lifecycle:stop",
    "restart": "lifecycle:restart",
    "freeze": "lifecycle:freeze",
    "unfreeze": "lifecycle:unfreeze",
    "delete": "lifecycle:delete",
    "list": "listing:list_",
    "info": "info:info",
    "exec": "exec:exec_",
    "shell": "exec:shell",
    "console": "exec:console",
    "config": "config:config",
    "file": "file:file",
    "profile": "profile:profile",
    "image": "image:image",
    "storage": "storage:storage",
    "network": "network:network",
    "snapshot": "snapshot:snapshot",
    "copy": "copy:copy",
    "move": "copy:move",
    "rename": "copy:rename",
    "export": "backup:export",
    "import": "backup:import_",
    "validate": "manifest:validate",
    "diff": "manifest:diff",
    "apply": "manifest:apply",
    "keys": "keys:keys",
    "cluster": "cluster:cluster",
    "controller": "controller:controller",
    "monitor": "monitor:monitor",
    "top": "top:top",
    "metrics": "metrics:metrics",
    "uninit": "uninit:uninit",
    "completion": "completion:completion",
}

# the verbs that take --target MEMBER (LXD's flag), added where they are loaded: the container
# verbs, and the image, profile, network and storage verbs (on that member's root); copy and
# move have their own (the member to copy or move to)
TARGETED = frozenset({
    "launch", "create", "start", "stop", "restart", "freeze", "unfreeze", "delete", "list",
    "info", "exec", "shell", "console", "config", "file", "snapshot", "rename",
    "export", "import", "image", "profile", "network", "storage", "top"})

# commands an admin host runs on a cluster member over SSH; hidden from --help
HIDDEN_COMMANDS: dict[str, str] = {
    "_rpc": "remote:rpc",
    "_stream": "remote:stream",
}

# LXD's short spellings
ALIASES: dict[str, str] = {"ls": "list", "rm": "delete"}

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Containers", ("launch", "create", "list", "info", "start", "stop", "restart", "freeze",
                    "unfreeze", "delete", "exec", "shell", "console", "config", "file")),
    ("Storage", ("snapshot", "copy", "move", "rename", "export", "import")),
    ("Declarative (GitOps)", ("validate", "diff", "apply")),
    ("Host", ("init", "uninit", "profile", "image", "storage", "network", "keys", "completion")),
    ("Monitoring", ("top", "metrics")),
    ("Cluster", ("cluster",)),
    ("Controller (GitOps)", ("controller", "monitor")),
)


# command path -> example command lines (the ``Examples:`` epilog of its --help); a command
# whose docstring has its own examples needs no entry
EXAMPLES: dict[str, tuple[str, ...]] = {
    "init": ("sysmgr init --auto", "sysmgr init --auto --storage-driver dir --network none"),
    "create": ("sysmgr create busybox c1", "sysmgr create busybox web -p default -p web -c limits.cpu=1"),
    "start": ("sysmgr start c1 c2", "sysmgr start --all"),
    "stop": ("sysmgr stop c1", "sysmgr stop --force c1", "sysmgr stop --all --timeout 10"),
    "restart": ("sysmgr restart c1", "sysmgr restart --all --force"),
    "freeze": ("sysmgr freeze c1",),
    "unfreeze": ("sysmgr unfreeze c1",),
    "delete": ("sysmgr delete c1", "sysmgr delete --force c1 c2"),
    "list": ("sysmgr list", "sysmgr list status=running -c ns4mN", "sysmgr list web -f json"),
    "info": ("sysmgr info c1", "sysmgr info c1 --format yaml", "sysmgr info"),
    "shell": ("sysmgr shell c1", "sysmgr shell                         (the admin shell)",
              "sysmgr shell --keep-going < steps.txt"),
    "completion": ("sysmgr completion bash > /etc/bash_completion.d/sysmgr",
                   "sysmgr completion zsh > \"${fpath[1]}/_sysmgr\"",
                   "sysmgr completion fish > ~/.config/fish/completions/sysmgr.fish"),
    "console": ("sysmgr console c1 --show-log",),
    "rename": ("sysmgr rename c1 web1",),
    "import": ("sysmgr import web1.tar.zst", "sysmgr import web1.tar.zst web2 --storage fast"),
    "validate": ("sysmgr validate -f profiles/ -f examples/quickstart/",),
    "diff": ("sysmgr diff -f examples/quickstart/", "sysmgr diff -f site/ --prune --format json"),
    "apply": ("sysmgr apply -f examples/quickstart/", "sysmgr apply -f site/ --prune --yes"),
    "keys": ("sysmgr keys limits.", "sysmgr keys --network ipv4."),
    "monitor": ("sysmgr monitor", "sysmgr monitor --type lifecycle --since 1h --format json",
                "sysmgr monitor --all-members"),
    "config": ("sysmgr config set c1 limits.memory=512MiB", "sysmgr config show c1 --expanded"),
    "config get": ("sysmgr config get c1 limits.memory", "sysmgr config get c1 limits.cpu --expanded"),
    "config set": ("sysmgr config set c1 limits.memory=512MiB limits.cpu=2",
                   "sysmgr config set c1 --property description 'web frontend'"),
    "config unset": ("sysmgr config unset c1 limits.memory",),
    "config show": ("sysmgr config show c1", "sysmgr config show c1 --expanded --format json"),
    "config edit": ("sysmgr config edit c1", "sysmgr config edit c1 < c1.yaml"),
    "config device": ("sysmgr config device add c1 data disk source=/srv/data path=/data",
                      "sysmgr config device list c1"),
    "config device add": ("sysmgr config device add c1 data disk source=/srv/data path=/data",
                          "sysmgr config device add c1 eth1 nic network=sysmgrbr0 name=eth1"),
    "config device get": ("sysmgr config device get c1 data path",),
    "config device list": ("sysmgr config device list c1",),
    "config device override": ("sysmgr config device override c1 root size=10GiB",),
    "config device remove": ("sysmgr config device remove c1 data",),
    "config device set": ("sysmgr config device set c1 data readonly=true",),
    "config device show": ("sysmgr config device show c1 --expanded",),
    "config device unset": ("sysmgr config device unset c1 data readonly",),
    "file": ("sysmgr file push app.conf c1/etc/app.conf", "sysmgr file pull c1/var/log/messages ."),
    "file delete": ("sysmgr file delete c1/tmp/old.log", "sysmgr file delete -f c1/tmp/cache"),
    "file edit": ("sysmgr file edit c1/etc/inittab",),
    "profile": ("sysmgr profile create web", "sysmgr profile set web limits.memory=1GiB"),
    "profile create": ("sysmgr profile create web", "sysmgr profile create small -c limits.memory=256MiB"),
    "profile copy": ("sysmgr profile copy web web-staging",),
    "profile delete": ("sysmgr profile delete web-staging",),
    "profile rename": ("sysmgr profile rename web frontend",),
    "profile list": ("sysmgr profile list", "sysmgr profile list --format yaml"),
    "profile show": ("sysmgr profile show default",),
    "profile get": ("sysmgr profile get web limits.memory",),
    "profile set": ("sysmgr profile set web limits.memory=1GiB",
                    "sysmgr profile set web --property description 'web servers'"),
    "profile unset": ("sysmgr profile unset web limits.memory",),
    "profile edit": ("sysmgr profile edit web", "sysmgr profile edit web < web.yaml"),
    "profile add": ("sysmgr profile add c1 web",),
    "profile remove": ("sysmgr profile remove c1 web",),
    "profile device": ("sysmgr profile device add web eth0 nic network=sysmgrbr0 name=eth0",
                       "sysmgr profile device list web"),
    "profile device add": ("sysmgr profile device add web eth0 nic network=sysmgrbr0 name=eth0",),
    "profile device get": ("sysmgr profile device get default root pool",),
    "profile device list": ("sysmgr profile device list default",),
    "profile device override": ("sysmgr profile device override web eth0 mtu=1400",),
    "profile device remove": ("sysmgr profile device remove web eth0",),
    "profile device set": ("sysmgr profile device set web eth0 mtu=1400",),
    "profile device show": ("sysmgr profile device show default",),
    "profile device unset": ("sysmgr profile device unset web eth0 mtu",),
    "image": ("sysmgr image build busybox", "sysmgr image list"),
    "image import": ("sysmgr image import debian-12.tar.zst --alias debian/12",
                     "sysmgr image import ./rootfs/ --alias myimage",
                     "sysmgr image import ./oci-dir --alias app --target node2"),
    "image list": ("sysmgr image list", "sysmgr image list debian -f json"),
    "image show": ("sysmgr image show busybox",),
    "image info": ("sysmgr image info busybox",),
    "image edit": ("sysmgr image edit busybox",),
    "image export": ("sysmgr image export busybox busybox.tar.zst",),
    "image delete": ("sysmgr image delete busybox",),
    "image alias": ("sysmgr image alias create bb busybox", "sysmgr image alias list"),
    "image alias create": ("sysmgr image alias create stable 3f2a9c1d",),
    "image alias delete": ("sysmgr image alias delete stable",),
    "image alias list": ("sysmgr image alias list",),
    "image alias rename": ("sysmgr image alias rename stable current",),
    "storage": ("sysmgr storage list", "sysmgr storage create fast btrfs size=20GiB"),
    "storage create": ("sysmgr storage create fast btrfs size=20GiB",
                       "sysmgr storage create local dir source=/srv/sysmgr"),
    "storage delete": ("sysmgr storage delete fast",),
    "storage list": ("sysmgr storage list",),
    "storage show": ("sysmgr storage show default",),
    "storage info": ("sysmgr storage info default",),
    "storage get": ("sysmgr storage get default size",),
    "storage set": ("sysmgr storage set default size=40GiB",),
    "storage unset": ("sysmgr storage unset default user.owner",),
    "storage edit": ("sysmgr storage edit default",),
    "storage volume": ("sysmgr storage volume create default data size=1GiB",
                       "sysmgr storage volume attach default data c1 /data"),
    "storage volume create": ("sysmgr storage volume create default data size=1GiB",),
    "storage volume list": ("sysmgr storage volume list", "sysmgr storage volume list default"),
    "storage volume show": ("sysmgr storage volume show default data",),
    "storage volume get": ("sysmgr storage volume get default data size",),
    "storage volume set": ("sysmgr storage volume set default data size=2GiB",),
    "storage volume unset": ("sysmgr storage volume unset default data size",),
    "storage volume delete": ("sysmgr storage volume delete default data",
                              "sysmgr storage volume delete default data/snap0"),
    "storage volume attach": ("sysmgr storage volume attach default data c1 /data",
                              "sysmgr storage volume attach default data c1 shared /srv --readonly"),
    "storage volume detach": ("sysmgr storage volume detach default data c1",),
    "storage volume snapshot": ("sysmgr storage volume snapshot default data",
                                "sysmgr storage volume snapshot default data before-upgrade"),
    "storage volume restore": ("sysmgr storage volume restore default data snap0",),
    "storage volume rename": ("sysmgr storage volume rename default data data-old",),
    "storage volume copy": ("sysmgr storage volume copy default/data fast/data",),
    "storage volume move": ("sysmgr storage volume move default/data fast/data",),
    "network": ("sysmgr network list", "sysmgr network create lab ipv4.address=10.50.0.1/24 ipv4.nat=true"),
    "network create": ("sysmgr network create lab ipv4.address=10.50.0.1/24 ipv4.nat=true",),
    "network delete": ("sysmgr network delete lab",),
    "network list": ("sysmgr network list",),
    "network show": ("sysmgr network show sysmgrbr0",),
    "network info": ("sysmgr network info sysmgrbr0",),
    "network get": ("sysmgr network get sysmgrbr0 ipv4.address",),
    "network set": ("sysmgr network set lab ipv4.nat=false",),
    "network unset": ("sysmgr network unset lab ipv4.dhcp.ranges",),
    "network edit": ("sysmgr network edit lab",),
    "network rename": ("sysmgr network rename lab lab2",),
    "network attach": ("sysmgr network attach lab c1", "sysmgr network attach lab c1 eth1 eth1"),
    "network detach": ("sysmgr network detach lab c1",),
    "network list-leases": ("sysmgr network list-leases sysmgrbr0",),
    "network list-allocations": ("sysmgr network list-allocations",),
    "snapshot": ("sysmgr snapshot create c1", "sysmgr snapshot restore c1 snap0"),
    "snapshot list": ("sysmgr snapshot list c1",),
    "snapshot show": ("sysmgr snapshot show c1 snap0",),
    "snapshot rename": ("sysmgr snapshot rename c1 snap0 base",),
    "snapshot restore": ("sysmgr snapshot restore c1 snap0", "sysmgr snapshot restore c1 snap0 --force"),
    "snapshot delete": ("sysmgr snapshot delete c1 snap0 snap1",),
    "snapshot prune": ("sysmgr snapshot prune", "sysmgr snapshot prune c1"),
    "snapshot auto": ("sysmgr snapshot auto",),
    "cluster": ("sysmgr cluster add node2 ssh://root@10.0.0.2", "sysmgr cluster list"),
    "cluster list": ("sysmgr cluster list",),
    "cluster show": ("sysmgr cluster show node2",),
    "cluster remove": ("sysmgr cluster remove node2",),
    "cluster evacuate": ("sysmgr cluster evacuate node2",),
    "cluster restore": ("sysmgr cluster restore node2",),
    "cluster group": ("sysmgr cluster group add node2 fast", "sysmgr cluster group list"),
    "cluster group add": ("sysmgr cluster group add node2 fast",),
    "cluster group remove": ("sysmgr cluster group remove node2 fast",),
    "cluster group assign": ("sysmgr cluster group assign node2 fast,eu",),
    "cluster group list": ("sysmgr cluster group list",),
    "cluster store": ("sysmgr cluster store show",
                      "sysmgr cluster store migrate --to etcd://10.0.0.1:2379,10.0.0.2:2379"),
    "cluster store show": ("sysmgr cluster store show", "sysmgr cluster store show -f json"),
    "cluster store set": ("sysmgr cluster store set etcd://10.0.0.1:2379,10.0.0.2:2379",
                          "sysmgr cluster store set etcd://etcd1:2379 --cacert /etc/sysmgr/ca.pem "
                          "--cert /etc/sysmgr/me.pem --key /etc/sysmgr/me.key",
                          "sysmgr cluster store set sqlite"),
    "cluster store migrate": ("sysmgr cluster store migrate --to etcd://10.0.0.1:2379",
                              "sysmgr cluster store migrate --to sqlite"),
    "controller": ("sysmgr controller run --source site/", "sysmgr controller status"),
    "controller run": ("sysmgr controller run --source site/ --interval 60s",
                       "sysmgr controller run --source site/ --once",
                       "sysmgr controller run --cluster-store etcd://10.0.0.1:2379 --member node2",
                       "sysmgr controller run --lease-ttl 5s"),
    "controller status": ("sysmgr controller status", "sysmgr controller status --format json"),
    "controller suspend": ("sysmgr controller suspend",),
    "controller resume": ("sysmgr controller resume",),
    "controller install-unit": ("sysmgr controller install-unit --source /srv/site",),
}

def with_examples(cmd: click.Command, path: str) -> click.Command:
    """Give ``cmd`` (named ``path``, e.g. ``"image alias create"``) and its subcommands the
    ``Examples:`` epilog :data:`EXAMPLES` has for them, unless their help has its own."""
    lines = EXAMPLES.get(path)
    # (one command under two names, e.g. ``device set``/``override``: one block)
    if lines and "Examples:" not in (cmd.help or "") + (cmd.epilog or ""):
        block = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
        cmd.epilog = f"{cmd.epilog}\n\n{block}" if cmd.epilog else block
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            with_examples(sub, f"{path} {name}")
    return cmd


class LazyGroup(Group):
    """A group whose subcommands are imported the first time they are needed (a mistyped
    one gets the closest names, aliases included)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.aliases = dict(aliases or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def visible_names(self, ctx: click.Context) -> list[str]:
        # the names, not the commands: suggesting must not import every command module
        return [n for n in self.list_commands(ctx) if n not in HIDDEN_COMMANDS] + \
            list(self.aliases)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = self.aliases.get(cmd_name, cmd_name)
        if cmd_name in self.lazy:
            cmd = self._load(cmd_name)
            if ctx.resilient_parsing and cmd_name in COMMANDS:
                # completing (a shell's TAB, the admin shell): live names and config keys
                from sysmgr.cli import completion

                completion.annotate(cmd, (cmd_name,))
            return cmd
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        module, _, attr = self.lazy[name].partition(":")
        cmd = getattr(importlib.import_module(f"{_PKG}.{module}"), attr)
        if not isinstance(cmd, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{module}:{attr} is not a click command")
        with_examples(cmd, name)
        return add_target_option(cmd) if name in TARGETED else cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the sections of SECTIONS, then anything not placed in one; one column width for all
        names = self.list_commands(ctx)
        width = max(len(n) for n in names)
        limit = formatter.width - 6 - width
        placed = {n for _, members in SECTIONS for n in members}
        for title, members in (*SECTIONS, ("Other commands", tuple(n for n in names if n not in placed))):
            rows = [(n.ljust(width), cmd.get_short_help_str(limit)) for n in members
                    for cmd in [self.get_command(ctx, n)] if cmd is not None and not cmd.hidden]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        # Standalone calls (the console script, click's CliRunner) go through the exit-code
        # mapper; run() itself calls back here with standalone_mode=False.
        if standalone_mode:
            sys.exit(run(args, prog_name=prog_name or "sysmgr", **extra))
        return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)


@click.group(cls=LazyGroup, lazy={**COMMANDS, **HIDDEN_COMMANDS}, aliases=ALIASES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--root", metavar="DIR", envvar="SYSMGR_ROOT", default="/var/lib/sysmgr",
              show_default=True, show_envvar=True, help="Host root directory (state, images, pools).")
@click.option("--debug", is_flag=True, envvar="SYSMGR_DEBUG",
              help="Show tracebacks of errors.")
@click.version_option(__version__, "--version", prog_name="sysmgr", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, root: str, debug: bool) -> None:
    """sysmgr: declarative manager for full-OS system containers.

    LXD's verbs for day-to-day work (launch, list, exec, config, profile...), YAML manifests
    for GitOps (validate, diff, apply).
    """
    app = ctx.ensure_object(AppContext)
    app.root = root
    app.debug = debug
    ctx.call_on_close(app.close)


# -- exit codes -----------------------------------------------------------------------------

def run(argv: Sequence[str] | None = None, *, prog_name: str = "sysmgr",
        show_usage: Callable[[click.UsageError], None] | None = None, **extra: Any) -> int:
    """Run the CLI and return its exit code (click's usage errors: 2, said by
    ``show_usage`` when given (the admin shell's wording); everything else is mapped by
    :func:`sysmgr.cli.exits.guarded`)."""
    app = extra.pop("obj", None) or AppContext()
    args = list(sys.argv[1:] if argv is None else argv)
    if exits.debug_wanted(args):
        app.debug = True  # known before the group callback runs, for errors while parsing

    def command() -> int:
        try:
            rv = cli.main(args, prog_name, standalone_mode=False, obj=app, **extra)
        except click.exceptions.Abort as e:
            if isinstance(e.__context__, KeyboardInterrupt) or \
                    isinstance(e.__cause__, KeyboardInterrupt):
                return 130
            click.echo("Aborted!", err=True)
            return 1
        except click.ClickException as e:  # usage errors: exit 2
            if show_usage is not None and isinstance(e, click.UsageError):
                show_usage(e)
            else:
                e.show()
            return e.exit_code
        return rv if isinstance(rv, int) else 0

    return exits.guarded(app, command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the whole command tree (the console script goes through
    :func:`sysmgr.cli.fast.main`, which calls this for all but the hot verbs' common forms)."""
    sys.exit(run(argv))
