"""warp deploy against real SSH hosts: a Django project served by Apache/mod_wsgi on two hosts,
one of them with no network at all (its dependencies are shipped as wheels).

The tests of this module run in order on the same two hosts, as a project's
deploys would: first deploy, a second version under load, rollback, then
faults that must each leave the live release serving.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from tests.harness.images import SSH_PACKAGES, base_image
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.interrupt import PAUSE_AT, PAUSE_DIR
from warptasks.remote.rollback import rollback, status
from warptasks.settings import DeploySettings

from .deploy_helpers import Load, assert_ok, drop_workdir, get, make_django_project, make_workdir, release_served, set_version

pytestmark = pytest.mark.remote

PATH = "/srv/mysite"


def free_port_run(count: int = 3) -> int:
    """A port P with P..P+count-1 free on 127.0.0.1 (the public port and the two backend ports).

    Chosen below the kernel's ephemeral range, where ports handed out for
    outgoing connections and to other tests' ``bind(0)`` never land.
    """
    for _ in range(500):
        base = random.randrange(20000, 32000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports found")


def deploy_image(client: Any) -> str:
    # mod_wsgi-express runs Apache itself: apache2, not only apache2-dev (apxs).
    return base_image(client, (*SSH_PACKAGES, "apache2"))


@dataclass
class Fleet:
    hosts: list[Any]
    targets: list[HostTarget]
    urls: list[str]
    project: Path
    opts: DeploySettings
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text)

    def deploy(self, **extra: Any) -> list[Any]:
        self.lines.clear()
        results = deploy(self.targets, str(self.project), replace(self.opts, **extra), say=self.say)
        print(summary(results))
        return results

    def served(self) -> list[str]:
        return [release_served(url) for url in self.urls]

    def state(self) -> dict[str, Any]:
        return status(self.targets, self.opts)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    client = ensure_engine()
    image = deploy_image(client)
    hosts = ssh_hosts(client, 1, network="host", image=image) + ssh_hosts(client, 1, network="bridge", image=image)
    workdir = make_workdir("warp-deploy-")
    try:
        online, offline = hosts
        port = free_port_run()
        targets = [
            HostTarget(online.address, online.user, online.port, app_port=port, listen="127.0.0.1"),
            HostTarget(offline.address, offline.user, offline.port),
        ]
        secrets_file = workdir / "secrets.env"
        secrets_file.write_text("SECRET_TOKEN=only-on-the-host\n")
        project = make_django_project(workdir / "site", "1")
        (project / ".env").write_text("NEVER=shipped\n")
        opts = DeploySettings.resolve(
            None,
            path=PATH,
            identity=online.key_filename,
            known_hosts=online.known_hosts,
            wheels=True,
            env_file=str(secrets_file),
            keep=3,
            drain=1,
        )
        urls = [f"http://127.0.0.1:{port}/", f"http://{offline.address}:8080/"]
        yield Fleet(hosts, targets, urls, project, opts)
    finally:
        remove_hosts(hosts)
        drop_workdir(workdir)


def _sh(host: Any, command: str) -> str:
    code, output = host.exec(command)
    assert code == 0, output
    return output


def test_first_deploy_serves_pages_and_static_files_on_every_host(fleet: Fleet) -> None:
    assert_ok(fleet.deploy())
    assert sum("upload: send the release (rsync)" in line for line in fleet.lines) == 2
    assert fleet.served() == ["1", "1"]
    for url in fleet.urls:
        status, css = get(url + "static/site.css")
        assert status == 200 and "release 1" in css
        status, admin_css = get(url + "static/admin/css/base.css")
        assert status == 200 and "body" in admin_css
    # The migration ran once for the whole deploy, on one host.
    migrations = [_sh(h, f"cat {PATH}/shared/data/migrations.log 2>/dev/null || true") for h in fleet.hosts]
    assert sum(len(m.splitlines()) for m in migrations) == 1
    for host in fleet.hosts:
        assert _sh(host, f"stat -c %a {PATH}/shared/environment").strip() == "600"
        assert "only-on-the-host" in _sh(host, f"cat {PATH}/shared/environment")
        assert _sh(host, f"ls -A {PATH}/current/ | grep -c '^.env$' || true").strip() == "0"
        # Apache serves it from the release's own server root (.warp/run/HOST-PORT), never a predictable one in /tmp.
        assert "/httpd.conf" in _sh(host, f"ls -d {PATH}/current/.warp/run/127.0.0.1-*/httpd.conf")
        assert "mod_wsgi-" not in _sh(host, "ls /tmp")


def test_the_offline_host_really_has_no_network(fleet: Fleet) -> None:
    offline = fleet.hosts[1]
    code, output = offline.exec("python3 -c \"import socket; socket.create_connection(('pypi.org', 443), timeout=3)\"")
    assert code != 0, output


def test_second_version_deploys_under_load_without_a_failed_request(fleet: Fleet) -> None:
    set_version(fleet.project, "2")
    with Load(fleet.urls, max_requests=5000, max_seconds=300) as load:
        deadline = time.monotonic() + 30
        while load.ok < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        results = fleet.deploy()
        settle = time.monotonic() + 30
        while "2" not in load.seen and time.monotonic() < settle:
            time.sleep(0.1)
        time.sleep(1)
    assert_ok(results)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20 and {"1", "2"} <= load.seen
    assert fleet.served() == ["2", "2"]
    assert sum("upload: send what changed since the live release (rsync)" in line for line in fleet.lines) == 2
    # Same dependencies: the environment of release 1 was reused, nothing reinstalled.
    assert any("skip install requirements" in line for line in fleet.lines)
    for host in fleet.hosts:
        assert len(_sh(host, f"ls {PATH}/shared/envs").split()) == 1


def test_rollback_goes_back_to_the_previous_release(fleet: Fleet) -> None:
    before = fleet.state()
    results = rollback(fleet.targets, fleet.opts, say=print)
    assert_ok(results)
    assert fleet.served() == ["1", "1"]
    after = fleet.state()
    for label in after:
        releases = {r["id"]: r for r in after[label]["releases"]}
        assert after[label]["current"] < before[label]["current"]
        assert releases[before[label]["current"]]["status"] == "rolled-back"
        assert releases[before[label]["current"]]["pid"] is None
        assert releases[after[label]["current"]]["pid"]


def _live(fleet: Fleet) -> dict[str, str]:
    return {label: state["current"] for label, state in fleet.state().items()}


FAIL_ON_HOST = """#!/bin/bash
if [ "$(hostname)" = "{name}" ]; then echo "build broken on purpose" >&2; exit 1; fi
"""


def test_build_failing_on_one_host_switches_no_host(fleet: Fleet) -> None:
    live = _live(fleet)
    hook = fleet.project / ".warpdrive" / "action_hooks" / "build"
    hook.write_text(FAIL_ON_HOST.format(name=fleet.hosts[1].name))
    hook.chmod(0o755)
    set_version(fleet.project, "3")
    try:
        results = fleet.deploy(upload="sftp")
    finally:
        hook.unlink()
    assert sum("upload: one archive over SFTP" in line for line in fleet.lines) == 2
    assert [r.ok for r in results] == [False, False]
    assert results[1].phase == "build" and "build broken on purpose" in results[1].message
    assert "not switched" in results[0].message
    assert _live(fleet) == live and fleet.served() == ["1", "1"]
    state = fleet.state()[fleet.targets[0].label]
    assert {r["id"]: r["status"] for r in state["releases"]}[results[0].release] == "failed"


def test_allow_partial_switches_the_hosts_that_succeeded(fleet: Fleet) -> None:
    live = _live(fleet)
    hook = fleet.project / ".warpdrive" / "action_hooks" / "build"
    hook.write_text(FAIL_ON_HOST.format(name=fleet.hosts[1].name))
    hook.chmod(0o755)
    set_version(fleet.project, "3b")
    try:
        results = fleet.deploy(allow_partial=True)
    finally:
        hook.unlink()
    assert [r.ok for r in results] == [True, False]
    assert fleet.served() == ["3b", "1"]
    after = _live(fleet)
    assert after[fleet.targets[0].label] != live[fleet.targets[0].label]
    assert after[fleet.targets[1].label] == live[fleet.targets[1].label]


def test_failing_health_check_keeps_the_old_release(fleet: Fleet) -> None:
    live, served = _live(fleet), fleet.served()
    views = fleet.project / "mysite" / "views.py"
    set_version(fleet.project, "4")
    views.write_text(views.read_text() + "\n\ndef home(request):\n    raise RuntimeError('broken release')\n")
    results = fleet.deploy(health_timeout=8)
    assert not any(r.ok for r in results)
    assert any(r.phase == "health" and "health check" in r.message for r in results), summary(results)
    assert _live(fleet) == live and fleet.served() == served
    for state in fleet.state().values():
        failed = [r for r in state["releases"] if r["status"] == "failed"]
        assert failed and all(r["pid"] is None for r in failed)


class CuttingRelay:
    """A TCP relay to an SSH server that cuts the first connection to send more than ``limit`` bytes up."""

    def __init__(self, target: tuple[str, int], limit: int) -> None:
        self.target, self.limit = target, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        for _ in range(20):
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, cutting: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                sent += len(data)
                if cutting and sent > self.limit and not self.cut.is_set():
                    self.cut.set()
                    break
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_connection_cut_during_upload_keeps_the_old_release(fleet: Fleet) -> None:
    online = fleet.hosts[0]
    live, served = _live(fleet)[fleet.targets[0].label], release_served(fleet.urls[0])
    set_version(fleet.project, "5")
    blob = fleet.project / "assets" / "blob.bin"
    blob.write_bytes(os.urandom(4 * 1024 * 1024))
    os.chmod(blob, 0o644)
    relay = CuttingRelay((online.address, online.port), limit=1024 * 1024)
    known = Path(fleet.project.parent / "relay_known_hosts")
    known.write_text("".join(f"[127.0.0.1]:{relay.port} {line.split(' ', 1)[1]}\n" for line in online.host_keys))
    target = HostTarget("127.0.0.1", online.user, relay.port, app_port=fleet.targets[0].app_port, listen="127.0.0.1")
    try:
        results = deploy([target], str(fleet.project), replace(fleet.opts, known_hosts=str(known)), say=print)
    finally:
        relay.close()
        blob.unlink()
    assert relay.cut.is_set()
    assert not results[0].ok and results[0].phase == "upload", summary(results)
    assert _live(fleet)[fleet.targets[0].label] == live
    assert release_served(fleet.urls[0]) == served
    # The lock was given back (over a new connection), so the next deploy goes through.
    assert_ok(fleet.deploy())
    assert fleet.served() == ["5", "5"]


def test_a_second_deploy_to_a_locked_host_fails_naming_the_holder(fleet: Fleet) -> None:
    online = fleet.hosts[0]
    set_version(fleet.project, "6")
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.extend(fleet.deploy()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while online.exec(f"test -d {PATH}/.warp-deploy.lock")[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = deploy(fleet.targets[:1], str(fleet.project), replace(fleet.opts, lock_wait=1), say=print)
    thread.join(timeout=600)
    assert not second[0].ok and second[0].phase == "lock"
    assert "lock held by" in second[0].message and "pid" in second[0].message
    assert_ok(first)
    assert fleet.served() == ["6", "6"]


def test_a_stale_lock_is_broken_only_when_asked(fleet: Fleet) -> None:
    online = fleet.hosts[0]
    owner = json.dumps({"owner": "ci@build-7 (pid 4242)", "token": "gone", "since": "yesterday"})
    _sh(online, f"mkdir {PATH}/.warp-deploy.lock && echo '{owner}' > {PATH}/.warp-deploy.lock/owner.json")
    set_version(fleet.project, "7")
    refused = deploy(fleet.targets[:1], str(fleet.project), replace(fleet.opts, lock_wait=0), say=print)
    assert not refused[0].ok and "ci@build-7 (pid 4242)" in refused[0].message
    assert release_served(fleet.urls[0]) == "6"
    assert_ok(deploy(fleet.targets[:1], str(fleet.project), replace(fleet.opts, break_lock=True), say=print))
    assert release_served(fleet.urls[0]) == "7"
    # keep=3: old releases were pruned, and their environments with them.
    releases = _sh(online, f"ls {PATH}/releases").split()
    assert 3 <= len(releases) <= 4


def test_a_host_that_is_down_fails_the_deploy_and_no_host_switches(fleet: Fleet) -> None:
    online, offline = fleet.hosts
    live = _live(fleet)[fleet.targets[1].label]
    served = release_served(fleet.urls[1])
    online.stop()
    try:
        set_version(fleet.project, "8")
        results = fleet.deploy()
        assert [r.ok for r in results] == [False, False]
        assert results[0].phase == "connect" and "not switched" in results[1].message
        assert release_served(fleet.urls[1]) == served
        assert "cannot reach" in results[0].message
        assert status(fleet.targets[1:], fleet.opts)[fleet.targets[1].label]["current"] == live
    finally:
        online.start()
    # Back up (its processes did not survive the power cycle): the next deploy brings it back.
    assert_ok(fleet.deploy())
    assert fleet.served() == ["8", "8"]


def test_a_request_in_flight_when_the_old_apache_stops_completes(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Apache (mod_wsgi-express) stops gracefully on SIGWINCH; SIGTERM would cut the request off.
    old = release_served(fleet.urls[0])
    set_version(fleet.project, "9")
    monkeypatch.setenv(PAUSE_AT, "switch")  # held before the switch: the request below goes to the old server
    monkeypatch.setenv(PAUSE_DIR, str(tmp_path))
    results: list[Any] = []
    deploying = threading.Thread(target=lambda: results.extend(fleet.deploy(drain=0)), daemon=True)
    deploying.start()
    deadline = time.monotonic() + 600
    while not (tmp_path / "paused-switch").exists():
        assert deploying.is_alive() and time.monotonic() < deadline, "the deploy did not get to the switch"
        time.sleep(0.05)
    answers: list[tuple[int, str]] = []
    slow = threading.Thread(target=lambda: answers.append(get(fleet.urls[0] + "slow/?seconds=3", timeout=30)))
    slow.start()
    time.sleep(0.5)
    (tmp_path / "go").touch()
    deploying.join(timeout=600)
    slow.join(timeout=30)
    assert_ok(results)
    assert answers == [(200, f"release {old} slow\n")], answers
    assert any("SIGWINCH" in line and "old server of" in line for line in fleet.lines), fleet.lines
    assert fleet.served() == ["9", "9"]
