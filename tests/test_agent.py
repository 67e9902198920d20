"""The deploy agent on a host, run for real: ``python -c AGENT JSON`` against a temporary deploy root.

Each test runs the agent as the deploy does, as a separate process, with
real files, real servers on 127.0.0.1 and real signals. The servers are a
tiny stdlib HTTP app (:data:`APP`) whose behaviour on a stop signal is
chosen per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from warptasks.scripts import source

AGENT = source("agent.py")


class Answer:
    """One agent run: its exit code, its JSON answer (last line of stdout) and its stderr."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.code = result.returncode
        lines = result.stdout.strip().splitlines()
        try:
            self.data: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        except ValueError:
            self.data = {}
        self.stderr = result.stderr
        self.stdout = result.stdout

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        return f"Answer(code={self.code}, data={self.data}, stderr={self.stderr[-2000:]!r})"


def agent(action: str, root: Path | str, timeout: float = 60, **request: Any) -> Answer:
    """Run one agent action as the deploy does: a separate ``python -c`` process."""
    payload = json.dumps({"action": action, "root": str(root), **request})
    return Answer(subprocess.run([sys.executable, "-c", AGENT, payload], capture_output=True, text=True, timeout=timeout))


def ok(action: str, root: Path | str, **request: Any) -> Answer:
    answer = agent(action, root, **request)
    assert answer.code == 0, answer
    return answer


def record(root: Path, release: str) -> dict[str, Any]:
    return json.loads((root / "releases" / release / ".warp" / "deploy.json").read_text())


# -- the lock is a lease ---------------------------------------------------------


@pytest.mark.integration
def test_an_expired_lease_is_taken_over_and_its_old_holder_can_no_longer_act(tmp_path: Path) -> None:
    root = tmp_path / "app"
    first = ok("lock", root, owner="ci@build-1 (pid 7007)", token="t1", lease=0.3)
    assert first["expires"] is not None and "token" not in json.dumps(first.data)
    (root / "releases" / "r1").mkdir()
    (root / "releases" / "r2").mkdir()
    ok("switch", root, release="r1", token="t1")
    time.sleep(0.5)  # t1 was SIGKILLed: nothing renews its lease
    second = ok("lock", root, owner="alice@laptop (pid 1)", token="t2", lease=60, wait=0)
    assert second["took_over"]["owner"] == "ci@build-1 (pid 7007)" and "token" not in second["took_over"]
    # The first deploy wakes up: it cannot renew, check, switch or unlock any more.
    renewed = agent("renew", root, token="t1")
    assert renewed.code == 3 and "alice@laptop" in renewed.stderr
    assert agent("check", root, token="t1").code == 3
    refused = agent("switch", root, release="r2", token="t1")
    assert refused.code == 3 and os.readlink(root / "current") == "releases/r1"
    assert not ok("unlock", root, token="t1")["unlocked"]
    assert ok("check", root, token="t2")["held"]
    ok("switch", root, release="r2", token="t2")
    assert os.readlink(root / "current") == "releases/r2"
    assert ok("unlock", root, token="t2")["unlocked"]


@pytest.mark.integration
def test_a_renewed_lease_holds_and_break_never_takes_a_live_one(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ok("lock", root, owner="ci@build-1 (pid 7007)", token="t1", lease=0.6)
    time.sleep(0.3)
    assert ok("renew", root, token="t1", lease=60)["expires"] > time.time() + 50
    time.sleep(0.5)  # past the first lease: the renewal counts
    held = agent("lock", root, owner="bob@ci", token="t2", wait=0)
    assert held.code == 3 and "ci@build-1 (pid 7007)" in held.stderr and "lease runs until" in held.stderr
    broken = agent("lock", root, owner="bob@ci", token="t2", wait=0, lease=60, **{"break": True})
    assert broken.code == 3 and "not breaking a live lease" in broken.stderr and "ci@build-1" in broken.stderr
    assert "t1" not in broken.stdout + broken.stderr  # the holder's token is never shown
    assert ok("check", root, token="t1")["held"]
    # A holder older than max_age is broken even while it renews (a hung deploy).
    time.sleep(0.2)
    taken = ok("lock", root, owner="bob@ci", token="t2", wait=0, lease=60, max_age=0.1, **{"break": True})
    assert taken["broke"]["owner"] == "ci@build-1 (pid 7007)"
    assert agent("renew", root, token="t1").code == 3


def test_a_lock_waits_for_a_lease_to_expire(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ok("lock", root, owner="killed", token="t1", lease=0.5)
    begin = time.monotonic()
    answer = ok("lock", root, owner="next", token="t2", lease=60, wait=10)
    assert answer["took_over"]["owner"] == "killed" and time.monotonic() - begin < 5


def test_only_one_of_many_deploys_takes_an_expired_lease(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ok("lock", root, owner="killed", token="t0", lease=0.2)
    time.sleep(0.3)
    payloads = [
        json.dumps({"action": "lock", "root": str(root), "owner": f"d{i}", "token": f"t{i + 1}", "lease": 60}) for i in range(6)
    ]
    procs = [subprocess.Popen([sys.executable, "-c", AGENT, p], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in payloads]
    codes = [p.wait(timeout=60) for p in procs]
    for p in procs:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert sorted(codes) == [0, 3, 3, 3, 3, 3]


def test_a_lock_without_a_lease_is_held_until_released_or_broken(tmp_path: Path) -> None:
    """What a deploy that does not renew gets (and locks written before leases): never taken over, broken on request."""
    root = tmp_path / "app"
    ok("lock", root, owner="old@deploy", token="t1")
    time.sleep(0.2)
    held = agent("lock", root, owner="new", token="t2", lease=0.1, wait=0.3)
    assert held.code == 3 and "no lease" in held.stderr
    assert ok("lock", root, owner="new", token="t2", **{"break": True})["broke"]["owner"] == "old@deploy"


def test_the_lock_files_are_private(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ok("lock", root, owner="o", token="secret", lease=60)
    assert (root / ".warp-deploy.lock").stat().st_mode & 0o777 == 0o700
    assert (root / ".warp-deploy.lock" / "owner.json").stat().st_mode & 0o777 == 0o600
