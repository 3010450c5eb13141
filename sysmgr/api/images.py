"""``client.images``: root filesystems known by fingerprint and aliases."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from sysmgr.api.base import Manager, Model, collect_warnings

Progress = Callable[[str], None]
Warn = Callable[[str], None]


class Image(Model):
    """One image: fingerprint, aliases, metadata (``properties``), size and source.

    ``warnings`` holds what the call that returned it had to say (``import_``: the device
    nodes it dropped or kept); it is empty otherwise.
    """

    warnings: tuple[str, ...] = ()

    def __init__(self, client: Any, record: Any) -> None:
        #: the cluster member whose store holds it (None: this client's own host)
        self.location: str | None = getattr(client, "member", None)
        super().__init__(client, record)

    def _set(self, rec: Any) -> None:
        self.fingerprint: str = rec.fingerprint
        self.aliases: list[str] = list(rec.aliases)
        self.metadata: dict[str, Any] = dict(rec.metadata)
        self.properties: dict[str, str] = dict(rec.metadata.get("properties") or {})
        self.size = rec.size
        self.created_at: float = rec.created
        self.source: str = rec.source

    def _fetch(self) -> Any:
        return self._backend.image_get(self.fingerprint)

    @property
    def used_by(self) -> list[str]:
        """The containers made from this image (read now)."""
        return self._backend.image_used_by(self.fingerprint)

    def delete(self) -> None:
        """Delete the image and its volumes."""
        self._backend.image_delete(self.fingerprint)

    def save(self) -> None:
        """Store the edited ``properties`` (``os``, ``release``, ``description``...)."""
        self._set(self._backend.image_set_properties(self.fingerprint, self.properties))

    def export(self, path: str, *, progress: Progress | None = None) -> None:
        """Write the image to ``path`` as an LXD unified tarball (``metadata.yaml`` and
        ``rootfs/``, zstd): what ``image import`` (here, or LXD's) takes back."""
        self._backend.image_export(self.fingerprint, path, progress=progress)

    def __repr__(self) -> str:
        return f"<Image {self.fingerprint[:12]} {self.aliases}>"


class ImageManager(Manager[Image]):
    """``client.images``."""

    kind = "image"
    model = Image

    def build(self, builder: str, *, alias: str | None = None, options: Mapping[str, str] | None = None,
              pool: str | None = None, progress: Progress | None = None) -> Image:
        """Build an image with a builder (``busybox``, ``debian``)."""
        return self._wrap(self._backend.image_build(builder, alias=alias, options=options,
                                                    pool=pool, progress=progress))

    def import_(self, path: str, *, alias: str | None = None, pool: str | None = None,
                progress: Progress | None = None, allow_devices: bool = False,
                warn: Warn | None = None, platform: str | None = None) -> Image:
        """Import an LXD unified tarball, a rootfs tarball or a directory, or an OCI image:
        a layout directory, an oci-archive or a ``docker save`` archive (``platform``
        ``os/arch[/variant]`` picks one of an index's images; default the host's).

        Device nodes in the image are dropped unless ``allow_devices`` (the runtime gives
        every container its own ``/dev``; a node from an image would be a door to the
        host's devices). Each warning (naming the nodes dropped or kept) goes to ``warn``
        as it happens and is in the returned image's ``warnings``.
        """
        said: list[str] = []
        img = self._wrap(self._backend.image_import(path, alias=alias, pool=pool,
                                                    progress=progress,
                                                    allow_devices=allow_devices,
                                                    warn=collect_warnings(said, warn),
                                                    platform=platform))
        img.warnings = tuple(said)
        return img

    def publish(self, ref: str, *, format: str = "image", output: str | None = None,
                alias: str | None = None, progress: Progress | None = None) -> tuple[str, Image | None]:
        """A stopped container or a snapshot (``NAME/SNAP``) as an image (LXD's publish):
        ``format`` ``image`` keeps it in this host's store (with ``alias``); ``oci`` writes an
        oci-archive and ``oci-layout`` a layout directory at ``output``, for OCI tooling
        (skopeo, umoci, podman). Returns (the manifest digest, the stored image or None)."""
        on = self._holder(ref.partition("/")[0])
        digest, rec = on.backend.image_publish(ref, fmt=format, output=output, alias=alias,
                                               progress=progress)
        return digest, (self.model(on, rec) if rec is not None else None)

    def _holder(self, name: str) -> Any:
        """Whose backend publishes container ``name``: on a cluster's admin root the member
        holding it (the image goes to that member's store; an OCI file still comes here),
        else this client's."""
        client = self._client
        if getattr(client, "member", None) is not None or not getattr(client, "clustered", False):
            return client
        from sysmgr.api.containers import MemberClient

        cluster = client.cluster
        member = cluster.locate(name)
        return MemberClient(member, cluster.backend(member), cluster)

    def alias(self, alias: str, ref: str) -> None:
        """Point ``alias`` at the image ``ref``."""
        self._backend.image_alias(alias, ref)

    def delete_alias(self, alias: str) -> None:
        self._backend.image_delete_alias(alias)

    def rename_alias(self, alias: str, new: str) -> None:
        """Rename an alias (the image it points at keeps it under the new name)."""
        self._backend.image_rename_alias(alias, new)

