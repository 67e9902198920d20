"""Procfile process types and the release: line on real SSH hosts.

A ``worker:`` that is a plain Python loop writes its release, its code's version and its pid to a file every 0.2s,
and "stopped" when SIGTERM ends it: what runs, and how it ended, is read from those files on the host. The tests
of the first host run in order, as a project's deploys would: deploy, deploy again with two workers and a
``release:`` line, roll back, a failing ``release:``, status, remove. The last test boots a host with systemd, where
the worker is a unit that comes back after kill -9.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote.account import app_account
from warptasks.remote.commands import Change
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.manage import change_config, start, stop
from warptasks.remote.rollback import remove, rollback, status
from warptasks.scripts.agent import _unit_name
from warptasks.settings import DeploySettings
from warptasks.tasks.remote import _describe

from .deploy_helpers import assert_ok, drop_workdir, make_workdir, release_served
from .test_deploy import free_port_run
from .test_deploy_systemd import SystemdHost

pytestmark = pytest.mark.remote

PATH = "/srv/procs-site"
OUT = "/srv/procs-out"  # where the workers write (they run as the app's own account; /tmp is a unit's own under systemd)

APP = """VERSION = "{version}"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("release " + VERSION + "\\n").encode()]
"""

WORKER = """import os
import signal
import sys
import time

VERSION = "{version}"
OUT = os.path.join("{out}", "worker-%d" % os.getpid())
RELEASE = os.path.basename(os.environ["WARP_PROJECT"])


def stop(signum, frame):
    with open(OUT, "a") as out:
        out.write("stopped\\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print("worker", VERSION, "up", flush=True)
for _ in range(30000):  # 100 minutes at most
    with open(OUT, "a") as out:
        out.write("%s %s %s %d\\n" % (RELEASE, VERSION, os.environ.get("SECRET_TOKEN"), os.getpid()))
    time.sleep(0.2)
"""

RELEASE_OK = """import os

with open(os.path.join("{out}", "release-ran"), "a") as out:
    out.write("%s %s\\n" % (os.path.basename(os.environ["WARP_PROJECT"]), os.environ.get("SECRET_TOKEN")))
"""

# Reads every worker's file on the host: its pid, last line, and how long since it last wrote.
READ_WORKERS = """
import json, os, sys, time
out, rows = sys.argv[1], []
for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
    if name.startswith("worker-"):
        path = os.path.join(out, name)
        lines = open(path).read().splitlines()
        rows.append({"pid": int(name[7:]), "last": lines[-1] if lines else "", "lines": len(lines),
                     "age": time.time() - os.stat(path).st_mtime})
print(json.dumps(rows))
"""


def write_project(root: Path, version: str, release: str | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".warpdrive").mkdir(exist_ok=True)
    (root / ".warpdrive" / "server_type").write_text("gunicorn\n")
    (root / "wsgi.py").write_text(APP.format(version=version))
    (root / "worker.py").write_text(WORKER.format(version=version, out=OUT))
    (root / "release.py").write_text(RELEASE_OK.format(out=OUT))
    procfile = "# the site is wsgi.py; these run beside it\n\nworker: python worker.py\n"
    (root / "Procfile").write_text(procfile + (f"release: {release}\n" if release else ""))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@dataclass
class Worker:
    pid: int
    release: str
    version: str
    secret: str
    running: bool
    stopped: bool


def read_workers(run: Callable[[list[str]], str]) -> list[Worker]:
    workers = []
    for row in json.loads(run(["python3", "-c", READ_WORKERS, OUT])):
        last = row["last"].split()
        stopped = row["last"] == "stopped"
        release, version, secret = (last[:3] if len(last) == 4 else ["", "", ""]) if not stopped else ["", "", ""]
        workers.append(Worker(row["pid"], release, version, secret, not stopped and row["age"] < 2, stopped))
    return workers


def until(check: Callable[[], Any], seconds: float = 40) -> Any:
    """``check()`` once it passes (an AssertionError means not yet), within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@dataclass
class Site:
    host: Any
    target: HostTarget
    url: str
    project: Path
    opts: DeploySettings
    lines: list[str] = field(default_factory=list)
    releases: dict[str, str] = field(default_factory=dict)  # version -> release id

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text)

    def run(self, argv: list[str]) -> str:
        code, output = self.host.exec(argv)
        assert code == 0, output
        return str(output)

    def deploy(self, **extra: Any) -> list[Any]:
        self.lines.clear()
        results = deploy([self.target], str(self.project), replace(self.opts, **extra), say=self.say)
        print(summary(results))
        return results

    def running(self) -> list[Worker]:
        return [w for w in read_workers(self.run) if w.running]

    def state(self) -> dict[str, Any]:
        return status([self.target], self.opts)[self.target.label]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    client = ensure_engine()
    [host] = ssh_hosts(client, 1, network="host")
    workdir = make_workdir("warp-procs-")
    try:
        code, output = host.exec(["sh", "-c", f"mkdir -p {OUT} && chmod 1777 {OUT}"])
        assert code == 0, output
        secrets_file = workdir / "secrets.env"
        secrets_file.write_text("SECRET_TOKEN=only-on-the-host\n")
        project = workdir / "site"
        write_project(project, "1")
        port = free_port_run()
        opts = DeploySettings.resolve(
            {"warp": {"deploy": {"stop_timeout": {"worker": 10}}}},
            path=PATH,
            identity=host.key_filename,
            known_hosts=host.known_hosts,
            env_file=str(secrets_file),
            drain=1,
        )
        target = HostTarget(host.address, host.user, host.port, app_port=port, listen="127.0.0.1")
        yield Site(host, target, f"http://127.0.0.1:{port}/", project, opts)
    finally:
        remove_hosts([host])
        drop_workdir(workdir)


