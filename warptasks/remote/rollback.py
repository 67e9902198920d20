"""warp status and warp rollback across hosts."""

from __future__ import annotations

from typing import Any

from ..run.executor import Say
from ..settings import DeploySettings
from .fleet import HostResult, one_at_a_time, owner_label, parallel, release_all, result, stop_unless_partial
from .host import HostDeploy
from .hosts import HostTarget
from .session import DeployFailed


def status(targets: list[HostTarget], settings: DeploySettings, *, config: Any = None) -> dict[str, Any]:
    """Each host's releases, servers, front proxy and health, as the agent reports them (or the error)."""
    answers: dict[str, Any] = {}

    def one(h: HostDeploy) -> None:
        h.connect(config)
        answers[h.target.label] = h.agent("status", path=settings.health, host_header=settings.health_host)

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
    """Back to the previous good release on each host: started, checked, switched, the bad one stopped."""
    synced = one_at_a_time(say)
    hosts = [HostDeploy(t, settings, synced) for t in targets]

    def prepare(h: HostDeploy) -> None:
        h.lock(owner_label() + " rollback")
        state = h.agent("status")
        chosen = to or _previous_good(state)
        if not chosen:
            raise DeployFailed("no earlier good release to roll back to")
        h.release = chosen
        record = h.agent("mark", release=h.release, values={})
        if not record.get("command"):
            raise DeployFailed(f"release {h.release} has no recorded server command")
        h.say(f"rolling back {state['current']} -> {h.release}")
        h.agent("start", release=h.release, port=record["port"], command=record["command"], systemd=settings.systemd)
        h.started = True
        h.check_health()

    def finish(h: HostDeploy) -> None:
        previous = h.info.get("current")
        h.agent("switch", release=h.release)
        h.switched = True
        h.say(f"current -> {h.release}")
        if previous and previous != h.release:
            h.agent("stop", release=previous, drain=settings.drain, status="rolled-back")

    try:
        parallel(hosts, lambda h: h.connect(config))
        parallel(hosts, prepare)
        stop_unless_partial(hosts, settings.allow_partial)
        parallel(hosts, finish)
    finally:
        for h in hosts:
            if h.error and h.started and not h.switched:
                try:
                    h.agent("stop", release=h.release)
                except Exception:  # noqa: BLE001 - the failure that got us here is the one reported
                    pass
        release_all(hosts)
    return [result(h) for h in hosts]


def _previous_good(state: dict[str, Any]) -> str | None:
    current = state.get("current")
    older = [r for r in state.get("releases", []) if current and r["id"] < current and r["status"] in ("retired", "live")]
    return older[-1]["id"] if older else None
