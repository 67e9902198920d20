"""warp status, warp rollback and warp remove across hosts."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError
from ..run.executor import Say
from ..settings import DeploySettings
from .fleet import HostResult, cleaned_up_after, one_at_a_time, owner_label, parallel, result, stop_unless_partial
from .front import app_id, remove_request, status_request
from .host import HostDeploy
from .hosts import HostTarget
from .session import DeployFailed

# What upload.release_id makes: UTC time to the millisecond, then the short git commit when there is one.
RELEASE_ID = re.compile(r"^[0-9]{8}T[0-9]{9}Z(-[0-9a-f]{4,40})?$")


def status(targets: list[HostTarget], settings: DeploySettings, *, config: Any = None) -> dict[str, Any]:
    """Each host's releases, servers, front proxy and health, as the agent reports them (or the error)."""
    answers: dict[str, Any] = {}

    def one(h: HostDeploy) -> None:
        h.connect(config)
        state = h.agent("status", path=settings.health or "/")
        if h.proxied:
            try:
                state["caddy"] = h.session.front(status_request(app=app_id(settings.path)))
            except DeployFailed as error:
                state["caddy"] = {"error": str(error)}
        answers[h.target.label] = state

    hosts = [HostDeploy(t, settings, lambda _t: None) for t in targets]
    parallel(hosts, one)
    for h in hosts:
        if h.error:
            answers[h.target.label] = {"error": h.error}
        h.close()
    return answers


def rollback(
    targets: list[HostTarget], settings: DeploySettings, *, say: Say, to: str | None = None, config: Any = None
) -> list[HostResult]:
    """Back to the previous good release (or ``to``) on each host: started, checked, switched, the bad one stopped.

    The target is checked with the health settings recorded when it was deployed, unless some are given. A rollback
    that fails leaves every release as it was: the target keeps its status (it stays a rollback target).
    """
    if to is not None and not RELEASE_ID.match(to):
        raise ConfigError(
            f"--to {to!r} is not a release id", "release ids look like 20250101T120000000Z-1a2b3c4d5e; warp status lists them"
        )
    synced = one_at_a_time(say)
    hosts = [HostDeploy(t, settings, synced) for t in targets]
    with cleaned_up_after(hosts, say) as interrupted:
        parallel(hosts, lambda h: h.connect(config))
        interrupted.check()
        parallel(hosts, lambda h: _prepare(h, settings, to))
        interrupted.check()
        stop_unless_partial(hosts, settings.allow_partial)
        parallel(hosts, _switch_back)
        interrupted.check()
    return [result(h) for h in hosts]


def _prepare(h: HostDeploy, settings: DeploySettings, to: str | None) -> None:
    """Lock, choose the target, start its recorded server and check it."""
    h.audit = {"action": "rollback", "by": owner_label(), "details": {"to": to}}
    h.lock(owner_label() + " rollback")
    state = h.agent("status")
    current = state.get("current")
    chosen = _chosen(state, to)
    record = h.agent("mark", release=chosen, values={})
    if not record.get("command"):
        raise DeployFailed(f"release {chosen} has no recorded server command")
    h.release, h.previous = chosen, current or ""
    # Given back if the rollback fails: the target stays what it was (a "retired" release stays a rollback target).
    h.failed_status = record.get("status") or "failed"
    h.say(f"rolling back {current} -> {chosen}")
    h.enter("start")
    request = {"port": record["port"], "command": record["command"], "systemd": settings.systemd, "token": h.token}
    # beside_live: a restart may have moved the live server to the port the target was recorded on.
    h.agent("start", release=chosen, beside_live=True, **request)
    h.started = True
    h.check_health(**_health_given(settings))


def _chosen(state: dict[str, Any], to: str | None) -> str:
    """``to`` if it is one of the host's releases and not the live one; else the previous good release."""
    ids = [r["id"] for r in state.get("releases", [])]
    if to is not None:
        if to not in ids:
            raise DeployFailed(f"there is no release {to} on this host", f"its releases: {', '.join(ids) or 'none'}")
        if to == state.get("current"):
            raise DeployFailed(f"release {to} is live already")
        return to
    chosen = _previous_good(state)
    if not chosen:
        raise DeployFailed("no earlier good release to roll back to")
    return chosen


def _health_given(settings: DeploySettings) -> dict[str, Any]:
    """The health settings given to this rollback; the rest come from those recorded with the target.

    A failed check leaves the target's status as it was (``mark_failed``): it is not the release that failed.
    """
    given: dict[str, Any] = {"timeout": settings.health_timeout, "mark_failed": False}
    if settings.health:
        given.update(path=settings.health, accept="2xx-3xx")
    if settings.health_host:
        given["host_header"] = settings.health_host
    return given


def _switch_back(h: HostDeploy) -> None:
    h.enter("switch")
    h.agent("switch", release=h.release, token=h.token, retire="rolled-back")
    h.switched = True
    h.say(f"current -> {h.release}")
    try:
        h.stop_previous()
    except Exception as error:  # noqa: BLE001 - the target is live: the cleanup stops the old server
        h.say(f"warning: stopping the old server failed: {error}")
    try:
        # A release is one unit of code: its workers go back with its web server (the current's stopped first).
        h.start_processes()
    except Exception as error:  # noqa: BLE001 - the web switch stands; the host's result says what did not start
        h.error = f"current -> {h.release} stands (the web switch is done), but {error}"


def _previous_good(state: dict[str, Any]) -> str | None:
    current = state.get("current")
    older = [r for r in state.get("releases", []) if current and r["id"] < current and r["status"] in ("retired", "live")]
    return older[-1]["id"] if older else None


def remove(
    targets: list[HostTarget], settings: DeploySettings, *, say: Say, purge: bool = False, config: Any = None
) -> list[HostResult]:
    """Take the app off each host: its site off the front (other apps' routes untouched), its servers stopped,
    ``current`` removed; with ``purge``, its deploy path emptied (releases, environments, secrets, logs)."""
    synced = one_at_a_time(say)
    hosts = [HostDeploy(t, settings, synced) for t in targets]

    def one(h: HostDeploy) -> None:
        h.audit = {"action": "remove", "by": owner_label(), "details": {"purge": purge}}
        h.lock(owner_label() + " remove")
        h.enter("remove")
        if h.proxied:
            host, site = h.front()
            h.session.front(remove_request(site.app, host))
            h.say(f"front: site {site.app} removed")
        answer = h.agent("remove", token=h.token, purge=purge)
        stopped = ", ".join(answer.get("stopped") or ()) or "none running"
        h.say(f"servers stopped: {stopped}" + ("; deploy path emptied" if answer.get("purged") else ""))

    with cleaned_up_after(hosts, say) as interrupted:
        parallel(hosts, lambda h: h.connect(config))
        interrupted.check()
        parallel(hosts, one)
        interrupted.check()
    return [result(h) for h in hosts]
