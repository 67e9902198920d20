"""The pure side of the day-2 commands: their arguments (``config``'s set/unset, ``start``'s listen address), and
``--json``'s shape. Imported by the ``warp`` command itself, so nothing here imports fabric or paramiko."""

from __future__ import annotations

import getpass
import ipaddress
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..scripts import envfile

JSON_FORMAT = 1
MASK = "***"


# -- config arguments -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A change to the hosts' ``shared/environment``: names given values, names removed."""

    sets: dict[str, str] = field(default_factory=dict)
    unsets: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sets or self.unsets)


def _check_name(name: str, given: str) -> None:
    if not envfile._NAME.match(name):
        raise ConfigError(
            f"{given!r}: {name!r} is not an environment variable name",
            "names are letters, digits and _, not starting with a digit (e.g. SENTRY_DSN)",
        )


def _check_value(name: str, value: str) -> None:
    try:
        envfile.render({name: value})
    except ValueError:
        raise ConfigError(
            f"the value of {name} holds a line break or a NUL byte",
            "an environment value is one line of text; the file on the host is unchanged",
        ) from None


def read_secret(name: str) -> str:
    """A value not given on the command line: a line of stdin when it is not a terminal, else asked for unseen."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise ConfigError(f"no value for {name} on stdin", f"give {name}=VALUE, or pipe the value in")
        return line[:-1] if line.endswith("\n") else line
    return getpass.getpass(f"{name}: ")


def parse_change(sets: Iterable[str], unsets: Iterable[str], secret: Callable[[str], str] = read_secret) -> Change:
    """``--set NAME=VALUE`` / ``--set NAME`` (value from ``secret``: stdin or a prompt) and ``--unset NAME``.

    The value is literal, as in the file: everything after the first ``=``, quotes and ``$`` included.
    """
    values: dict[str, str] = {}
    for item in sets:
        name, sep, value = item.partition("=")
        name = name.strip()
        _check_name(name, item if sep else name)
        if not sep:
            value = secret(name)
        _check_value(name, value)
        values[name] = value
    removed = []
    for name in unsets:
        _check_name(name.strip(), name)
        removed.append(name.strip())
    both = sorted(set(values) & set(removed))
    if both:
        raise ConfigError(f"{', '.join(both)} is both set and unset", "give each name once")
    return Change(values, tuple(dict.fromkeys(removed)))


# Options of `warp config` that take a value: the word after them is that value, never `set` or `unset`.
_VALUED = {
    "--host",
    "-H",
    "--path",
    "--identity",
    "--known-hosts",
    "--python",
    "--port",
    "-o",
    "--backend-port",
    "--health",
    "--health-host",
    "--set",
    "--unset",
}


# invoke's own options that take a value (before the task name).
_CORE_VALUED = {"-f", "--config", "-c", "--collection", "-r", "--search-root", "--complete", "--print-completion-script"}


def _first_task(argv: list[str]) -> int | None:
    """Where the first task's name is in ``argv`` (invoke's options before it skipped), or None."""
    skip = False
    for index, word in enumerate(argv):
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word.startswith("-"):
            skip = word in _CORE_VALUED
        else:
            return index
    return None


def rewrite_config_argv(argv: list[str]) -> list[str]:
    """``warp config [options] set A=1 B=2`` / ``unset A B`` (the issue's form) as invoke's ``--set A=1 --set B=2``
    / ``--unset A``: invoke has no variadic positional arguments. Anything else is returned as it is."""
    start = _first_task(argv)
    if start is None or argv[start] not in ("config", "warp.config"):
        return argv
    start += 1
    out, mode, skip, given = argv[:start], "", False, 0
    for index, word in enumerate(argv[start:], start):
        if skip:
            out.append(word)
            skip = False
        elif word == "--":
            out += argv[index:]
            break
        elif word.startswith("-"):
            out.append(word)
            skip = word in _VALUED
        elif mode:
            out += [f"--{mode}", word]
            given += 1
        elif word in ("set", "unset"):
            mode = word
        else:
            out.append(word)
    if mode and not given:
        example = "DEBUG=0" if mode == "set" else "DEBUG"
        raise ConfigError(f"warp config {mode}: no names given", f"e.g. warp config --host web1 {mode} {example}")
    return out


# -- JSON ---------------------------------------------------------------------------------------------------------


def as_json(command: str, hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``--json``'s shape for every command: the format version, the command, whether every host succeeded, a
    result per host (each with its own ``ok``)."""
    return {"format": JSON_FORMAT, "command": command, "ok": all(h.get("ok") for h in hosts.values()), "hosts": hosts}


def results_json(command: str, results: list[Any], details: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON of a deploy, rollback, removal or change: each host's result, and what the operation answered."""
    hosts: dict[str, dict[str, Any]] = {}
    for r in results:
        entry: dict[str, Any] = {"ok": r.ok, "release": r.release or None, "phase": r.phase}
        entry["message" if r.ok else "error"] = r.message
        entry["timings"] = {k: round(v, 2) for k, v in r.timings.items()}
        entry.update((details or {}).get(r.host, {}))
        hosts[r.host] = entry
    return as_json(command, hosts)


# -- warp start: --listen, and --host as a host ---------------------------------------------------------------------


def is_listen_address(value: str) -> bool:
    """Whether a ``warp start --host`` value is what it meant before ``--listen``: ``0.0.0.0``, ``::``, ``localhost``
    or an IP literal, with no ``user@`` or ``:port`` (an IPv6 literal's colons aside)."""
    if value in ("0.0.0.0", "::", "localhost"):
        return True
    if "@" in value or value.startswith("["):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class StartWhere:
    """Where ``warp start`` starts: locally on ``listen`` (None: the setting's default), or on ``hosts``."""

    listen: str | None
    hosts: tuple[str, ...]
    note: str = ""  # the deprecation note for stderr, when a --host value was a listen address


def start_where(listen: str | None, hosts: Iterable[str] | None) -> StartWhere:
    """``warp start``'s ``--listen`` and ``--host`` values: a bare ``--host`` value that is a listen address still
    means one (with a deprecation note); any other ``--host`` names a host whose live release's server starts."""
    given = [h for h in hosts or () if h]
    addresses = [h for h in given if is_listen_address(h)]
    if addresses and len(addresses) != len(given):
        raise ConfigError(
            f"warp start --host {' --host '.join(given)}: {', '.join(addresses)} is a listen address, the rest are hosts",
            "give the local server's address with --listen, and hosts with --host",
        )
    if addresses:
        if len(addresses) > 1 or listen:
            raise ConfigError("warp start listens on one address", "give it once, with --listen ADDRESS")
        note = f"warp start: --host {addresses[0]} is deprecated for the listen address; use --listen {addresses[0]}"
        return StartWhere(addresses[0], (), note)
    if given and listen:
        raise ConfigError("--listen is for a local warp start, --host starts the server on hosts", "give one of them")
    return StartWhere(listen, tuple(given))
