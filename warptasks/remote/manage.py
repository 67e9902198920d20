"""Day-2 operations on the live release of each host: config, restart, stop, start, audit.

Each changing operation is one :class:`~.host.HostDeploy` per host, run in
parallel under the host's deploy lock (so it never interleaves with a deploy,
a rollback or another change), written to the host's audit log (``begun``
with the lock, ``ok``/``failed`` before the lock is released), and cleaned up
by :func:`~.fleet.cleaned_up_after` whatever ends it.

A restart (see the agent's ``restart``) starts a second server of the live
release on the other backend port, checks it with the release's recorded
health settings, points the front at it (the agent's ``switch`` to the same
release: the backend file the front reads per request is rewritten, nothing
reloads) and stops the old server gracefully after the drain. A failed check
stops the new server; the old one never stopped serving. ``warp stop`` stops
the live server on purpose (its unit disabled, the record says so);
``warp start`` starts it again on its port, checked the same way.

``config`` edits the host's ``shared/environment`` through the agent, which
parses and writes it with :mod:`warptasks.scripts.envfile` (sent with the
request): values travel only in the agent's stdin JSON, never in argv, and
never reach the audit log (names do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..run.executor import Say
from ..scripts.agent import _printable
from ..settings import DeploySettings
from .commands import MASK, Change
from .fleet import HostResult, cleaned_up_after, one_at_a_time, owner_label, parallel
from .host import ENVFILE, HostDeploy
from .hosts import HostTarget
from .rollback import _health_given
from .session import DeployFailed

# -- operations ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What an operation did: a result per host, and details per host (for ``--json``)."""

    results: list[HostResult]
    details: dict[str, dict[str, Any]]


def _result(h: HostDeploy, done: str) -> HostResult:
    release = h.release or str(h.info.get("current") or "")
    if h.error:
        return HostResult(h.target.label, False, release, h.phase, h.error, h.timings)
    return HostResult(h.target.label, True, release, h.phase, done, h.timings)


def _locked(
    targets: list[HostTarget],
    settings: DeploySettings,
    action: str,
    work: Callable[[HostDeploy, dict[str, Any]], str],
    *,
    say: Say,
    config: Any,
    details: dict[str, Any] | None = None,
    needs_live: bool = True,
) -> Outcome:
    """``work`` on every host in parallel, under its deploy lock, written to its audit log; ``work`` answers the
    host's line of the summary and fills in its details. ``needs_live``: a host with no live release fails."""
    synced = one_at_a_time(say)
    hosts = [HostDeploy(t, settings, synced) for t in targets]
    found: dict[str, dict[str, Any]] = {h.target.label: {} for h in hosts}
    done: dict[str, str] = {}

    def one(h: HostDeploy) -> None:
        h.audit = {"action": action, "by": owner_label(), "details": dict(details or {})}
        h.lock(f"{owner_label()} {action}")
        if needs_live and not h.info.get("current"):
            raise DeployFailed("no release is live on this host", "deploy one first: warp deploy --host ...")
        done[h.target.label] = work(h, found[h.target.label])

    with cleaned_up_after(hosts, say) as interrupted:
        parallel(hosts, lambda h: h.connect(config))
        interrupted.check()
        parallel(hosts, one)
        interrupted.check()
    return Outcome([_result(h, done.get(h.target.label, "ok")) for h in hosts], found)


def _ports(h: HostDeploy) -> list[int]:
    """The backend ports the settings name (used by the host only when its records cannot tell)."""
    first = h.settings.backend_port or h.public_port + 1
    return [first, first + 1]


def _processes_down(h: HostDeploy, current: str) -> bool:
    """Whether the live release has Procfile process types of which an instance does not run."""
    if not (h.info.get("current_record") or {}).get("process_types"):
        return False
    states = h.agent("processes", op="status", release=current).get("processes") or {}
    return not states or not all(state.get("running") for state in states.values())