def running_versions(site: Site, *versions: str) -> list[Worker]:
    """The running workers once they are exactly one of each of ``versions`` (within the bound of :func:`until`)."""

    def check() -> list[Worker]:
        running = site.running()
        assert sorted(w.version for w in running) == sorted(versions), running
        return running

    return list(until(check))


def one_running(site: Site, version: str) -> Worker:
    return running_versions(site, version)[0]


def test_a_worker_runs_beside_the_server_in_its_environment(site: Site) -> None:
    assert_ok(site.deploy())
    assert release_served(site.url) == "1"
    worker = one_running(site, "1")
    site.releases["1"] = worker.release
    # The server's environment: shared/environment's secret, never on its command line.
    assert worker.secret == "only-on-the-host"
    assert "only-on-the-host" not in site.run(["cat", f"/proc/{worker.pid}/cmdline"])
    # As root, the worker runs as the server's account, the app's own, not as root.
    assert site.run(["ps", "-o", "user:32=", "-p", str(worker.pid)]).strip() == app_account(PATH)
    log = site.run(["cat", f"{PATH}/shared/logs/{worker.release}.worker.1.log"])
    assert "worker 1 up" in log
    assert any("processes started: worker.1" in line for line in site.lines), site.lines


def test_the_next_deploy_stops_the_old_worker_gracefully_and_starts_two_new_ones(site: Site) -> None:
    (old,) = site.running()
    write_project(site.project, "2", release="python release.py")
    assert_ok(site.deploy(process_counts={"worker": 2}))
    assert release_served(site.url) == "2"
    running = running_versions(site, "2", "2")
    assert len({w.pid for w in running}) == 2
    site.releases["2"] = running[0].release
    # The old worker got SIGTERM and said so as it ended: stopped, not killed.
    ended = {w.pid: w for w in read_workers(site.run)}[old.pid]
    assert ended.stopped, ended
    # The release: line ran once, in the release's environment, before the switch.
    ran = site.run(["cat", f"{OUT}/release-ran"]).splitlines()
    assert ran == [f"{site.releases['2']} only-on-the-host"]
    said = "\n".join(site.lines)
    assert said.index("release: python release.py") < said.index("current ->") < said.index("processes started")


