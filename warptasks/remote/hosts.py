"""Which hosts a deploy goes to, and SSH connections to them with host keys checked.

fabric 3.2 accepts any host key out of the box (paramiko's AutoAddPolicy and
no known_hosts loaded), and so do the connections it makes for each ProxyJump
hop. Every connection made here, and each of its hops, checks the key against
known_hosts (:mod:`.known_hosts`) and refuses one it does not know, unless
accepting unknown hosts was asked for.

fabric and paramiko are imported inside the functions that connect: this
module is loaded with the settings by every ``warp build`` and ``warp start``,
which never reach a host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..settings import DeploySettings
    from .known_hosts import HostKeyRefused

_SPEC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class HostTarget:
    """One host: how to reach it over SSH, and its own public port, address and domains if they differ."""

    host: str
    user: str | None = None
    port: int | None = None
    app_port: int | None = None
    listen: str | None = None
    domains: tuple[str, ...] = ()
    # How many of each Procfile process type run on this host, over the deploy's counts: (type, count) pairs, so a
    # clock can run on one host of several ({host: web1, processes: {clock: 1}} with processes: {clock: 0}).
    processes: tuple[tuple[str, int], ...] = ()

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def parse_host(value: Any) -> HostTarget:
    """``name`` (from ~/.ssh/config too), ``user@host:port``, or a mapping from invoke.yaml."""
    if isinstance(value, HostTarget):
        return value
    if isinstance(value, dict):
        if "host" not in value:
            raise ConfigError(f"host entry {value!r} has no 'host'", "write hosts as strings or mappings with a 'host' key")
        base = parse_host(str(value["host"]))
        return HostTarget(
            base.host,
            value.get("user") or base.user,
            int(value["ssh_port"]) if value.get("ssh_port") else base.port,
            int(value["port"]) if value.get("port") else None,
            value.get("listen"),
            parse_names(value.get("domains") or value.get("domain")),
            _host_processes(value.get("processes")),
        )
    match = _SPEC.match(str(value).strip())
    if not match:
        raise ConfigError(f"cannot read host {value!r}", "write it as host, user@host or user@host:port")
    host = match.group("host").strip("[]")
    return HostTarget(host, match.group("user"), int(match.group("port")) if match.group("port") else None)


def _host_processes(value: Any) -> tuple[tuple[str, int], ...]:
    """A host entry's ``processes``: process types only (the web server's size is the deploy's, for every host)."""
    from ..settings import process_counts

    web, types = process_counts("a host's processes", value)
    if web is not None:
        raise ConfigError(
            "a host entry's processes name Procfile process types only", "set the web server's processes for the deploy"
        )
    return tuple(sorted(types.items()))


def parse_names(value: Any) -> tuple[str, ...]:
    """Host names: a list, or one string of names separated by commas or spaces (an environment variable)."""
    if not value:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return tuple(str(item).strip().lower() for item in items if str(item).strip())


def parse_hosts(values: Any) -> list[HostTarget]:
    if not values:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    targets = [parse_host(v) for v in values]
    seen: set[str] = set()
    for target in targets:
        if target.label in seen:
            raise ConfigError(f"host {target.label} is given twice", "name each host once")
        seen.add(target.label)
    return targets


def check_host_keys(connection: Any, known_hosts: str | None, accept_unknown: bool) -> None:
    """Make ``connection`` verify the server's key before it opens (see :mod:`.known_hosts`)."""
    from .known_hosts import check_host_keys as check

    check(connection, known_hosts, accept_unknown)


def connect(target: HostTarget, settings: DeploySettings, config: Any = None) -> Any:
    """A fabric Connection to ``target`` that checks its host key."""
    from fabric import Config, Connection

    connect_kwargs: dict[str, Any] = {}
    if settings.identity:
        connect_kwargs["key_filename"] = [os.path.expanduser(settings.identity)]
    conn = Connection(
        target.host,
        user=target.user or settings.ssh_user or None,
        port=target.port,
        config=config if isinstance(config, Config) else None,
        connect_kwargs=connect_kwargs,
        connect_timeout=int(settings.connect_timeout or 15),
    )
    check_host_keys(conn, settings.known_hosts, settings.accept_unknown_host)
    # fabric makes a Connection per ProxyJump hop (ssh_config), each its own SSH session: each checked alike.
    hop = conn.gateway
    while isinstance(hop, Connection):
        check_host_keys(hop, settings.known_hosts, settings.accept_unknown_host)
        hop = hop.gateway
    return conn


def open_checked(conn: Any) -> None:
    """Open ``conn`` (and its ProxyJump hops), turning a host key that is not trusted into a clear error."""
    from paramiko.ssh_exception import BadHostKeyException

    from .known_hosts import HostKeyRefused

    try:
        conn.open()
    except BadHostKeyException as bad:
        raise ConfigError(
            f"the host key of {bad.hostname} has CHANGED since it was recorded in known_hosts "
            f"(it now presents {bad.key.get_name()} {bad.key.fingerprint})",
            "if the host was really reinstalled, remove its old line from known_hosts; otherwise do not deploy to it",
        ) from None
    except HostKeyRefused as refused:
        raise ConfigError(*_refusal(refused)) from None


def _refusal(refused: HostKeyRefused) -> tuple[str, str]:
    """The message and hint for a key the known_hosts files do not let through."""
    from .known_hosts import HostCertificate, RevokedHostKey

    name, key = refused.hostname, refused.key
    presented = f"{key.get_name()} {key.fingerprint}"
    match = re.fullmatch(r"\[(.*)\]:(\d+)", name)
    scan = f"ssh-keyscan -p {match.group(2)} {match.group(1)}" if match else f"ssh-keyscan {name}"
    if isinstance(refused, RevokedHostKey):
        return (
            f"the host key of {name} ({presented}) is marked @revoked in known_hosts",
            "do not deploy to it; if the host has a new key, list that one in known_hosts",
        )
    if isinstance(refused, HostCertificate):
        return (
            f"{name} is trusted through a @cert-authority line only: host certificates are not supported",
            f"list the host key itself in known_hosts ({scan}, after checking the fingerprint {presented})",
        )
    return (
        f"{name} is not in known_hosts: its identity cannot be checked (it presents {presented})",
        f"add its key ({scan} >> ~/.ssh/known_hosts, after checking the fingerprint) or pass --accept-unknown-host",
    )
