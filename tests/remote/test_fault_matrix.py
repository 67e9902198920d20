"""The fault matrix: a deploy broken at each of its points, three ways, and what must survive each time.

For every point of a deploy (lock, upload, build, migrate, start, health,
switch, stop, prune) the running ``warp deploy`` is held just before that
point (the deploy's test-only hook) and then

- killed with SIGKILL (nothing of it runs again: no cleanup at all),
- interrupted with SIGINT (Ctrl-C: it cleans up, then exits), or
- cut off from the host during that point's first remote call: every SSH
  connection frozen (the host's per-connection sshd processes stopped), the
  deploy let go on, and the connections dropped (those processes killed)
  while its call waits.

Then: a release still serves (HTTP 200): the one that was live, or the new
one once the switch happened; ``warp status`` tells the truth (the release
``current`` names is the one serving and its server runs; an interrupted
release is not shown live); and the next plain ``warp deploy`` (no flags,
no ``--break-lock``) goes through, leaving one server running: the live one.

One host, one project, code-only changes: each deploy after the first reuses
the environment. Set ``WARP_FAULT_MATRIX`` to a file to get the table.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts

from .deploy_helpers import make_django_project, release_served, set_version
from .test_deploy import deploy_image, free_port_run
from .warp_runs import Run, Warp, sigkill, signal_ssh

pytestmark = pytest.mark.remote

PATH = "/srv/matrix-site"
LEASE = 4
POINTS = ("lock", "upload", "build", "migrate", "start", "health", "switch", "stop", "prune")
AFTER_SWITCH = ("stop", "prune")
FAULTS = ("SIGKILL", "Ctrl-C", "SSH cut")


@dataclass
class Matrix:
    warp: Warp
    rows: list[dict[str, str]] = field(default_factory=list)
    versions: Iterator[int] = field(default_factory=lambda: count(2))

    def next_version(self) -> str:
        version = f"m{next(self.versions)}"
        set_version(self.warp.project, version)
        return version

    def table(self) -> str:
        head = ["injected", "at", "warp exit", "serving after", "status after", "interrupted release", "lock after"]
        head.append("next plain deploy")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row[h] for h in head) + " |" for row in self.rows]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def matrix() -> Iterator[Matrix]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = Path(tempfile.mkdtemp(prefix="warp-matrix-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    made = None
    try:
        project = make_django_project(workdir / "site", "m1", server="gunicorn")
        env = {"INVOKE_WARP_DEPLOY_LOCK_LEASE": str(LEASE), "INVOKE_WARP_DEPLOY_DRAIN": "0", "INVOKE_WARP_DEPLOY_KEEP": "2"}
        made = Matrix(Warp(host, project, PATH, free_port_run(), workdir, env))
        made.warp.ok("deploy")
        yield made
    finally:
        if made is not None and made.rows:
            print("\n" + made.table())
            out = os.environ.get("WARP_FAULT_MATRIX")
            if out:
                Path(out).write_text(made.table() + "\n")
        remove_hosts([host])
        shutil.rmtree(workdir, ignore_errors=True)


def inject(matrix: Matrix, run: Run, fault: str) -> int | None:
    """Break the held deploy; its exit code (None: killed, it has none of its own)."""
    if fault == "SIGKILL":
        sigkill(run)
        return None
    if fault == "Ctrl-C":
        run.signal(signal.SIGINT)
        return run.finish(timeout=180)[0]
    # Frozen first, so the deploy's next remote call goes out on a connection that still looks open (fabric would
    # otherwise notice the drop and connect again before it); dropped once that call waits for its answer.
    assert signal_ssh(matrix.warp.host, "SIGSTOP") > 0
    run.go()
    time.sleep(1)
    signal_ssh(matrix.warp.host, "SIGKILL")
    return run.finish(timeout=180)[0]


def ending(text: str) -> str:
    """How a deploy ended, in a few words: where it failed and why, or "live" (and its warnings)."""
    failed = re.search(r"^FAIL \S+: failed at (\w+): (.*)$", text, re.MULTILINE)
    if failed:
        why = failed.group(2)
        if "interrupted by" in why:
            why = "interrupted"
        elif "SSH connection dropped" in why:
            why = "connection dropped"
        return f"failed at {failed.group(1)}, {why[:60]}"
    warnings = re.findall(r"warning: (\w+) after the switch failed", text)
    return "live" + (f", warning at {', '.join(warnings)}" if warnings else "")


def locked(warp: Warp) -> bool:
    return warp.host.exec(f"test -d {PATH}/.warp-deploy.lock")[0] == 0


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_deploy_broken_at_any_point_leaves_a_serving_host_and_the_next_deploy_goes_through(
    matrix: Matrix, fault: str, point: str
) -> None:
    warp = matrix.warp
    live, old = warp.status()["current"], release_served(warp.url)
    new = matrix.next_version()
    run = warp.start("deploy", pause_at=point)
    run.wait_paused()
    code = inject(matrix, run, fault)
    rid, switched = run.release_id(), point in AFTER_SWITCH
    row = {"injected": fault, "at": point, "warp exit": "killed" if code is None else f"{code}: {ending(run.text())}"}
    row["lock after"] = "held until its lease lapses" if locked(warp) else "released"
    if fault == "Ctrl-C":
        assert code not in (0, None), run.text()[-3000:]
    if fault == "SSH cut":  # after the switch the new release is live: what failed there is a warning
        assert (code == 0) == switched, run.text()[-3000:]

    # A release serves, and it is the one status calls current, with its server running.
    served = release_served(warp.url)
    assert served == (new if switched else old), run.text()[-3000:]
    state = warp.status()
    releases = {r["id"]: r for r in state["releases"]}
    assert state["current"] == (rid if switched else live) and releases[state["current"]]["pid"], state
    assert state["caddy"]["running"] and state["front"]["backend"] == f"127.0.0.1:{releases[state['current']]['port']}", state
    row["serving after"] = f"200, {'new' if switched else 'old'} release"
    row["status after"] = f"current = {'new' if switched else 'old'}, its server running"
    mine = releases.get(rid)
    if mine is None:
        row["interrupted release"] = "not created"
    elif switched:
        row["interrupted release"] = f"{mine['status']} (switched before the fault)"
    else:
        assert mine["status"] != "live", state
        row["interrupted release"] = f"{mine['status']}, server {'RUNNING' if mine['pid'] else 'stopped'}"
        if fault != "SIGKILL":  # it cleaned up after itself
            assert mine["status"] == "failed" and not mine["pid"], state

    # The next plain deploy goes through, and leaves one server running: the live one.
    begin = time.monotonic()
    after = matrix.next_version()
    recovery = warp.start("deploy")
    recovered, text = recovery.finish()
    assert recovered == 0, text[-4000:]
    assert release_served(warp.url) == after
    state = warp.status()
    running = [r["id"] for r in state["releases"] if r["pid"]]
    assert running == [state["current"]] == [recovery.release_id()], state
    took = "took over the lapsed lock" if "took over the lapsed lock" in text else "ok"
    row["next plain deploy"] = f"{took} ({time.monotonic() - begin:.0f}s), one server left"
    matrix.rows.append(row)