def test_status_lists_the_live_releases_workers(site: Site) -> None:
    state = site.state()
    live = next(r for r in state["releases"] if r["id"] == state["current"])
    assert sorted(live["processes"]) == ["worker.1", "worker.2"]
    assert all(p["running"] and p["pid"] for p in live["processes"].values()), live
    text = _describe(site.target.label, state)
    assert "process worker.1 pid " in text and "process worker.2 pid " in text and "NOT RUNNING" not in text, text


def test_rollback_brings_the_old_releases_worker_back(site: Site) -> None:
    results = rollback([site.target], site.opts, say=site.say)
    assert_ok(results)
    assert release_served(site.url) == "1"
    worker = one_running(site, "1")
    assert worker.release == site.releases["1"]
    assert not [w for w in site.running() if w.version == "2"]


def test_config_restart_stop_and_start_take_the_workers_along(site: Site) -> None:
    """warp config --restart restarts the workers with the new environment; warp stop stops them, warp start starts
    them again (after the web server, as a deploy does)."""
    (before,) = site.running()
    done = change_config([site.target], site.opts, Change({"SECRET_TOKEN": "changed"}, ()), restart=True, say=site.say)
    assert_ok(done.results)
    after = until(lambda: [w for w in site.running() if w.secret == "changed"] or _not_yet())
    assert after[0].release == before.release and after[0].pid != before.pid
    assert {w.pid: w for w in read_workers(site.run)}[before.pid].stopped  # SIGTERM: it finished, not killed
    assert_ok(stop([site.target], site.opts, say=site.say).results)
    until(lambda: not site.running() or _not_yet())
    assert_ok(start([site.target], site.opts, say=site.say).results)
    assert release_served(site.url) == "1"
    (again,) = until(lambda: site.running() or _not_yet())
    assert again.secret == "changed" and again.release == before.release
    done = change_config([site.target], site.opts, Change({"SECRET_TOKEN": "only-on-the-host"}, ()), restart=True, say=site.say)
    assert_ok(done.results)
    until(lambda: [w for w in site.running() if w.secret == "only-on-the-host"] or _not_yet())


def test_start_after_a_stop_cut_off_once_its_workers_stopped_starts_them_again(site: Site) -> None:
    """warp stop stops the workers, then the server: cut off between the two (the connection lost), the server still
    runs. warp start must not stop at "runs already": the workers are started again."""
    from warptasks.remote.host import HostDeploy

    (before,) = site.running()
    h = HostDeploy(site.target, site.opts, site.say)
    try:
        h.connect(None)
        h.agent("processes", op="stop", release=before.release)
    finally:
        h.close()
    until(lambda: not site.running() or _not_yet())
    assert_ok(start([site.target], site.opts, say=site.say).results)
    (again,) = until(lambda: site.running() or _not_yet(), seconds=20)
    assert again.release == before.release and again.pid != before.pid


def _not_yet() -> Any:
    raise AssertionError("not yet")


def test_a_failing_release_line_switches_nothing_and_leaves_the_worker_alone(site: Site) -> None:
    (before,) = site.running()
    write_project(site.project, "3", release="python -c 'import sys; print(\"no release today\"); sys.exit(3)'")
    results = site.deploy()
    assert not results[0].ok
    assert "release" in results[0].message and "no release today" in results[0].message, results[0].message
    assert release_served(site.url) == "1"
    time.sleep(1)
    (after,) = site.running()
    assert (after.pid, after.version) == (before.pid, "1")
    assert not any("processes" in line for line in site.lines), site.lines
    failed = [r for r in site.state()["releases"] if r["id"] not in site.releases.values()]
    assert [r["status"] for r in failed] == ["failed"], failed


def test_an_unknown_process_type_is_refused_before_any_host(site: Site) -> None:
    with pytest.raises(Exception, match="clock, which the Procfile has no line for"):
        site.deploy(process_counts={"clock": 1})


