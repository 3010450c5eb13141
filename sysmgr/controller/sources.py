"""Where the controller reads its manifests: directories (watched with inotify) and git
working trees (``git:DIR[@BRANCH]``: fetched and reset to the remote branch on every
interval, the applied commit recorded).

A source's *revision* says what it holds: a git commit, or for a directory a digest of its
manifest files' names, sizes and modification times (for the status: "applied revision").
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from sysmgr._util import durations, proc
from sysmgr.errors import CommandFailed, SysmgrError, ValidationError

MANIFEST_EXT = (".yaml", ".yml")


def parse_interval(text: str) -> float:
    """An interval (``5s``, ``2m``, ``1h``, ``500ms``, plain seconds) in seconds, > 0."""
    try:
        seconds = durations.parse_duration(text)
    except ValueError as e:
        raise ValidationError(str(e)) from None
    if seconds <= 0:
        raise ValidationError(f"invalid interval {text!r}: it must be more than 0")
    return seconds


@dataclass
class Source:
    """One source of manifests."""

    kind: str             # "dir" or "git"
    path: str
    branch: str = ""      # git: the branch to follow ("" = the upstream of HEAD, or none)

    @classmethod
    def parse(cls, spec: str) -> "Source":
        """``DIR`` or ``git:DIR[@BRANCH]``; the directory must exist."""
        kind, path, branch = "dir", spec, ""
        if spec.startswith("git:"):
            kind = "git"
            path, _, branch = spec[4:].partition("@")
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            raise ValidationError(f"source {spec!r}: {path} is not a directory")
        if kind == "git" and not os.path.isdir(os.path.join(path, ".git")):
            raise ValidationError(f"source {spec!r}: {path} is not a git working tree")
        return cls(kind, path, branch)

    def __str__(self) -> str:
        return f"git:{self.path}" + (f"@{self.branch}" if self.branch else "") \
            if self.kind == "git" else self.path

    def files(self) -> list[str]:
        """The manifest files it holds (hidden directories left out), sorted."""
        out = []
        for top, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            out += [os.path.join(top, f) for f in sorted(files) if f.endswith(MANIFEST_EXT)]
        return out

    def revision(self) -> str:
        if self.kind == "git":
            return self._git("rev-parse", "HEAD").strip()
        h = hashlib.sha256()
        for f in self.files():
            st = os.stat(f)
            h.update(f"{os.path.relpath(f, self.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "dir:" + h.hexdigest()[:12]

    def sync(self) -> None:
        """A git source: fetch and reset the working tree to the branch followed (its
        remote's, when it has a remote); a directory: nothing."""
        if self.kind != "git":
            return
        remotes = self._git("remote").split()
        if not remotes:
            if self.branch:
                self._git("checkout", "-q", "--force", self.branch)
            return
        remote = "origin" if "origin" in remotes else remotes[0]
        self._git("fetch", "-q", remote)
        ref = f"{remote}/{self.branch}" if self.branch else "@{upstream}"
        self._git("reset", "-q", "--hard", ref)

    def _git(self, *args: str) -> str:
        try:
            return proc.run(["git", "-C", self.path, *args]).stdout.decode(errors="replace")
        except CommandFailed as e:
            raise SysmgrError(f"source {self}: git {args[0]} failed: "
                              f"{(e.stderr or e.message).strip()}") from None
