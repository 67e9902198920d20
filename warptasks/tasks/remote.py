"""Thin invoke tasks over :mod:`warptasks.remote.deploy`: deploy, status, rollback, remove.

``inv warp.deploy --host web1 --host deploy@web2:2222`` deploys to several
hosts together (in parallel, switching only when all succeed);
``fab -H web1,web2 warp.deploy`` runs the task once per host with fabric's
Connection as ``c``, and deploys to that host.

The deploy modules (and with them fabric and paramiko) are imported only when a
task runs: the collection is loaded by every ``warp build`` and ``warp start``.
"""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Any

from invoke.exceptions import Exit

from ..errors import ConfigError
from ..remote.hosts import HostTarget
from ..settings import DeploySettings, Settings
from .flags import warp_task
from .report import reported

HELP = {
    "host": "a host to deploy to: name (from ~/.ssh/config too), user@host or user@host:port; repeatable",
    "path": "the deploy folder on the hosts (default /srv/app)",
    "port": "the public port of the app without HTTPS (default 8080); its servers use the next two",
    "listen": "the address the front listens on (default: all of the host's)",
    "proxy": "caddy (default: one Caddy per host, run by warptasks) or none (your own proxy reads shared/upstream)",
    "domain": "a host name of the app, served over HTTPS with a certificate from ACME (repeatable)",
    "no-tls": "serve the --domain names over plain HTTP on --port",
    "acme-ca": "the ACME directory URL (default: Let's Encrypt)",
    "acme-email": "the e-mail address given to the ACME CA",
    "tls-cert": "a local certificate file (PEM, with its chain) for the domains, instead of ACME",
    "tls-key": "the local private key file of --tls-cert",
    "path-prefix": "serve the app under this path only (e.g. /shop), passed on as is",
    "backend-port": "the first of the two loopback ports the app's servers alternate on (default: --port + 1)",
    "project": "the project folder to ship (default: the current folder)",
    "server": "auto, mod_wsgi, gunicorn, uwsgi, waitress or uvicorn",
    "wheels": "build the dependencies as wheels here and ship them: the hosts need no package index",
    "keep": "how many releases to keep on each host (default 5)",
    "health": "a URL path the new release must answer with 2xx or 3xx before switching (default: / may answer "
    "anything below 500); a rollback reuses the release's own",
    "health-host": "the Host header of that check (a name in Django's ALLOWED_HOSTS)",
    "allow-partial": "switch the hosts that succeeded even when another failed",
    "break-lock": "take the deploy lock even if another deploy holds it (after checking it is stale)",
    "identity": "the SSH private key file",
    "known-hosts": "a known_hosts file checked besides ~/.ssh/known_hosts",
    "accept-unknown-host": "accept (and record) host keys not in known_hosts",
    "env-file": "a local file of secrets uploaded as shared/environment (mode 0600)",
    "python": "the host's Python command (default python3)",
    "no-migrate": "do not run the migrate hook / manage.py migrate",
    "force": "deploy even to hosts whose live release has exactly this source",
    "no-systemd": "run servers as processes with a pidfile even where systemd runs",
    "upload": "auto (rsync when both ends have it, else an archive over SFTP), rsync or sftp",
    "user": "as root: the account the app runs as (default: an account of its own, made by the deploy; "
    "www-data: every app as www-data, as before)",
    "group": "as root: the group the app runs as (default: the --user's own)",
    "processes": "TYPE=N: how many of a Procfile process type run on each host (default 1; 0: none); a bare number "
    "or web=N: the web server's worker processes; repeatable",
}


def _settings(c: Any, host: list[str] | None, **given: Any) -> tuple[list[HostTarget], DeploySettings]:
    """The hosts (--host, else fab -H, else the configured ones) and the deploy settings."""
    settings = DeploySettings.resolve(c.config, hosts=host, **given)
    if not host and hasattr(c, "original_host"):  # fab -H: fabric made a Connection for one host
        return [HostTarget(c.original_host, c.user, c.port)], settings
    return list(settings.hosts), settings


