"""The Caddy front under load on a real host: deploy, rollback and a forced redeploy lose no request; a host still
served by the old relay is taken over in place (the gap measured); 1000 idle connections do not slow requests down.

One host (host network: its ports are 127.0.0.1's), two apps on its one Caddy. The tests run in order: the first
ones deploy the app the later ones use. They print the numbers (requests, failures, the relay's gap, latencies).
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.interrupt import PAUSE_AT, PAUSE_DIR
from warptasks.remote.rollback import rollback, status
from warptasks.settings import DeploySettings

from .deploy_helpers import assert_ok, drop_workdir, get, make_django_project, make_workdir, set_version
from .test_deploy import deploy_image, free_port_run

pytestmark = pytest.mark.remote

PATH = "/srv/front"  # the app of the zero-failure and idle-connection tests
RELAYED = "/srv/relayed"  # the app first served by the old relay
RELAY = Path(__file__).resolve().parents[2] / "bench" / "relay.py"

# /where/ names the release that answered: a forced redeploy of the same version is told apart by it.
WHERE = """import os

from django.conf import settings
from django.http import HttpResponse

from . import views


def where(request):
    return HttpResponse(f"release {views.VERSION} {os.path.basename(str(settings.BASE_DIR))}\\n", content_type="text/plain")
