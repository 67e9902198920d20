"""known_hosts files read as OpenSSH reads them, and host keys accepted by appending one line.

paramiko's own handling is what this replaces: its AutoAddPolicy saves its
whole table over the file it loaded last (comments lost, lines split and
duplicated, hosts accepted in parallel overwriting each other's), and its
loader fails for every host on a ``@cert-authority`` or ``@revoked`` line.

Here the files are only read: ``/etc/ssh/ssh_known_hosts``, ``~/.ssh/known_hosts``
and the one given (``--known-hosts``). An accepted key (``--accept-unknown-host``)
is one line appended, under a lock, to the given file, else to
``~/.ssh/known_hosts``: what ``ssh -o UserKnownHostsFile=FILE -o
StrictHostKeyChecking=accept-new`` does, so the next deploy finds it where the
first one was told to look.

Understood: plain and hashed (``|1|``) names, ``*``/``?`` wildcards, ``!``
negations, ``[host]:port``, and ``@revoked``: a revoked key is refused for the
hosts its line names, even when another line lists it. Not supported:
``@cert-authority`` (paramiko cannot check host certificates); a host that
only such a line vouches for is refused, saying so.
"""

from __future__ import annotations

import fcntl
import hmac
import os
import re
from dataclasses import dataclass
from typing import Any

from paramiko import HostKeys, MissingHostKeyPolicy, PKey
from paramiko.hostkeys import HostKeyEntry
from paramiko.ssh_exception import SSHException

from ..errors import ConfigError

SYSTEM_FILE = "/etc/ssh/ssh_known_hosts"
USER_FILE = "~/.ssh/known_hosts"
MARKERS = ("@revoked", "@cert-authority")


class HostKeyRefused(SSHException):
    """The server's key for ``hostname`` cannot be trusted; ``str()`` says why."""

    def __init__(self, message: str, hostname: str, key: PKey) -> None:
        super().__init__(message)
        self.hostname = hostname
        self.key = key


class UnknownHostKey(HostKeyRefused):
    pass


class RevokedHostKey(HostKeyRefused):
    pass


class HostCertificate(HostKeyRefused):
    pass


@dataclass(frozen=True)
class Entry:
    """One known_hosts line: its marker ("" for none), host patterns and key."""

    marker: str
    names: tuple[str, ...]
    key: PKey


def host_name(host: str, port: int | None) -> str:
    """The name known_hosts lists a host under (and paramiko looks it up by): ``host``, or ``[host]:port`` off port 22."""
    return host if not port or int(port) == 22 else f"[{host}]:{port}"


def parse(text: str) -> list[Entry]:
    """The lines of a known_hosts file that paramiko can use; comments and lines it cannot read are skipped, as ssh does."""
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
            if marker not in MARKERS:
                continue
        try:
            entry = HostKeyEntry.from_line(re.sub(r"[ \t]+", " ", line))
        except Exception:
            entry = None  # a damaged line (bad base64, truncated key data): ssh skips it too, and so does every other host

        if entry is not None and entry.key is not None:
            entries.append(Entry(marker, tuple(entry.hostnames), entry.key))
    return entries


def _pattern(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            return hmac.compare_digest(HostKeys.hash_host(name, pattern), pattern)
        except (AssertionError, ValueError):
            return False  # a damaged hashed name matches nothing
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, name.lower()) is not None


def matches(names: tuple[str, ...], name: str) -> bool:
    """Whether a line's host patterns take in ``name``: one pattern matches and no ``!`` pattern does."""
    if any(_pattern(p[1:], name) for p in names if p.startswith("!")):
        return False
    return any(_pattern(p, name) for p in names if not p.startswith("!"))


@dataclass(frozen=True)
class KnownHosts:
    """What the known_hosts files say, and where an accepted key goes."""

    entries: tuple[Entry, ...]
    append_to: str

    @classmethod
    def load(cls, given: str | None) -> KnownHosts:
        given = os.path.expanduser(given) if given else None
        entries: list[Entry] = []
        for path in (SYSTEM_FILE, os.path.expanduser(USER_FILE), given):
            if path and os.path.exists(path):
                try:
                    with open(path, encoding="utf-8", errors="replace") as handle:
                        entries += parse(handle.read())
                except OSError as error:
                    raise ConfigError(f"cannot read known_hosts file {path}: {error}", "make it readable") from None
        return cls(tuple(entries), given or os.path.expanduser(USER_FILE))

    def revoked(self, name: str, key: PKey) -> bool:
        return any(e.marker == "@revoked" and e.key == key and matches(e.names, name) for e in self.entries)

    def keys_for(self, name: str) -> list[PKey]:
        """The keys ``name`` may present: listed for it and not revoked."""
        listed = [e.key for e in self.entries if not e.marker and matches(e.names, name)]
        return [key for key in listed if not self.revoked(name, key)]

    def certified(self, name: str) -> bool:
        return any(e.marker == "@cert-authority" and matches(e.names, name) for e in self.entries)


def append_key(path: str, name: str, key: PKey) -> None:
    """Add one ``name key`` line to ``path``, unless it is there: appended under a lock, the rest left as it was."""
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # Deploys to several hosts accept keys at once, and other deploys may too: one writer at a time.
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(path, "rb") as handle:
            text = handle.read()
        if any(not e.marker and e.key == key and matches(e.names, name) for e in parse(text.decode(errors="replace"))):
            return
        os.write(fd, (b"\n" if text and not text.endswith(b"\n") else b"") + line)
    finally:
        os.close(fd)  # releases the lock


class CheckedPolicy(MissingHostKeyPolicy):
    """What to do with a host the known_hosts files list no usable key for."""

    def __init__(self, known: KnownHosts, accept_unknown: bool) -> None:
        self.known = known
        self.accept_unknown = accept_unknown

    def missing_host_key(self, client: Any, hostname: str, key: PKey) -> None:
        if self.known.revoked(hostname, key):
            raise RevokedHostKey(f"the {key.get_name()} key of {hostname} is revoked in known_hosts", hostname, key)
        if self.known.certified(hostname):
            # Accepting it blindly would defeat what the @cert-authority line asks for: refused even with accept_unknown.
            raise HostCertificate(f"{hostname} is vouched for by a @cert-authority line only", hostname, key)
        if not self.accept_unknown:
            raise UnknownHostKey(f"Server {hostname!r} not found in known_hosts", hostname, key)
        append_key(self.known.append_to, hostname, key)


def check_host_keys(connection: Any, known_hosts: str | None, accept_unknown: bool) -> None:
    """Make ``connection`` verify the server's key against the known_hosts files before it opens."""
    known = KnownHosts.load(known_hosts)
    name = host_name(connection.host, connection.port)
    table = connection.client.get_host_keys()
    for key in known.keys_for(name):
        listed = table.lookup(name)
        # paramiko keeps one key per type and host, and asks the server for the first type it holds.
        if listed is None or key.get_name() not in listed:
            table.add(name, key.get_name(), key)
    connection.client.set_missing_host_key_policy(CheckedPolicy(known, accept_unknown))