@warp_task(
    iterable=["host", "domain", "processes"],
    help=HELP | {"json": "print the result as JSON (progress on stderr)"},
)
def deploy(
    c,
    host=None,
    path=None,
    port=None,
    listen=None,
    proxy=None,
    domain=None,
    no_tls=False,
    acme_ca=None,
    acme_email=None,
    tls_cert=None,
    tls_key=None,
    path_prefix=None,
    backend_port=None,
    project=None,
    server=None,
    wheels=False,
    keep=None,
    health=None,
    health_host=None,
    allow_partial=False,
    break_lock=False,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    env_file=None,
    python=None,
    no_migrate=False,
    force=False,
    no_systemd=False,
    upload=None,
    processes=None,
    user=None,
    group=None,
    json=False,
):
    """Ship the project to the hosts, build it there with the local plan, and switch with no downtime."""
    from ..remote.deploy import deploy as deploy_to
    from ..remote.fleet import summary

    with reported():
        targets, settings = _settings(
            c,
            host,
            **_reach(path, health, health_host, identity, known_hosts, accept_unknown_host, python),
            port=_num(port),
            listen=listen,
            proxy=proxy,
            domains=domain,
            tls=False if no_tls else None,
            acme_ca=acme_ca,
            acme_email=acme_email,
            tls_cert=tls_cert,
            tls_key=tls_key,
            path_prefix=path_prefix,
            backend_port=_num(backend_port),
            server=server,
            wheels=_flag(wheels),
            keep=_num(keep),
            allow_partial=_flag(allow_partial),
            break_lock=_flag(break_lock),
            env_file=env_file,
            migrate=False if no_migrate else None,
            force=_flag(force),
            systemd=False if no_systemd else None,
            upload=upload,
            processes=processes or None,
            user=user,
            group=group,
        )
        project = Settings.resolve(c.config, project=project).project
        results = deploy_to(targets, project, settings, say=_say(json), config=_fabric_config(c))
        _finish(summary(results), results, "deploy", json=json)


JSON_HELP = "print the result as JSON: {format, command, ok, hosts: {label: ...}} (progress on stderr)"
_REACH = ("host", "path", "health", "health-host", "identity", "known-hosts", "accept-unknown-host", "python")


@warp_task(iterable=["host"], help={k: HELP[k] for k in _REACH} | {"json": "print JSON"})
def status(
    c,
    host=None,
    path=None,
    health=None,
    health_host=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
    json=False,
):
    """Each host's live release, its server's pid, the front proxy, and what the app answers."""
    from ..remote.commands import as_json
    from ..remote.rollback import status as status_of

    with reported():
        reach = _reach(path, health, health_host, identity, known_hosts, accept_unknown_host, python)
        targets, settings = _settings(c, host, **reach)
        answers = status_of(targets, settings, config=_fabric_config(c))
        if json:
            print(jsonlib.dumps(as_json("status", {k: dict(v, ok="error" not in v) for k, v in answers.items()}), indent=2))
        else:
            for label, state in answers.items():
                print(_describe(label, state))
        if any("error" in a for a in answers.values()):
            raise Exit("warp: error: status could not be read from every host", code=1)


@warp_task(
    iterable=["host"],
    help={k: HELP[k] for k in (*_REACH, "break-lock", "allow-partial", "no-systemd")}
    | {"to": "the release id to go back to (one warp status lists)", "json": JSON_HELP},
)
def rollback(
    c,
    host=None,
    path=None,
    to=None,
    health=None,
    health_host=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
    break_lock=False,
    allow_partial=False,
    no_systemd=False,
    json=False,
):
    """Go back to the previous good release: started, health-checked, then switched."""
    from ..remote.fleet import summary
    from ..remote.rollback import rollback as roll_back

    with reported():
        targets, settings = _settings(
            c,
            host,
            **_reach(path, health, health_host, identity, known_hosts, accept_unknown_host, python),
            break_lock=_flag(break_lock),
            allow_partial=_flag(allow_partial),
            systemd=False if no_systemd else None,
        )
        results = roll_back(targets, settings, say=_say(json), to=to, config=_fabric_config(c))
        _finish(summary(results), results, "rollback", json=json)


