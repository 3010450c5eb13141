"""``client.profiles``: reusable config and devices (LXD's profiles)."""

from __future__ import annotations

from typing import Any, Mapping

from sysmgr.api.base import Manager, Model


class Profile(Model):
    """One profile; edit ``config``/``devices``/``description`` and ``save()``."""

    def _set(self, rec: Any) -> None:
        self.name: str = rec.name
        self.description: str = rec.description
        self.config: dict[str, str] = dict(rec.config)
        self.devices: dict[str, dict[str, str]] = {k: dict(v) for k, v in rec.devices.items()}

    def _fetch(self) -> Any:
        return self._backend.profile_get(self.name)

    @property
    def used_by(self) -> list[str]:
        """The containers that use the profile (read now)."""
        return self._backend.profile_used_by(self.name)

    def save(self) -> None:
        """Store the profile; running containers using it get live keys at once."""
        self._backend.profile_put(self.name, description=self.description, config=self.config,
                                  devices=self.devices, create=False)

    def delete(self) -> None:
        """Delete the profile (refused while a container uses it, and for ``default``)."""
        self._backend.profile_delete(self.name)

    def rename(self, new: str) -> None:
        """Rename the profile (not ``default``); the containers using it follow."""
        self._backend.profile_rename(self.name, new)
        self.name = new
        self.refresh()

    def __repr__(self) -> str:
        return f"<Profile {self.name}>"


class ProfileManager(Manager[Profile]):
    """``client.profiles``."""

    kind = "profile"
    model = Profile

    def create(self, name: str, *, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, description: str = "") -> Profile:
        """Create a profile (values may be given as numbers or booleans: stored as LXD's
        strings)."""
        self._backend.profile_put(name, description=description, config=dict(config or {}),
                                  devices={k: dict(v) for k, v in (devices or {}).items()},
                                  create=True)
        return self.get(name)