"""


def add_where_view(root: Path) -> None:
    (root / "mysite" / "where.py").write_text(WHERE)
    urls = root / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + "\nfrom . import where  # noqa: E402\n\nurlpatterns.append(path('where/', where.where))\n")
    for path in (root / "mysite" / "where.py", urls):
        os.chmod(path, 0o644)


# ---------------------------------------------------------------- load


def _answer(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, str, bool]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    return response.status, body, response.will_close


@dataclass
class Traffic:
    """Keep-alive clients (one connection reused) and new-connection clients on 127.0.0.1:``port``, bounded in count
    and time; each answer's release and each failure's time are kept."""

    port: int
    path: str = "/where/"
    keep_alive: int = 3
    fresh: int = 3
    max_requests: int = 20000
    max_seconds: float = 240
    seen: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)
    successes: list[float] = field(default_factory=list)
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (time, kind, error)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.successes)

    def _record(self, kind: str, status: int, body: str) -> None:
        now = time.monotonic()
        with self._lock:
            if status == 200 and body.startswith("release "):
                release = " ".join(body.split()[1:3])
                self.seen[release] += 1
                self.first_seen.setdefault(release, now)
                self.successes.append(now)
            else:
                self.failures.append((now, kind, f"HTTP {status}: {body[:80]}"))

    def _fail(self, kind: str, error: BaseException) -> None:
        with self._lock:
            self.failures.append((time.monotonic(), kind, repr(error)[:120]))

    def _keep_alive(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                status, body, closing = _answer(conn, self.path, {})
                self._record("keep-alive", status, body)
                if closing:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as error:
                self._fail("keep-alive", error)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)  # a refused port answers at once: a few hundred failures a second, not a million
        if conn is not None:
            conn.close()

    def _new_connections(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                status, body, _ = _answer(conn, self.path, {"Connection": "close"})
                self._record("new-connection", status, body)
            except (OSError, http.client.HTTPException) as error:
                self._fail("new-connection", error)
                time.sleep(0.01)
            finally:
                conn.close()

    def __enter__(self) -> Traffic:
        targets = [self._keep_alive] * self.keep_alive + [self._new_connections] * self.fresh
        for target in targets:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def wait_for(self, count: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.ok < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_to_see(self, version: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not any(r.startswith(version + " ") for r in self.first_seen) and time.monotonic() < deadline:
            time.sleep(0.05)

    def gap(self) -> float:
        """The longest time with no request answered around a failure: from the last answer before a failure to
        the first one after it (0 without failures)."""
        answers = sorted(self.successes)
        longest = 0.0
        for when, _, _ in self.failures:
            before = max((t for t in answers if t <= when), default=when)
            after = min((t for t in answers if t >= when), default=when)
            longest = max(longest, after - before)
        return longest

    def report(self, label: str) -> str:
        kinds = Counter(kind for _, kind, _ in self.failures)
        return f"{label}: {self.ok} answered, {len(self.failures)} failed {dict(kinds)}; releases seen {dict(self.seen)}"


@dataclass
class Slow:
    """One long request (``seconds``) on a new connection, with when it started and ended."""

    port: int
    seconds: float = 5
    started: float = 0.0
    ended: float = 0.0
    answer: tuple[int, str] | None = None
    error: str = ""

    def run(self) -> None:
        self.started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            status, body, _ = _answer(conn, f"/slow/?seconds={self.seconds}", {})
            self.answer = (status, body)
        except (OSError, http.client.HTTPException) as error:
            self.error = repr(error)
        finally:
            conn.close()
            self.ended = time.monotonic()


# ---------------------------------------------------------------- the host


@dataclass
class Fleet:
    host: Any
    port: int  # PATH's public port
    relayed_port: int  # RELAYED's public port
    project: Path
    opts: DeploySettings
    lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> HostTarget:
        return HostTarget(self.host.address, self.host.user, self.host.port, app_port=self.port, listen="127.0.0.1")

    @property
    def relayed_target(self) -> HostTarget:
        return HostTarget(self.host.address, self.host.user, self.host.port, app_port=self.relayed_port, listen="127.0.0.1")

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text)

    def deploy(self, target: HostTarget | None = None, **extra: Any) -> list[Any]:
        self.lines.clear()
        results = deploy([target or self.target], str(self.project), replace(self.opts, **extra), say=self.say)
        print(summary(results))
        return results

    def rollback(self) -> list[Any]:
        self.lines.clear()
        results = rollback([self.target], self.opts, say=self.say)
        print(summary(results))
        return results

    def sh(self, command: str) -> str:
        code, output = self.host.exec(command)
        assert code == 0, output
        return output


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    client = ensure_engine()
    hosts = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = make_workdir("warp-front-switch-")
    try:
        host = hosts[0]
        port = free_port_run()
        relayed = free_port_run()
        while abs(relayed - port) < 3:
            relayed = free_port_run()
        project = make_django_project(workdir / "site", "1")
        add_where_view(project)
        opts = DeploySettings.resolve(
            None, path=PATH, identity=host.key_filename, known_hosts=host.known_hosts, wheels=True, keep=4, drain=1
        )
        yield Fleet(host, port, relayed, project, opts)
    finally:
        remove_hosts(hosts)
        drop_workdir(workdir)


def _served(port: int, path: str = "/where/") -> str:
    status, body = get(f"http://127.0.0.1:{port}{path}")
    assert status == 200 and body.startswith("release "), (status, body[:300])
    return " ".join(body.split()[1:3])


# ---------------------------------------------------------------- 1: no failed request across a switch


def _across_switch(fleet: Fleet, action: Callable[[], list[Any]], label: str, tmp: Path) -> tuple[Traffic, Slow]:
    """``action`` (a deploy or rollback) under load, held before its switch until a 5 s request is 1 s in flight."""
    before = _served(fleet.port)
    slow = Slow(fleet.port)
    results: list[Any] = []
    os.environ[PAUSE_AT], os.environ[PAUSE_DIR] = "switch", str(tmp)
    try:
        with Traffic(fleet.port) as load:
            load.wait_for(50)
            worker = threading.Thread(target=lambda: results.extend(action()), daemon=True)
            worker.start()
            deadline = time.monotonic() + 300
            while not (tmp / "paused-switch").exists():
                assert worker.is_alive() and time.monotonic() < deadline, f"{label} did not get to the switch"
                time.sleep(0.05)
            slow_thread = threading.Thread(target=slow.run, daemon=True)
            slow_thread.start()
            time.sleep(1)
            go = time.monotonic()
            (tmp / "go").touch()
            worker.join(timeout=300)
            slow_thread.join(timeout=60)
            after = _served(fleet.port)
            load.wait_to_see(after, 30)
            time.sleep(1)
    finally:
        del os.environ[PAUSE_AT], os.environ[PAUSE_DIR]
    assert_ok(results)
    print(load.report(label))
    new_first = load.first_seen.get(after, 0.0)
    print(
        f"{label}: slow request {slow.answer or slow.error} from {slow.started - go:+.2f}s to {slow.ended - go:+.2f}s "
        f"after the go; {after} first answered at {new_first - go:+.2f}s"
    )
    assert load.failures == [], [f"{kind}: {error}" for _, kind, error in load.failures[:10]]
    assert after != before and {before, after} <= set(load.seen), (before, after, load.seen)
    # In flight across the switch: begun before the first answer of the new release, ended after it, on the old one.
    assert slow.started < new_first < slow.ended, (slow.started, new_first, slow.ended)
    assert slow.answer == (200, f"release {before.split()[0]} slow\n"), (slow.answer, slow.error)
    return load, slow


def test_first_deploy_through_caddy(fleet: Fleet) -> None:
    assert_ok(fleet.deploy())
    assert _served(fleet.port).startswith("1 ")


def test_deploy_under_load_fails_no_request(fleet: Fleet, tmp_path: Path) -> None:
    set_version(fleet.project, "2")
    _across_switch(fleet, fleet.deploy, "deploy 1 -> 2", tmp_path)


def test_rollback_under_load_fails_no_request(fleet: Fleet, tmp_path: Path) -> None:
    _across_switch(fleet, fleet.rollback, "rollback 2 -> 1", tmp_path)
    assert _served(fleet.port).startswith("1 ")


def test_forced_redeploy_under_load_fails_no_request(fleet: Fleet, tmp_path: Path) -> None:
    # The live release's source again (version 1, rolled back to): a new release of the same code, a restart.
    set_version(fleet.project, "1")
    _across_switch(fleet, lambda: fleet.deploy(force=True), "forced redeploy of 1", tmp_path)
    assert _served(fleet.port).startswith("1 ")


# ---------------------------------------------------------------- 3: idle connections


def _latencies(port: int, count: int = 200) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        status, body = get(f"http://127.0.0.1:{port}/", timeout=10)
        times.append(time.perf_counter() - start)
        assert status == 200 and body.startswith("release "), (status, body[:200])
    return times


def _describe(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def test_a_thousand_idle_connections_do_not_stop_requests(fleet: Fleet) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    idle: list[Any] = []
    try:
        without = _latencies(fleet.port)
        # Half after one keep-alive request (Caddy's idle_timeout: 120 s), half that sent nothing (its
        # read_header_timeout closes those after 10 s: they are opened last, just before the measure).
        for _ in range(500):
            conn = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
            status, _, closing = _answer(conn, "/", {})
            assert status == 200 and not closing
            idle.append(conn)
        opened = time.monotonic()
        for _ in range(500):
            idle.append(socket.create_connection(("127.0.0.1", fleet.port), timeout=10))
        with_idle = _latencies(fleet.port)
        elapsed = time.monotonic() - opened
        still_open = sum(_still_open(s.sock if isinstance(s, http.client.HTTPConnection) else s) for s in idle)
    finally:
        for item in idle:
            item.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(f"200 requests, no idle connection:    {_describe(without)}")
    print(f"200 requests, 1000 idle connections: {_describe(with_idle)} ({elapsed:.1f}s after the silent ones opened)")
    print(f"idle connections still open after the measure: {still_open} of {len(idle)}")
    assert sorted(with_idle)[int(len(with_idle) * 0.99)] < 2, "p99 above 2 s"


def _still_open(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- 2: the old relay taken over in place


def _start_relay(fleet: Fleet, root: str = RELAYED, port: int | None = None) -> int:
    """The host as the version before Caddy left it: the relay's script in shared/, running in its own session on the
    public port, with its pidfile and record."""
    shared = f"{root}/shared"
    port = port or fleet.relayed_port
    fleet.host.put_file(f"{shared}/warp-proxy.py", RELAY.read_bytes(), 0o644)
    argv = ["python3", f"{shared}/warp-proxy.py", "127.0.0.1", str(port), root]
    record = json.dumps({"listen": "127.0.0.1", "port": port, "pid_start": None})
    spawn = (
        "import subprocess, sys; "
        f"log = open('{shared}/relay.log', 'ab'); "
        f"p = subprocess.Popen({argv!r}, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True); "
        f"open('{shared}/proxy.pid', 'w').write(str(p.pid)); "
        f"open('{shared}/proxy.json', 'w').write({record!r}); print(p.pid)"
    )
    pid = int(fleet.sh(f"python3 -c {_quote(spawn)}").strip())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            _served(port)
            return pid
        except (OSError, AssertionError):
            time.sleep(0.1)
    raise AssertionError("the relay does not serve: " + fleet.sh(f"cat {shared}/relay.log"))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _relay_processes(fleet: Fleet) -> int:
    return int(fleet.sh("ps -eo args | grep -c '[w]arp-proxy.py' || true").strip() or 0)


def test_a_host_served_by_the_old_relay_is_taken_over_in_place(fleet: Fleet) -> None:
    set_version(fleet.project, "r1")
    assert_ok(fleet.deploy(fleet.relayed_target, path=RELAYED, proxy="none"))
    assert "127.0.0.1:" in fleet.sh(f"cat {RELAYED}/shared/upstream")
    _start_relay(fleet)
    assert _served(fleet.relayed_port).startswith("r1 ")
    relayed = replace(fleet.opts, path=RELAYED)
    assert status([fleet.relayed_target], relayed)[fleet.relayed_target.label]["front"]["relay"] == fleet.relayed_port

    set_version(fleet.project, "r2")
    with Traffic(fleet.relayed_port) as load:
        load.wait_for(50)
        started = time.monotonic()
        results = fleet.deploy(fleet.relayed_target, path=RELAYED)
        took = time.monotonic() - started
        load.wait_to_see("r2", 30)
        time.sleep(1)
    assert_ok(results)
    print(load.report("relay -> Caddy"))
    gap = load.gap()
    window = (load.failures[-1][0] - load.failures[0][0]) if load.failures else 0.0
    print(
        f"relay -> Caddy: {len(load.failures)} failed of {load.ok + len(load.failures)} requests; gap (no answer "
        f"around a failure) {gap * 1000:.0f} ms; first to last failure {window * 1000:.0f} ms; deploy {took:.1f}s"
    )
    for when, kind, error in load.failures[:8]:
        print(f"  {when - started:+.3f}s {kind}: {error}")
    assert any("front: the old relay on port" in line for line in fleet.lines), fleet.lines
    assert {"r1", "r2"} <= {r.split()[0] for r in load.seen}, load.seen
    assert gap < 5, f"gap {gap:.2f}s"

    # Caddy serves it now: no relay runs, the status names none, and Caddy's access log has a request of ours.
    assert _relay_processes(fleet) == 0
    state = status([fleet.relayed_target], relayed)[fleet.relayed_target.label]
    assert state["front"]["relay"] is None, state["front"]
    marker = uuid.uuid4().hex
    assert _served(fleet.relayed_port, f"/where/?probe={marker}").startswith("r2 ")
    deadline = time.monotonic() + 10
    while marker not in fleet.sh("cat /var/lib/warp-front/logs/access.log") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker in fleet.sh("cat /var/lib/warp-front/logs/access.log")


def test_the_relay_serves_again_when_caddy_cannot_take_its_port(fleet: Fleet) -> None:
    # Another program holds the public port on IPv6 loopback ([::1], v6 only): the relay (127.0.0.1) runs beside it,
    # but Caddy, told to listen on every address ([::]:port), cannot bind. The host network is ours: we hold it here.
    root, port = "/srv/relayed-b", free_port_run()
    while min(abs(port - p) for p in (fleet.port, fleet.relayed_port)) < 3:
        port = free_port_run()
    target = HostTarget(fleet.host.address, fleet.host.user, fleet.host.port, app_port=port, listen="127.0.0.1")
    set_version(fleet.project, "b1")
    assert_ok(fleet.deploy(target, path=root, proxy="none"))
    _start_relay(fleet, root, port)
    with socket.socket(socket.AF_INET6) as blocker:
        blocker.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        blocker.bind(("::1", port))
        blocker.listen()
        set_version(fleet.project, "b2")
        everywhere = HostTarget(fleet.host.address, fleet.host.user, fleet.host.port, app_port=port)
        results = fleet.deploy(everywhere, path=root)
    assert not any(r.ok for r in results), summary(results)
    message = summary(results) + "\n" + "\n".join(fleet.lines)
    # One action on the host: the relay stopped, Caddy refused the port (its holder named), the relay back.
    assert "the old relay serves it again" in message and f"port {port} is held by " in message, message
    assert _served(port).startswith("b1 ")
    assert _relay_processes(fleet) == 1
    state = status([target], replace(fleet.opts, path=root))[target.label]
    assert state["front"]["relay"] == port, state["front"]