@warp_task(
    iterable=["host"],
    help={k: HELP[k] for k in _REACH if k not in ("health", "health-host")}
    | {"purge": "also delete the deploy path's releases, environments, secrets and logs on the hosts", "json": JSON_HELP},
)
def remove(
    c, host=None, path=None, identity=None, known_hosts=None, accept_unknown_host=False, python=None, purge=False, json=False
):
    """Take the app off the hosts: its routes off the front, its servers stopped (--purge: its files deleted too)."""
    from ..remote.fleet import summary
    from ..remote.rollback import remove as remove_from

    with reported():
        reach = _reach(path, None, None, identity, known_hosts, accept_unknown_host, python)
        targets, settings = _settings(c, host, **reach)
        results = remove_from(targets, settings, say=_say(json), purge=bool(purge), config=_fabric_config(c))
        _finish(summary(results), results, "removal", json=json, command="remove")


def _reach(path, health, health_host, identity, known_hosts, accept_unknown_host, python) -> dict[str, Any]:
    """The options every task that reaches the hosts shares (invoke needs them spelt out in each signature)."""
    return {
        "path": path,
        "health": health,
        "health_host": health_host,
        "identity": identity,
        "known_hosts": known_hosts,
        "accept_unknown_host": _flag(accept_unknown_host),
        "python": python,
    }


def _finish(summary: str, results: list[Any], what: str, *, json: bool = False, command: str = "", details: Any = None) -> None:
    """The summary (or, with --json, the results as JSON); a non-zero exit when a host failed."""
    from ..remote.commands import results_json

    if json:
        print(jsonlib.dumps(results_json(command or what, results, details), indent=2))
    else:
        print(summary)
    failed = [r.host for r in results if not r.ok]
    if failed:
        raise Exit(f"warp: error: the {what} failed on " + ", ".join(failed), code=1)


def _say(json: bool) -> Any:
    """Progress lines: on stdout, or on stderr when stdout carries --json's JSON."""
    out = sys.stderr if json else sys.stdout
    return lambda text: print(text, file=out, flush=True)


def _flag(value: bool) -> bool | None:
    """A flag that is off says nothing: invoke.yaml may still turn it on."""
    return True if value else None


