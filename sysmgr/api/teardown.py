"""``client.uninit()``: tear a whole host root down, in the one order that works.

Each step removes what holds the next one: containers (with their snapshots) hold images,
custom volumes, nics and their pools; profiles' devices name networks, pools and volumes;
custom volumes and images live on pools; a loop pool's mount and loop device go with its
pool; then the root's directory. Every step goes through the same managers the CLI uses,
on this root's own backend: on a cluster's admin root only the admin root's own objects go,
never a member's (each member is torn down on its own root).

The first failure stops the teardown (later steps would fail on what is left); what was done
is said as it happens, so running it again continues where it stopped.
"""

from __future__ import annotations

from typing import Any, Callable

from sysmgr.api.containers import ContainerManager

Progress = Callable[[str], None]


def uninit(client: Any, progress: Progress | None = None) -> list[str]:
    """Delete every container, custom volume, network, image and pool of ``client``'s own
    root, the profiles' devices, then the root directory; the lines said, in order."""
    done: list[str] = []

    def say(line: str) -> None:
        done.append(line)
        if progress is not None:
            progress(line)

    backend = client.local_backend
    if client.member is not None:
        from sysmgr.errors import ValidationError

        raise ValidationError("uninit tears down this root only, not a cluster member's",
                              hint=f"run sysmgr uninit on {client.member}'s own root")
    if not backend.initialised():
        say(f"Root {client.root} is not initialised: nothing to tear down")
        return done
    # the root's lock for the whole teardown: a command at work on the root (a launch)
    # finishes first, and none starts on a half torn-down root (each step takes it again:
    # re-entrant on the backend's one Host)
    with backend.host.locked(on_wait=lambda who: say(f"Waiting for the lock of root "
                                                     f"{client.root}, held by {who}")):
        _teardown(client, backend, say)
    return done


def _teardown(client: Any, backend: Any, say: Progress) -> None:
    # the root's own containers (an admin root's ``client.containers`` spans its members)
    for c in ContainerManager(_Own(client)).all():
        c.delete(force=True)
        say(f"Container {c.name} deleted")
    for p in client.profiles.all():
        if p.devices:
            p.devices = {}
            p.save()
            say(f"Profile {p.name}: devices removed")
    # each kind once nothing holds it any more: volumes and images before their pools
    kinds: tuple[tuple[Any, Callable[[Any], str]], ...] = (
        (client.storage_volumes, lambda v: f"Storage volume {v.pool}/{v.name}"),
        (client.networks, lambda n: f"Network {n.name}"),
        (client.images, lambda i: f"Image {i.fingerprint[:12]}"),
        (client.storage_pools, lambda p: f"Storage pool {p.name}"),
    )
    for manager, label in kinds:
        for obj in manager.all():
            obj.delete()
            say(f"{label(obj)} deleted")
    say(backend.root_remove())


class _Own:
    """What a manager needs of a client (``backend``), bound to the root's own backend."""

    def __init__(self, client: Any) -> None:
        self.backend = client.local_backend
        self.member = None
