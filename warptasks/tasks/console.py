"""warp logs, and the remote form of exec, shell and the hook tasks: thin tasks over :mod:`warptasks.remote.console`.

``warp exec --host web1 -- python manage.py check`` (or ``fab -H web1
warp.exec -c 'python manage.py check'``: what follows ``--`` is fab's own)
runs the command on the host's live release instead of here; :func:`on_hosts` says whether a local task was asked for that, and
:func:`run_on_hosts` does it. fabric is imported only when a task reaches a host.
"""

from __future__ import annotations

import sys
from typing import Any

from invoke.exceptions import Exit

from ..errors import ConfigError
from .flags import warp_task
from .remote import HELP, _fabric_config, _reach, _settings
from .report import reported

REACH_HELP = {k: HELP[k] for k in ("path", "identity", "known-hosts", "accept-unknown-host", "python")}
ON_HOSTS_HELP = {
    "host": "run it on this host's live release instead of here (repeatable; as warp deploy names hosts)",
    **REACH_HELP,
    "as_root": "on a host deployed as root, run it as root instead of the app's own account (the server's)",
}


def on_hosts(c: Any, host: list[str] | None) -> bool:
    """Whether a local task runs on hosts instead: --host given, or ``c`` is fabric's Connection (``fab -H``)."""
    return bool(host) or hasattr(c, "original_host")


def refuse_as_root_here(c: Any, host: list[str] | None, as_root: bool) -> None:
    """``--as-root`` is for a command on a host: here, the command runs as whoever runs warp."""
    if as_root and not on_hosts(c, host):
        with reported():
            raise ConfigError("--as-root is for a command on a host", "give --host, or run it here without --as-root")


def run_on_hosts(
    c: Any,
    host: list[str] | None,
    action: str,
    argv: tuple[str, ...] = (),
    *,
    interactive: bool = False,
    path: str | None = None,
    identity: str | None = None,
    known_hosts: str | None = None,
    accept_unknown_host: bool = False,
    python: str | None = None,
    as_root: bool = False,
) -> None:
    """Run ``action`` on each host's live release (see :func:`warptasks.remote.console.run_recorded`); exit with its
    code."""
    from ..remote.console import run_recorded

    with reported():
        reach = _reach(path, None, None, identity, known_hosts, accept_unknown_host, python)
        targets, settings = _settings(c, host, **reach)
        config = _fabric_config(c)
        code = run_recorded(targets, settings, action, argv, config=config, interactive=interactive, as_root=as_root)
    if code:
        raise Exit(code=code)


def terminal() -> bool:
    """Whether a person is at this command: both its input and its output are a terminal (a PTY on the host then)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


LOGS_HELP = {
    "host": "a host whose logs to show (repeatable; as warp deploy names hosts)",
    "lines": "show the last N lines (default 100; with several sources, of them all together)",
    "since": "only lines written since then: a duration (30s, 10m, 2h, 1d) or a UTC time (2026-12-01T16:30)",
    "grep": "only lines matching this regular expression (Python's syntax; applied on the host)",
    "release": "the release whose logs to show (default: the live one; warp status lists them)",
    "follow": "keep printing new lines as they come, until Ctrl-C",
    **REACH_HELP,
}


@warp_task(
    iterable=["host"],
    help=LOGS_HELP,
)
def logs(
    c,
    host=None,
    lines=100,
    since=None,
    grep=None,
    release=None,
    follow=False,
    path=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
):
    """Show the live release's server, worker and front proxy log lines on the hosts: -f follows, --since, --grep."""
    from ..remote.console import logs as show_logs

    with reported():
        reach = _reach(path, None, None, identity, known_hosts, accept_unknown_host, python)
        targets, settings = _settings(c, host, **reach)
        code = show_logs(
            targets,
            settings,
            lines=int(lines),
            since=since,
            grep=grep,
            release=release,
            follow=bool(follow),
            config=_fabric_config(c),
        )
    if code:
        raise Exit(code=code)
