"""The SSH transport to cluster members (paramiko, imported on first use).

One :class:`Connection` per member per command: a paramiko ``SSHClient`` that verifies the
member's host key against the admin root's ``cluster/known_hosts`` with ``RejectPolicy``
(never ``AutoAddPolicy``); an unknown key is refused with its SHA256 fingerprint shown.
``cluster add`` fetches the fingerprint (:func:`fetch_host_key`), the user confirms it, and
:func:`record_host_key` writes it to known_hosts. Timeouts: 3 s to open the TCP connection,
the caller's ``timeout`` for the banner, authentication and each channel opened; keepalive
packets every 15 s. Foreign errors become sysmgr's here: an address that does not answer is
:class:`~sysmgr.errors.MemberUnreachable` (exit 1); a refused key, a bad key file or a host
key mismatch is :class:`~sysmgr.errors.RemoteRejected` (exit 2).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sysmgr.errors import (HostKeyRejected, Issue, MemberUnreachable, RemoteError,
                           RemoteRejected, ValidationError)

if TYPE_CHECKING:  # pragma: no cover - paramiko costs 180 ms of CLI start-up
    import paramiko

CONNECT_TIMEOUT = 3.0
KEEPALIVE = 15
# CTR and CBC ciphers off: every OpenSSH since 6.2 offers AES-GCM, which paramiko runs
# about 1.5x faster (PLATFORM.md, multi-host simulation)
_DISABLED = {"ciphers": ["aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-cbc", "aes192-cbc",
                         "aes256-cbc", "3des-cbc"]}


def _paramiko() -> Any:
    import paramiko  # on first use: only commands that reach a member pay for it

    # paramiko logs failures (with tracebacks) that we turn into one clear error: without
    # a handler of its own, Python's last-resort handler would print them on stderr
    log = logging.getLogger("paramiko")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return paramiko


@dataclass(frozen=True)
class Address:
    """Where a member's sshd listens, and as whom we log in."""

    user: str
    host: str
    port: int = 22

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts (OpenSSH's ``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")


def parse_url(url: str) -> Address:
    """``ssh://user@host[:port]`` (user defaults to root) as an :class:`Address`."""
    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as e:
        raise ValidationError([Issue(f"invalid member URL {url!r}: {e}", path="url")]) from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.password:
        raise ValidationError([Issue(f"invalid member URL {url!r}: expected "
                                     "ssh://user@host[:port]", path="url")])
    return Address(parts.username or "root", parts.hostname, port)


def known_hosts_path(admin_root: str) -> str:
    """The admin root's known_hosts file for its members."""
    return os.path.join(admin_root, "cluster", "known_hosts")


def fingerprint(key: Any) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class HostKey:
    """A member's SSH host key as ``cluster add`` shows it."""

    host: str                 # its name in known_hosts
    type: str                 # "ssh-ed25519", ...
    fingerprint: str          # "SHA256:..."
    key: str                  # base64, as in known_hosts


def fetch_host_key(url: str, *, timeout: float = 5.0) -> HostKey:
    """The host key the member at ``url`` shows (no login): for the user to confirm."""
    addr = parse_url(url)
    paramiko = _paramiko()
    sock = _tcp(addr, timeout, url)
    transport = paramiko.Transport(sock, disabled_algorithms=_DISABLED)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise MemberUnreachable(f"{addr}: no SSH server answered: {e or type(e).__name__}") from None
    finally:
        transport.close()
        sock.close()
    return HostKey(addr.known_hosts_name, key.get_name(), fingerprint(key), key.get_base64())


def record_host_key(admin_root: str, url: str, key: HostKey) -> None:
    """Trust ``key`` for the member at ``url`` from now on (known_hosts, mode 0600)."""
    _rewrite_known_hosts(admin_root, parse_url(url), key)


def forget_host_key(admin_root: str, url: str) -> None:
    """Remove the member at ``url`` from known_hosts (``cluster remove``)."""
    _rewrite_known_hosts(admin_root, parse_url(url), None)


def _rewrite_known_hosts(admin_root: str, addr: Address, key: HostKey | None) -> None:
    paramiko = _paramiko()
    path = known_hosts_path(admin_root)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    keys = paramiko.HostKeys()
    if os.path.exists(path):
        keys.load(path)
    name = addr.known_hosts_name
    while keys.lookup(name) is not None:  # every key type recorded for the host
        del keys[name]
    if key is not None:
        keys.add(name, key.type, paramiko.PKey.from_type_string(key.type,
                                                                 base64.b64decode(key.key)))
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        keys.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tcp(addr: Address, timeout: float, name: str) -> socket.socket:
    """A TCP connection to the member's sshd (MemberUnreachable when it does not answer)."""
    try:
        return socket.create_connection((addr.host, addr.port), timeout=min(CONNECT_TIMEOUT, timeout))
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise MemberUnreachable(f"{name}: cannot reach {addr}: {reason}",
                                hint="is the member up and its sshd running?") from None


def probe(addr: Address, name: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Check that the member's sshd still accepts connections (MemberUnreachable if not):
    a kept connection outlives its sshd, a new command must not."""
    _tcp(addr, timeout, name).close()


def load_key(path: str) -> Any:
    """The private key in ``path`` (RemoteRejected when it cannot be used)."""
    paramiko = _paramiko()
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise RemoteRejected(f"key file {path} is encrypted", hint="use a key without a "
                             "passphrase, or load it into ssh-agent and give no --key") from None
    except (paramiko.SSHException, ValueError, UnicodeDecodeError):
        raise RemoteRejected(f"key file {path} is not a private key") from None
    except OSError as e:
        raise RemoteRejected(f"key file {path}: {e.strerror or e}") from None


class Connection:
    """One authenticated SSH connection to a member; channels on it are opened per use."""

    def __init__(self, name: str, address: Address, client: "paramiko.SSHClient",
                 timeout: float) -> None:
        self.name = name
        self.address = address
        self.client = client
        self.timeout = timeout
        self.host_key = fingerprint(client.get_transport().get_remote_server_key())

    @classmethod
    def open(cls, name: str, url: str, *, admin_root: str, key: str | None = None,
             host_key: str | None = None, timeout: float = 5.0) -> "Connection":
        """Connect and log in; the host key must be in the admin root's known_hosts (and
        be ``host_key`` when one was recorded for the member)."""
        addr = parse_url(url)
        pkey = load_key(key) if key else None
        client, policy = _client(admin_root)
        try:
            sock = _tcp(addr, timeout, name)
            _login(client, addr, pkey, sock, timeout)
        except BaseException as e:
            client.close()
            raise _translate(e, name, addr, policy, key) from None
        conn = cls(name, addr, client, timeout)
        if host_key and conn.host_key != host_key:
            conn.close()
            raise HostKeyRejected(f"{name}: {addr} shows host key {conn.host_key}, not the "
                                  f"{host_key} recorded for it", fingerprint=conn.host_key)
        return conn

    def session(self, command: str, *, pty: tuple[str, int, int] | None = None) -> Any:
        """A channel running ``command`` (a shell command line) on the member; with ``pty``
        ``(term, columns, rows)`` on a pseudo-terminal."""
        paramiko = _paramiko()
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise MemberUnreachable(f"{self.name}: the connection to {self.address} is closed")
        try:
            chan = transport.open_session(timeout=self.timeout)
            if pty is not None:
                chan.get_pty(term=pty[0], width=pty[1], height=pty[2])
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(f"{self.name}: cannot open a session on {self.address}: {e}") from None
        return chan

    def rpc_channel(self, command: str) -> Any:
        """A channel running the member's RPC server ``command``."""
        return self.session(command)

    @property
    def active(self) -> bool:
        """Whether the SSH connection is still up."""
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client(admin_root: str) -> tuple[Any, Any]:
    """An SSHClient that knows the admin root's host keys and refuses any other, and its
    policy object (which keeps the refused key, to show its fingerprint)."""
    paramiko = _paramiko()

    class Reject(paramiko.RejectPolicy):
        refused: Any = None

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            self.refused = key
            super().missing_host_key(client, hostname, key)

    client = paramiko.SSHClient()
    path = known_hosts_path(admin_root)
    if os.path.exists(path):
        client.get_host_keys().load(path)  # not load_host_keys(): nothing is ever saved back
    policy = Reject()
    client.set_missing_host_key_policy(policy)
    return client, policy


def _login(client: Any, addr: Address, pkey: Any, sock: socket.socket, timeout: float) -> None:
    client.connect(addr.host, addr.port, username=addr.user, pkey=pkey, sock=sock,
                   allow_agent=pkey is None, look_for_keys=pkey is None, timeout=timeout,
                   banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
                   disabled_algorithms=_DISABLED)
    client.get_transport().set_keepalive(KEEPALIVE)


def _translate(e: BaseException, name: str, addr: Address, policy: Any, key: str | None
               ) -> BaseException:
    """A connection failure as one clear sysmgr error."""
    paramiko = _paramiko()
    if isinstance(e, (RemoteError, ValidationError, KeyboardInterrupt)):
        return e
    if policy.refused is not None:
        fp = fingerprint(policy.refused)
        return HostKeyRejected(
            f"{name}: unknown host key {fp} ({policy.refused.get_name()}) for {addr}",
            fingerprint=fp, hint=f"if {fp} is the member's key, accept it with "
                                 f"'sysmgr cluster add ... --accept-host-key {fp}'")
    if isinstance(e, paramiko.BadHostKeyException):
        got, want = fingerprint(e.key), fingerprint(e.expected_key)
        return HostKeyRejected(f"{name}: host key of {addr} changed: known_hosts has {want}, "
                               f"the member shows {got}", fingerprint=got,
                               hint="if the member was reinstalled, remove and add it again")
    if isinstance(e, paramiko.AuthenticationException):
        what = f"the key {key}" if key else "the agent's and default keys"
        return RemoteRejected(f"{name}: {addr} refused {what} (authentication failed)",
                              hint="check the member's user and its authorized_keys")
    if isinstance(e, (paramiko.SSHException, OSError, EOFError)):
        return MemberUnreachable(f"{name}: SSH to {addr} failed: {e or type(e).__name__}")
    return e
