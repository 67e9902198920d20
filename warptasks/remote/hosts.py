"""Which hosts a deploy goes to, and SSH connections to them with host keys checked.

fabric 3.2 accepts any host key out of the box (paramiko's AutoAddPolicy and
no known_hosts loaded); every connection made here loads known_hosts and
refuses a key it does not know, unless accepting unknown hosts was asked for.

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

_SPEC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class HostTarget:
    """One host: how to reach it over SSH, and its own public port if it differs."""

    host: str
    user: str | None = None
    port: int | None = None
    app_port: int | None = None
    listen: str | None = None

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
        )
    match = _SPEC.match(str(value).strip())
    if not match:
        raise ConfigError(f"cannot read host {value!r}", "write it as host, user@host or user@host:port")
    host = match.group("host").strip("[]")
    return HostTarget(host, match.group("user"), int(match.group("port")) if match.group("port") else None)


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
    """Make ``connection`` verify the server's key before it opens."""
    from paramiko import AutoAddPolicy, RejectPolicy

    client = connection.client
    client.load_system_host_keys()
    path = os.path.expanduser(known_hosts) if known_hosts else None
    if path and os.path.exists(path):
        client.load_host_keys(path)
    client.set_missing_host_key_policy(AutoAddPolicy() if accept_unknown else RejectPolicy())


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
    return conn


def open_checked(conn: Any) -> None:
    """Open ``conn``, turning an unknown or changed host key into a clear error."""
    from paramiko.ssh_exception import BadHostKeyException, SSHException

    try:
        conn.open()
    except BadHostKeyException as bad:
        raise ConfigError(
            f"the host key of {conn.host} has CHANGED since it was recorded in known_hosts ({bad.key.get_name()})",
            "if the host was really reinstalled, remove its old line from known_hosts; otherwise do not deploy to it",
        ) from None
    except SSHException as error:
        if "not found in known_hosts" in str(error):
            raise ConfigError(
                f"{conn.host} is not in known_hosts: its identity cannot be checked",
                "add its key (ssh-keyscan HOST >> ~/.ssh/known_hosts, after checking the fingerprint) "
                "or pass --accept-unknown-host",
            ) from None
        raise