def test_a_worker_that_cannot_start_fails_the_deploy_but_the_web_switch_stands(site: Site) -> None:
    write_project(site.project, "4")
    (site.project / "Procfile").write_text("worker: python -c 'import sys; print(\"worker broke\"); sys.exit(4)'\n")
    results = site.deploy()
    assert not results[0].ok
    message = results[0].message
    assert "stands" in message and "worker.1 exited at once" in message and "worker broke" in message, message
    assert release_served(site.url) == "4"
    # The old release's worker was stopped first (never two releases' workers at once): none runs now.
    running_versions(site)


def test_a_changed_count_alone_is_a_new_release_and_a_hosts_own_count_wins(site: Site) -> None:
    write_project(site.project, "5")
    assert_ok(site.deploy())
    one_running(site, "5")
    assert_ok(site.deploy(process_counts={"worker": 2}))
    running_versions(site, "5", "5")
    # A host's own count beats the deploy's: 0 runs none there.
    results = deploy([replace(site.target, processes=(("worker", 0),))], str(site.project), site.opts, say=site.say)
    assert_ok(results)
    running_versions(site)


def test_remove_stops_the_workers(site: Site) -> None:
    assert_ok(site.deploy())
    one_running(site, "5")
    results = remove([site.target], site.opts, say=site.say)
    assert_ok(results)
    until(lambda: running_versions(site), 20)
    assert any("(process types)" in line for line in site.lines), site.lines


def test_on_a_systemd_host_a_worker_is_a_unit_that_comes_back_after_kill_9(tmp_path: Path) -> None:
    machine = SystemdHost(ensure_engine(), tmp_path)
    try:
        machine.run(f"mkdir -p {OUT} && chmod 1777 {OUT}")
        project = tmp_path / "site"
        write_project(project, "1")
        path = "/srv/procs-sys"
        opts = DeploySettings.resolve(
            None, path=path, identity=machine.keys.key_filename, known_hosts=machine.known_hosts, wheels=True, drain=1
        )
        target = HostTarget(machine.address, "root")
        assert_ok(deploy([target], str(project), opts, say=print))
        assert release_served(f"http://{machine.address}:8080/") == "1"
        unit = _unit_name(path, "proc").replace("@.service", "@worker.1.service")
        assert machine.run(f"systemctl is-active {unit}").strip() == "active"
        assert machine.run(f"systemctl is-enabled {unit}").strip() == "enabled"

        def run(argv: list[str]) -> str:
            code, output = machine.container.exec_run(argv)
            assert code == 0, output
            return str(output.decode())

        def one() -> Worker:
            running = [w for w in read_workers(run) if w.running]
            assert len(running) == 1, running
            return running[0]

        first = until(one)
        machine.run(f"kill -9 {first.pid}")

        def another() -> Worker:
            worker = one()
            assert worker.pid != first.pid, worker
            return worker

        second = until(another)

        def another_version(version: str) -> Callable[[], Worker]:
            def check() -> Worker:
                worker = one()
                assert worker.version == version, worker
                return worker

            return check

        assert second.version == "1" and second.release == first.release
        state = status([target], opts)[target.label]
        live = next(r for r in state["releases"] if r["id"] == state["current"])
        assert live["processes"]["worker.1"]["unit"] == unit and live["processes"]["worker.1"]["running"], live

        # The next release takes the same unit instance over: the old worker stopped by systemd with SIGTERM.
        write_project(project, "2")
        assert_ok(deploy([target], str(project), opts, say=print))
        third = until(another_version("2"))
        assert {w.pid: w for w in read_workers(run)}[second.pid].stopped
        assert machine.run(f"systemctl is-active {unit}").strip() == "active"
        # Rolled back, the unit runs the old release's code again.
        assert_ok(rollback([target], opts, say=print))
        assert until(another_version("1")).release == first.release
        assert {w.pid: w for w in read_workers(run)}[third.pid].stopped
    finally:
        machine.remove()