def _serve(h: HostDeploy, mode: str, found: dict[str, Any]) -> str:
    """The live release's server restarted (``mode`` "restart") or started again ("start"): see the module's text."""
    current = str(h.info.get("current"))
    h.enter("start")
    given = {k: v for k, v in _health_given(h.settings).items() if k != "mark_failed"}
    answer = h.agent("restart", op="begin", mode=mode, token=h.token, ports=_ports(h), **given)
    found.update(release=current, port=answer.get("port"), pid=answer.get("pid"), unit=answer.get("unit"))
    if answer.get("already"):
        h.say(f"the server of {current} runs already (pid {answer.get('pid')}, port {answer.get('port')})")
        if _processes_down(h, current):
            # A warp stop cut off after its processes step (or a deploy before its own): they are started again.
            h.release = current
            h.start_processes()
        return f"running: {current}"
    h.say(f"new server of {current} on 127.0.0.1:{answer['port']} answered HTTP {answer.get('status')}")
    try:
        h.enter("switch")
        h.agent("switch", release=current, token=h.token)
        h.enter("stop")
        ended = h.agent("restart", op="finish", token=h.token, drain=h.settings.drain)
    except Exception:
        # Ended by what the front reads: switched, the old server is stopped; else the new one (the next lock
        # does the same when this host cannot be reached now).
        try:
            h.session.reopen_if_lost()
            h.agent("restart", op="finish", token=h.token)
        except Exception:  # noqa: BLE001 - the first failure is the one reported
            pass
        raise
    if ended.get("stopped_port"):
        signals = ", ".join(ended.get("signals") or ()) or "no signal"
        h.say(
            f"front -> 127.0.0.1:{answer['port']}; old server on port {ended['stopped_port']}: {ended.get('server')} ({signals})"
        )
        found["previous_port"] = ended["stopped_port"]
    # The release's Procfile process types too, after the web switch as a deploy does: stopped gracefully, then
    # started again (with the environment as it is now: config --restart).
    h.release = current
    h.start_processes()
    return f"{'restarted' if mode == 'restart' else 'started'}: {current} on port {answer['port']}"


def restart(targets: list[HostTarget], settings: DeploySettings, *, say: Say, config: Any = None) -> Outcome:
    """The live release's server replaced by a new one on each host, health-gated, with no failed request."""
    return _locked(targets, settings, "restart", lambda h, found: _serve(h, "restart", found), say=say, config=config)


def start(targets: list[HostTarget], settings: DeploySettings, *, say: Say, config: Any = None) -> Outcome:
    """The live release's server started again (after ``warp stop``, or a crash) on its port, health-checked."""
    return _locked(targets, settings, "start", lambda h, found: _serve(h, "start", found), say=say, config=config)


def stop(targets: list[HostTarget], settings: DeploySettings, *, say: Say, config: Any = None) -> Outcome:
    """The live release's server stopped gracefully on each host, on purpose: its unit disabled (a reboot does not
    start it), the record saying so until ``warp start``."""

    def one(h: HostDeploy, found: dict[str, Any]) -> str:
        current = str(h.info.get("current"))
        h.enter("stop")
        ended = h.agent("processes", op="stop", release=current, token=h.token).get("stopped", {}).get(current) or {}
        if ended:
            h.say("processes stopped: " + ", ".join(f"{i} {state}" for i, state in sorted(ended.items())))
        answer = h.agent("stop", release=current, token=h.token, stopped={"by": owner_label()})
        signals = ", ".join(answer.get("signals") or ()) or "no signal"
        h.say(f"server of {current}: {answer.get('server')} ({signals}); warp start starts it again")
        found.update(release=current, server=answer.get("server"))
        return f"stopped: {current}"

    return _locked(targets, settings, "stop", one, say=say, config=config)


