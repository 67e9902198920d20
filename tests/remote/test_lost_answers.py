"""An agent action that happened on the host, whose answer never arrived: the cleanup asks the host, never guesses.

The connection drops right after the host switched ``current`` (the agent did it, its answer was lost): the deploy
does not know it switched, and its cleanup must not stop the release ``current`` now names. A test double of the
session runs the real action on a real host, then drops the connection and raises, as a lost answer does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote import session as session_module
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import HostResult, summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.rollback import rollback, status
from warptasks.settings import DeploySettings

from .deploy_helpers import make_django_project, release_served, set_version
from .test_deploy import deploy_image, free_port_run

pytestmark = pytest.mark.remote

PATH = "/srv/lost-answers"


@dataclass
class Site:
    target: HostTarget
    project: Path
    settings: DeploySettings
    url: str
    lines: list[str]

    def deploy(self, version: str) -> list[HostResult]:
        set_version(self.project, version)
        self.lines.clear()
        results = deploy([self.target], str(self.project), self.settings, say=self.lines.append)
        print("\n".join(self.lines), summary(results), sep="\n")
        return results

    def rollback(self) -> list[HostResult]:
        self.lines.clear()
        results = rollback([self.target], self.settings, say=self.lines.append)
        print("\n".join(self.lines), summary(results), sep="\n")
        return results

    def state(self) -> dict[str, Any]:
        return dict(next(iter(status([self.target], self.settings).values())))


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = Path(tempfile.mkdtemp(prefix="warp-lost-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    try:
        port = free_port_run()
        project = make_django_project(workdir / "site", "1", server="gunicorn")
        settings = DeploySettings.resolve(
            None, path=PATH, identity=host.key_filename, known_hosts=host.known_hosts, drain=0, keep=5
        )
        made = Site(
            HostTarget(host.address, host.user, host.port, app_port=port, listen="127.0.0.1"),
            project,
            settings,
            f"http://127.0.0.1:{port}/",
            [],
        )
        assert all(r.ok for r in made.deploy("1"))
        yield made
    finally:
        remove_hosts([host])
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def answer_lost_after(action: str) -> Iterator[list[str]]:
    """The next ``action`` of the agent happens on the host, then the connection drops before its answer arrives."""
    real = session_module.Session.agent
    dropped: list[str] = []

    def agent(self: Any, name: str, /, **request: Any) -> dict[str, Any]:
        answer = real(self, name, **request)
        if name == action and not dropped:
            dropped.append(name)
            self.conn.close()
            raise EOFError(f"connection lost (simulated) after {name}")
        return answer

    session_module.Session.agent = agent  # type: ignore[method-assign]
    try:
        yield dropped
    finally:
        session_module.Session.agent = real  # type: ignore[method-assign]


def running(state: dict[str, Any]) -> list[str]:
    return [r["id"] for r in state["releases"] if r["pid"]]


def test_a_lost_answer_to_the_switch_leaves_the_new_release_live_and_serving(site: Site) -> None:
    old = site.state()["current"]
    with answer_lost_after("switch") as dropped:
        (result,) = site.deploy("2")
    assert dropped == ["switch"]
    assert release_served(site.url) == "2"
    state = site.state()
    assert state["current"] == result.release != old
    assert running(state) == [state["current"]], state
    # The release is live: the deploy says so, with what happened.
    assert result.ok, result.message
    assert any("current -> " + result.release in line for line in site.lines), site.lines


def test_a_lost_answer_to_a_rollbacks_switch_leaves_the_target_live_and_serving(site: Site) -> None:
    live = site.state()["current"]
    assert all(r.ok for r in site.deploy("3"))
    with answer_lost_after("switch") as dropped:
        (result,) = site.rollback()
    assert dropped == ["switch"]
    assert release_served(site.url) == "2"
    state = site.state()
    assert state["current"] == live == result.release
    assert running(state) == [live], state


def test_after_a_lost_answer_the_next_deploy_goes_through(site: Site) -> None:
    assert all(r.ok for r in site.deploy("4"))
    assert release_served(site.url) == "4"
    state = site.state()
    assert running(state) == [state["current"]], state
