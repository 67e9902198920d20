"""A deploy's start leaves the port to the host agent, and anything that stops a deploy midway cleans up (pure tier).

A server a dead deploy left on the other backend port must not block the next deploy: the agent's ``start`` checks
the port and takes it back from a release that is not live, so the planner's own port check (which would refuse
it first) is not part of a deploy's start. And whatever ends a phase early, an interrupt or any other
``BaseException``, fails the hosts that had not switched, so their cleanup stops what they started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cases import facts, write_tree
from warptasks.detect import detect_app
from warptasks.plan import StartOptions, StartPlan, plan_start
from warptasks.remote import fleet, host
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

ENV = "/srv/app/releases/1/.warp/envs/py3.11-0123456789abcdef"
STATE = {"env_key": "py3.11-0123456789abcdef", "env": ENV, "server": "gunicorn", "kind": "wsgi", "source": "s"}


def test_a_start_without_the_port_check_keeps_its_other_checks(tmp_path: Path) -> None:
    spec = detect_app(str(write_tree(tmp_path, {"wsgi.py": ""})), server="gunicorn")
    target = facts(euid=0, state=STATE, current=ENV, worker_accounts=[["www-data", "www-data"]])
    checked = plan_start(spec, target, StartOptions(project="/srv/app/releases/1"))
    unchecked = plan_start(spec, target, StartOptions(project="/srv/app/releases/1", port_check=False))
    assert [c.name for c in checked.checks] == ["port", "worker can read"]
    assert [c.name for c in unchecked.checks] == ["worker can read"]
    assert unchecked.server == checked.server


class Checked(Exception):
    """Raised by the stand-in for run_checks, with the plan it was given."""


def test_a_deploys_start_plans_no_port_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = detect_app(str(write_tree(tmp_path, {"wsgi.py": ""})), server="gunicorn")
    deploy = host.HostDeploy(HostTarget("h.example"), DeploySettings.resolve(None, path="/srv/app"), lambda _: None)
    deploy.release, deploy.facts = "1", facts(state=STATE, current=ENV)

    def run_checks(_: Any, plan: StartPlan, **__: Any) -> None:
        raise Checked(plan)

    monkeypatch.setattr(host, "run_checks", run_checks)
    monkeypatch.setattr(deploy.session, "quiet", lambda: None)
    with pytest.raises(Checked) as checked:
        deploy.start(spec)
    plan = checked.value.args[0]
    assert "port" not in [c.name for c in plan.checks]


@dataclass
class FakeHost:
    """What the fleet's cleanup reads and calls of a host."""

    switched: bool = False
    unchanged: bool = False
    error: str = ""
    stopping: bool = False
    calls: list[str] = field(default_factory=list)
    target: HostTarget = field(default_factory=lambda: HostTarget("h.example"))
    release: str = "1"
    phase: str = "build"
    timings: dict[str, float] = field(default_factory=dict)

    def clean_up(self) -> None:
        # As HostDeploy.clean_up: only a failed (or switched) host has anything to stop.
        self.calls.append("clean_up (stops the new server)" if self.error else "clean_up (nothing to stop)")

    def unlock(self) -> None:
        self.calls.append("unlock")

    def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()], ids=lambda e: type(e).__name__)
def test_anything_that_ends_a_phase_early_fails_the_hosts_not_switched_and_cleans_them_up(stop: BaseException) -> None:
    waiting, switched = FakeHost(), FakeHost(switched=True)
    with pytest.raises(type(stop)), fleet.cleaned_up_after([waiting, switched], lambda _: None):  # type: ignore[list-item]
        raise stop
    assert waiting.error and waiting.calls == ["clean_up (stops the new server)", "unlock", "close"]
    assert not switched.error and switched.calls[1:] == ["unlock", "close"]
