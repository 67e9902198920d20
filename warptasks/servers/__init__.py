"""The servers warptasks can start: one module each, and the registry the planners read.

Each module holds one :class:`~warptasks.servers.base.Server`: frozen data
(packages, protocol, sizing, support files, system packages) and its command
function. Planners ask the registry instead of testing names, so adding a
server is a module here and a line in :data:`SERVERS`.

Pure, like detection: nothing here runs or reads anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import gunicorn, mod_wsgi, own, uvicorn, uwsgi, waitress
from .base import (
    BuildContext,
    CapacityRule,
    Check,
    Command,
    Protocol,
    Server,
    StartContext,
    SupportFile,
    SystemNeeds,
    read_check,
    worker_account,
)

if TYPE_CHECKING:
    from ..detect import AppSpec

# In the order help texts and error messages list them.
SERVERS: Mapping[str, Server] = MappingProxyType(
    {s.name: s for s in (mod_wsgi.SERVER, gunicorn.SERVER, uwsgi.SERVER, waitress.SERVER, uvicorn.SERVER, own.SERVER)}
)
AUTO = "auto"  # not a server: the choice of one by the app's protocol
# Other names for servers (warpdrive's among them), kept working.
ALIASES: Mapping[str, str] = MappingProxyType({alias: s.name for s in SERVERS.values() for alias in s.aliases})
# App kinds (see warptasks.detect.APP_KINDS) that are their own server.
OWN_KINDS = ("shell", "script", "procfile")


def server(name: str) -> Server:
    """The server called ``name`` (or one of its aliases)."""
    found = SERVERS.get(ALIASES.get(name, name))
    if found is None:
        raise ConfigError(f"unknown server type {name!r}", f"valid server types: {', '.join((AUTO, *SERVERS))}")
    return found


def names(protocol: Protocol | None = None) -> tuple[str, ...]:
    """Every server's name, or those serving ``protocol``, in registry order."""
    return tuple(s.name for s in SERVERS.values() if protocol is None or s.protocol == protocol)


def normal_name(value: str) -> str:
    """``value`` as the registry spells it: lower case, an alias replaced by its server's name (unknown names kept)."""
    name = value.strip().lower()
    return ALIASES.get(name, name)


def either(words: tuple[str, ...]) -> str:
    """``a, b or c``, as help texts and hints list choices."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


def choices_help() -> str:
    """The --server help text: the servers a user picks (the app's own is detected, not picked)."""
    return either((AUTO, *names("wsgi"), *names("asgi")))


def app_protocol(spec: AppSpec) -> Protocol:
    """What the app needs of a server."""
    if spec.kind in OWN_KINDS:
        return "own"
    return "asgi" if spec.is_asgi else "wsgi"


def default_for(protocol: Protocol) -> Server:
    """The server --server auto picks for an app of ``protocol`` (an image builder, serving any app, prepares for it too)."""
    return next(s for s in SERVERS.values() if s.protocol == protocol and s.default_why)


def resolve_server(spec: AppSpec) -> tuple[str, str]:
    """The server that will run the app, and why."""
    needs = app_protocol(spec)
    if spec.server == AUTO and spec.gunicorn_why and needs == "wsgi":
        return gunicorn.SERVER.name, spec.gunicorn_why
    if spec.server == AUTO:
        default = default_for(needs)
        return default.name, default.default_why.format(target=spec.target)
    chosen = server(spec.server)
    if needs == "own" and chosen.protocol != "own":
        raise ConfigError(
            f"server type {spec.server!r} ({spec.server_why}) cannot serve {spec.target}: it starts its own server",
            "remove the server setting, or remove app.sh/app.py so the app itself is detected",
        )
    if chosen.protocol == "own" and needs != "own":
        raise ConfigError(
            f"server type {spec.server!r} ({spec.server_why}) needs an app.sh, app.py or Procfile", "choose a WSGI server instead"
        )
    if needs == "asgi" and chosen.protocol != "asgi":
        raise ConfigError(
            f"{spec.target} is an ASGI app; {spec.server} ({spec.server_why}) serves only WSGI",
            f"use --server {either(names('asgi'))} (or auto), or provide a wsgi.py",
        )
    if needs == "wsgi" and chosen.protocol != "wsgi":
        raise ConfigError(f"{spec.server} serves ASGI apps; {spec.target} is WSGI", f"choose {either(names('wsgi'))}")
    return spec.server, spec.server_why


__all__ = [
    "ALIASES",
    "AUTO",
    "OWN_KINDS",
    "SERVERS",
    "BuildContext",
    "CapacityRule",
    "Check",
    "Command",
    "Protocol",
    "Server",
    "StartContext",
    "SupportFile",
    "SystemNeeds",
    "app_protocol",
    "choices_help",
    "default_for",
    "either",
    "names",
    "normal_name",
    "read_check",
    "resolve_server",
    "server",
    "worker_account",
]