def change_config(
    targets: list[HostTarget], settings: DeploySettings, change: Change, *, restart: bool, say: Say, config: Any = None
) -> Outcome:
    """``change`` made to each host's ``shared/environment`` (atomically, 0600, under the lock); with ``restart``,
    the server restarted with it. The audit log gets the names, never the values."""
    if not change:
        raise ConfigError("nothing to change", "give --set NAME=VALUE or --unset NAME (warp config ... set A=1 / unset A)")
    names = {"set": sorted(change.sets), "unset": list(change.unsets), "restart": restart}

    def one(h: HostDeploy, found: dict[str, Any]) -> str:
        h.enter("config")
        request = {"set": change.sets, "unset": list(change.unsets), "token": h.token, "envfile": ENVFILE}
        answer = h.agent("config", op="change", **request)
        found.update({k: answer.get(k) for k in ("set", "unchanged", "unset", "absent", "changed")})
        parts = [f"{what} {', '.join(answer[key])}" for key, what in _SAID if answer.get(key)]
        h.say("shared/environment: " + "; ".join(parts))
        if not restart:
            h.say("the change applies when the server next starts: warp restart (or the next deploy or rollback)")
            return "changed" if answer.get("changed") else "unchanged"
        return _serve(h, "restart", found)

    # Without --restart no release needs to be live: secrets may be set before the first deploy.
    return _locked(targets, settings, "config", one, say=say, config=config, details=names, needs_live=restart)


_SAID = (("set", "set"), ("unchanged", "unchanged"), ("unset", "unset"), ("absent", "not there"))


def _read_each(
    targets: list[HostTarget], settings: DeploySettings, work: Callable[[HostDeploy], dict[str, Any]], config: Any
) -> dict[str, dict[str, Any]]:
    """``work`` on every host, no lock taken (it only reads); each host's answer (``ok``), or its error."""
    answers: dict[str, dict[str, Any]] = {}
    hosts = [HostDeploy(t, settings, lambda _t: None) for t in targets]

    def one(h: HostDeploy) -> None:
        h.connect(config)
        answers[h.target.label] = dict(work(h), ok=True)

    try:
        parallel(hosts, one)
    finally:
        for h in hosts:
            if h.error:
                answers[h.target.label] = {"ok": False, "error": h.error}
            h.close()
    return {t.label: answers.get(t.label, {"ok": False, "error": "not reached"}) for t in targets}


def list_config(
    targets: list[HostTarget], settings: DeploySettings, *, reveal: bool, config: Any = None
) -> dict[str, dict[str, Any]]:
    """Each host's ``shared/environment``: ``names``, and ``values`` (masked unless ``reveal``)."""

    def one(h: HostDeploy) -> dict[str, Any]:
        answer = h.agent("config", op="list", reveal=reveal, envfile=ENVFILE)
        names = list(answer.get("names") or [])
        values = answer.get("values") if reveal else None
        return {"names": names, "values": values if values is not None else dict.fromkeys(names, MASK)}

    return _read_each(targets, settings, one, config)


def audit_log(
    targets: list[HostTarget], settings: DeploySettings, *, limit: int, config: Any = None
) -> dict[str, dict[str, Any]]:
    """Each host's audit log: its newest ``limit`` entries, the newest last."""
    return _read_each(targets, settings, lambda h: {"entries": h.agent("audit", op="list", limit=limit)["entries"]}, config)


def describe_entry(entry: dict[str, Any]) -> str:
    """One audit entry as a line: when, what, how it ended, by whom from where, on which release. Escaped as ``warp
    logs`` escapes a log line: who, where from, the release, the details and the error come from the host's file, and
    anyone who can write it (or name the deploying machine, or set an error's text) could otherwise put escape
    sequences or a line break on the operator's terminal."""
    details = entry.get("details") or {}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(details.items()) if v not in (None, False, [], {}, ""))
    line = f"{entry.get('time')} {entry.get('action')} {entry.get('result')} by {entry.get('by')} from {entry.get('from')}"
    if entry.get("release"):
        line += f" release {entry['release']}"
    if extra:
        line += f" ({extra})"
    if entry.get("error"):
        line += f": {str(entry['error']).splitlines()[0]}"
    return _printable(line.encode("utf-8", "surrogatepass")).decode("utf-8")