def _num(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _fabric_config(c: Any) -> Any:
    from fabric import Config

    return c.config if isinstance(c.config, Config) else None


def _describe(label: str, state: dict[str, Any]) -> str:
    """The host's state as ``warp status`` lines, each escaped as ``warp audit`` escapes an entry (the agent's
    ``_printable``): who stopped the server, the host's name, a release's id, an error's text... come from the host's
    files, and could otherwise put escape sequences or a forged line on the operator's terminal."""
    from ..scripts.agent import _printable

    return "\n".join(_printable(line.encode("utf-8", "surrogatepass")).decode("utf-8") for line in _status_lines(label, state))


def _status_lines(label: str, state: dict[str, Any]) -> list[str]:
    if "error" in state:
        return [f"{label}: ERROR {state['error']}"]
    live = next((r for r in state["releases"] if r["id"] == state["current"]), None)
    front = state.get("front") or {}
    caddy = state.get("caddy")
    lines = [f"{label} ({state.get('hostname')}): current {state['current'] or '(none)'}"]
    if live:
        stopped = live.get("stopped")
        if stopped and not live["pid"]:
            lines.append(f"  server STOPPED on purpose by {stopped.get('by')} (warp start starts it again)")
        else:
            lines.append(f"  server pid {live['pid'] or 'NOT RUNNING'} on 127.0.0.1:{live['port']}")
        for instance, proc in (live.get("processes") or {}).items():
            unit = f" ({proc['unit']})" if proc.get("unit") else ""
            lines.append(f"  process {instance} pid {proc['pid'] if proc.get('running') else 'NOT RUNNING'}{unit}")
        if state.get("supervised") is False:
            # Nothing restarts it if it dies, nor starts it at boot.
            lines.append(f"  not supervised ({state.get('supervision')})")
        elif state.get("supervisor") == "warp":
            lines.append(f"  supervised by {state.get('supervision')}")
            if live.get("pid"):
                restarts = live.get("restarts") or 0
                lines.append(f"  app process pid {live.get('server_pid') or 'NOT RUNNING'} (restarts so far: {restarts})")
    if caddy is not None:
        site = next(iter((caddy.get("apps") or {}).values()), None)
        where = ", ".join(site.get("hosts") or []) + f" {site.get('listen')}" if site else "no site"
        running = "running" if caddy.get("running") else "NOT RUNNING"
        lines.append(f"  front: Caddy {caddy.get('installed')} {running}; {where} -> {front.get('backend')}")
    elif front.get("upstream"):
        lines.append(f"  front: your own, reading {front['upstream']} ({front.get('backend')})")
    if front.get("relay"):
        lines.append(f"  the old relay still holds port {front['relay']} (the next deploy replaces it)")
    lines.append(f"  health: {state.get('health')}")
    for r in state["releases"]:
        lines.append(f"  {'*' if r['id'] == state['current'] else ' '} {r['id']} {r['status']}")
    return lines


# -- day-2 operations: config, restart, stop, audit (start: tasks/local.py) ------------------------------------------

_OPS = ("host", "path", "identity", "known-hosts", "accept-unknown-host", "python")
_SERVE_HELP = {k: HELP[k] for k in (*_REACH, "break-lock")} | {
    "port": "the app's public port (used only when the host's releases cannot tell its backend ports)",
    "backend-port": HELP["backend-port"] + " (as --port)",
    "health": "a URL path the new server must answer with 2xx or 3xx before it takes over (default: the check "
    "recorded with the live release)",
    "json": JSON_HELP,
}


def _serve_settings(c, host, path, health, health_host, identity, known_hosts, accept_unknown_host, python, **more):
    return _settings(c, host, **_reach(path, health, health_host, identity, known_hosts, accept_unknown_host, python), **more)


def _done(outcome: Any, what: str, command: str, json: bool) -> None:
    from ..remote.fleet import summary

    _finish(summary(outcome.results), outcome.results, what, json=json, command=command, details=outcome.details)


@warp_task(
    iterable=["host", "set", "unset"],
    help=_SERVE_HELP
    | {
        "set": "NAME=VALUE to set in the hosts' shared/environment (repeatable); NAME alone reads the value from "
        "stdin, or asks for it (so a secret is never on a command line); warp config ... set A=1 B=2 works too",
        "unset": "NAME to remove (repeatable); warp config ... unset A B works too",
        "reveal": "list the values too (by default only the names, values shown as ***)",
        "restart": "restart the server afterwards, with no failed request (else the change applies at its next start)",
    },
)
def config(
    c,
    host=None,
    set=None,  # noqa: A002 - the option is --set
    unset=None,
    reveal=False,
    restart=False,
    path=None,
    health=None,
    health_host=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
    port=None,
    backend_port=None,
    break_lock=False,
    json=False,
):
    """The hosts' secrets file, shared/environment: list its names; set or unset values (atomically, 0600)."""
    from ..remote import manage
    from ..remote.commands import as_json, parse_change

    with reported():
        change = parse_change(set or (), unset or ())
        targets, settings = _serve_settings(
            c,
            host,
            path,
            health,
            health_host,
            identity,
            known_hosts,
            accept_unknown_host,
            python,
            port=_num(port),
            backend_port=_num(backend_port),
            break_lock=_flag(break_lock),
        )
        if change:
            outcome = manage.change_config(
                targets, settings, change, restart=bool(restart), say=_say(json), config=_fabric_config(c)
            )
            _done(outcome, "config change", "config", json)
            return
        if restart:
            raise ConfigError("--restart goes with a change", "give --set or --unset, or run warp restart")
        answers = manage.list_config(targets, settings, reveal=bool(reveal), config=_fabric_config(c))
        if json:
            print(jsonlib.dumps(as_json("config", answers), indent=2))
        else:
            for label, answer in answers.items():
                prefix = f"[{label}] " if len(answers) > 1 else ""
                if not answer["ok"]:
                    print(f"{prefix}ERROR {answer['error']}")
                    continue
                for name in answer["names"]:
                    print(f"{prefix}{name}={answer['values'][name]}")
                if not answer["names"]:
                    print(f"{prefix}(shared/environment sets nothing)")
        _exit_unless_all(answers, "config")


@warp_task(iterable=["host"], help=_SERVE_HELP)
def restart(
    c,
    host=None,
    path=None,
    health=None,
    health_host=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
    port=None,
    backend_port=None,
    break_lock=False,
    json=False,
):
    """Restart the live release's server: a new one beside it, health-checked, switched to, the old one stopped."""
    from ..remote import manage

    with reported():
        targets, settings = _serve_settings(
            c,
            host,
            path,
            health,
            health_host,
            identity,
            known_hosts,
            accept_unknown_host,
            python,
            port=_num(port),
            backend_port=_num(backend_port),
            break_lock=_flag(break_lock),
        )
        _done(manage.restart(targets, settings, say=_say(json), config=_fabric_config(c)), "restart", "restart", json)


@warp_task(iterable=["host"], help={k: HELP[k] for k in (*_OPS, "break-lock")} | {"json": JSON_HELP})
def stop(
    c, host=None, path=None, identity=None, known_hosts=None, accept_unknown_host=False, python=None, break_lock=False, json=False
):
    """Stop the live release's server on the hosts, on purpose (until warp start): gracefully, its unit disabled."""
    from ..remote import manage

    with reported():
        reach = _reach(path, None, None, identity, known_hosts, accept_unknown_host, python)
        targets, settings = _settings(c, host, **reach, break_lock=_flag(break_lock))
        _done(manage.stop(targets, settings, say=_say(json), config=_fabric_config(c)), "stop", "stop", json)


def serve_on_hosts(c: Any, hosts: list[str], json: bool, **options: Any) -> None:
    """``warp start --host ...``: the live release's server started again on each host (see manage.start)."""
    from ..remote import manage

    given = {k: options.get(k) for k in ("path", "health", "health_host", "identity", "known_hosts", "python")}
    targets, settings = _serve_settings(
        c,
        hosts,
        accept_unknown_host=options.get("accept_unknown_host"),
        port=_num(options.get("port")),
        backend_port=_num(options.get("backend_port")),
        break_lock=_flag(bool(options.get("break_lock"))),
        **given,
    )
    _done(manage.start(targets, settings, say=_say(json), config=_fabric_config(c)), "start", "start", json)


@warp_task(
    iterable=["host"],
    help={k: HELP[k] for k in _OPS} | {"limit": "how many entries, the newest (default 20)", "json": JSON_HELP},
)
def audit(
    c, host=None, path=None, identity=None, known_hosts=None, accept_unknown_host=False, python=None, limit=None, json=False
):
    """Who deployed, rolled back, restarted or changed the config on the hosts: when, from where, and the result."""
    from ..remote import manage
    from ..remote.commands import as_json

    with reported():
        reach = _reach(path, None, None, identity, known_hosts, accept_unknown_host, python)
        targets, settings = _settings(c, host, **reach)
        count = _num(limit)
        answers = manage.audit_log(targets, settings, limit=20 if count is None else count, config=_fabric_config(c))
        if json:
            print(jsonlib.dumps(as_json("audit", answers), indent=2))
        else:
            for label, answer in answers.items():
                prefix = f"[{label}] " if len(answers) > 1 else ""
                if not answer["ok"]:
                    print(f"{prefix}ERROR {answer['error']}")
                    continue
                for entry in answer["entries"]:
                    print(prefix + manage.describe_entry(entry))
        _exit_unless_all(answers, "audit")


def _exit_unless_all(answers: dict[str, Any], command: str) -> None:
    failed = [label for label, answer in answers.items() if not answer.get("ok")]
    if failed:
        raise Exit(f"warp: error: {command} failed on " + ", ".join(failed), code=1)
