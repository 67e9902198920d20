"""The deploy agent on a host, run for real: ``python -c AGENT JSON`` against a temporary deploy root.

Each test runs the agent as the deploy does, as a separate process, with
real files, real servers on 127.0.0.1 and real signals. The servers are a
tiny stdlib HTTP app (:data:`APP`) whose behaviour on a stop signal is
chosen per test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from warptasks.scripts import agent as agent_module
from warptasks.scripts import source

AGENT = source("agent.py")
AGENT_FILE = str(files("warptasks.scripts").joinpath("agent.py"))  # run as a file: -c is capped at 128 KiB


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


def agent(action: str, root: Path | str, **request: Any) -> Answer:
    """Run one agent action as the deploy does: a separate ``python -c`` process (killed after 90s)."""
    payload = json.dumps({"action": action, "root": str(root), **request})
    return Answer(subprocess.run([sys.executable, AGENT_FILE, payload], capture_output=True, text=True, timeout=90))


def ok(action: str, root: Path | str, **request: Any) -> Answer:
    answer = agent(action, root, **request)
    assert answer.code == 0, answer
    return answer


def record(root: Path, release: str) -> dict[str, Any]:
    return json.loads((root / "releases" / release / ".warp" / "deploy.json").read_text())


def wait_for(condition: Any, timeout: float = 10, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def fetch(port: int, path: str = "/", host: str | None = None, timeout: float = 10) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"status": response.status, "body": response.read().decode()}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode()}
    except OSError as error:
        return {"error": repr(error)}


# A stand-in app server. Modes: "graceful" finishes its requests on SIGWINCH
# and dies at once on SIGTERM (as Apache does); "stubborn" notes SIGWINCH and
# SIGTERM and carries on; "picky" answers 500 on / and 200 on /ready only for
# Host app.example; "chatty" writes CHATTY bytes of output as it starts.
APP = """
import http.server, os, signal, sys, threading, time

port, mode, state = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def note(text):
    with open(os.path.join(state, "events"), "a") as handle:
        handle.write(text + "\\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            note("slow begun")
            time.sleep(2)
        code = 200
        if mode == "picky" and self.path == "/":
            code = 500
        if self.path == "/ready" and self.headers.get("Host") != "app.example":
            code = 400
        body = ("ok " + self.path).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        sys.stdout.write(format % args + "\\n")
        sys.stdout.flush()


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = False  # server_close() waits for the requests in flight


def graceful(signum, frame):
    note("got " + signal.Signals(signum).name)
    threading.Thread(target=server.shutdown).start()


def stubborn(signum, frame):
    note("got " + signal.Signals(signum).name)


if mode == "graceful":
    signal.signal(signal.SIGWINCH, graceful)
elif mode == "stubborn":
    signal.signal(signal.SIGWINCH, stubborn)
    signal.signal(signal.SIGTERM, stubborn)
elif mode == "chatty":
    line = "x" * 99 + "\\n"
    for _ in range(int(os.environ.get("CHATTY", "0")) // 100):
        sys.stdout.write(line)
    sys.stdout.flush()
note("serving")
server.serve_forever()
server.server_close()
note("exited")
"""


class Servers:
    """Starts the stand-in app through the agent's ``start``; whatever is left is killed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.app = tmp_path / "app_server.py"
        self.app.write_text(APP)
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.pids: list[int] = []

    def command(self, port: int, mode: str, env: str = "") -> str:
        return (
            f"{env}exec {shlex.quote(sys.executable)} {shlex.quote(str(self.app))} {port} {mode} {shlex.quote(str(self.state))}"
        )

    def start(self, root: Path, release: str, port: int, mode: str = "graceful", env: str = "", **request: Any) -> Answer:
        (root / "releases" / release / ".warp").mkdir(parents=True, exist_ok=True)
        (root / "shared" / "logs").mkdir(parents=True, exist_ok=True)
        answer = agent("start", root, release=release, port=port, command=self.command(port, mode, env), **request)
        if answer.code == 0:
            self.pids.append(answer["pid"])
        return answer

    def events(self) -> list[str]:
        try:
            return (self.state / "events").read_text().splitlines()
        except OSError:
            return []

    def kill_all(self) -> None:
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


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
    procs = [subprocess.Popen([sys.executable, AGENT_FILE, p], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in payloads]
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


# -- a deploy path no other account can change --------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: folders are given to another account")


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@as_root
def test_a_deploy_path_another_account_owns_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """That account could swap shared/envs/KEY/bin/python, which the next deploy runs as root."""
    root = tmp_path / "app"
    root.mkdir(mode=0o755)
    os.chown(root, *_nobody())
    refused = agent("lock", root, owner="o", token="t")
    assert refused.code != 0 and f"{root} is owned by nobody" in refused.data["error"], refused
    assert f"chown root {root}" in refused.data["error"]
    assert os.listdir(root) == [] and not (root / ".warp-deploy.lock").exists()


@as_root
def test_a_folder_above_the_deploy_path_another_account_owns_is_refused(tmp_path: Path) -> None:
    above = tmp_path / "home"
    above.mkdir(mode=0o755)
    os.chown(above, *_nobody())
    refused = agent("lock", above / "app", owner="o", token="t")
    assert refused.code != 0 and f"{above} is owned by nobody" in refused.data["error"], refused
    assert not (above / "app").exists()


@as_root
def test_a_subfolder_another_account_owns_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "shared" / "envs").mkdir(parents=True)
    os.chown(root / "shared" / "envs", *_nobody())
    refused = agent("lock", root, owner="o", token="t")
    assert refused.code != 0 and f"{root}/shared/envs is owned by nobody" in refused.data["error"], refused


@pytest.mark.parametrize("where", ["deploy path", "above it"])
def test_a_group_writable_deploy_path_or_folder_above_it_is_refused_and_left_as_it_is(tmp_path: Path, where: str) -> None:
    above = tmp_path / "srv"
    root = above / "app"
    root.mkdir(parents=True)
    writable = root if where == "deploy path" else above
    writable.chmod(0o775)
    refused = agent("lock", root, owner="o", token="t")
    assert refused.code != 0 and f"{writable} is writable by its group (mode 0775)" in refused.data["error"], refused
    assert f"chmod go-w {writable}" in refused.data["error"]
    assert writable.stat().st_mode & 0o777 == 0o775 and os.listdir(root) == []


def test_a_sticky_folder_may_be_above_the_deploy_path_but_never_be_it(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    ok("lock", sticky / "app", owner="o", token="t")
    refused = agent("lock", sticky, owner="o", token="t")
    assert refused.code != 0 and "is writable by its group and others (mode 1777)" in refused.data["error"], refused


def test_a_deploy_path_that_is_a_link_is_refused_a_link_above_it_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real" / "app").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "app")
    refused = agent("lock", tmp_path / "link", owner="o", token="t")
    assert refused.code != 0 and "is a symbolic link" in refused.data["error"], refused
    (tmp_path / "above").symlink_to(tmp_path / "real")
    ok("lock", tmp_path / "above" / "app", owner="o", token="t")
    assert (tmp_path / "real" / "app" / "releases").is_dir()


def test_lock_leaves_an_existing_deploy_paths_mode_and_makes_new_folders_0755(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir(mode=0o750)
    root.chmod(0o750)
    ok("lock", root, owner="o", token="t")
    assert root.stat().st_mode & 0o777 == 0o750  # lock used to chmod it 0755
    # Under a umask that leaves folders group-writable, the folders lock makes are 0755 all the same.
    deep = tmp_path / "new" / "deeper" / "app"
    payload = json.dumps({"action": "lock", "root": str(deep), "owner": "o", "token": "t"})
    command = f"umask 002 && exec {shlex.quote(sys.executable)} {shlex.quote(AGENT_FILE)} {shlex.quote(payload)}"
    made = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    for path in (tmp_path / "new", tmp_path / "new" / "deeper", deep, deep / "releases", deep / "shared" / "envs"):
        assert path.stat().st_mode & 0o777 == 0o755, path
    assert (deep / "shared" / "logs").stat().st_mode & 0o777 == 0o750


# -- a graceful stop ---------------------------------------------------------------


@pytest.mark.integration
def test_stop_lets_a_graceful_server_finish_the_request_in_flight(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    started = servers.start(root, "r1", port, "graceful", stop_signal="SIGWINCH", stop_timeout=10)
    assert started.code == 0, started
    assert record(root, "r1")["stop_signal"] == "SIGWINCH" and record(root, "r1")["stop_timeout"] == 10
    ok("health", root, release="r1", timeout=10)
    answers: dict[str, Any] = {}
    request = threading.Thread(target=lambda: answers.update(fetch(port, "/slow")))
    request.start()
    wait_for(lambda: "slow begun" in servers.events(), what="the slow request reaching the server")
    stopped = ok("stop", root, release="r1", drain=0)  # the signal comes from what start recorded
    request.join(timeout=15)
    assert answers == {"status": 200, "body": "ok /slow"}
    assert stopped["server"] == "stopped" and stopped["signals"] == ["SIGWINCH"], stopped
    assert servers.events()[-1] == "exited" and port_free(port)


@pytest.mark.integration
def test_a_server_that_ignores_its_stop_signal_gets_sigterm_then_sigkill(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, "stubborn", stop_signal="SIGWINCH", stop_timeout=0.5).code == 0
    ok("health", root, release="r1", timeout=10)
    begin = time.monotonic()
    stopped = ok("stop", root, release="r1", drain=0, term_timeout=0.5)
    assert stopped["server"] == "killed" and stopped["signals"] == ["SIGWINCH", "SIGTERM", "SIGKILL"], stopped
    assert [e for e in servers.events() if e.startswith("got")] == ["got SIGWINCH", "got SIGTERM"]
    assert time.monotonic() - begin < 8 and port_free(port)


def test_an_unknown_stop_signal_is_refused_before_anything_starts(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    (root / "shared" / "logs").mkdir(parents=True)
    refused = agent("start", root, release="r1", port=free_port(), command="exit 0", stop_signal="SIGNOPE")
    assert refused.code != 0 and "SIGNOPE" in refused.data["error"]
    assert not (root / "releases" / "r1" / ".warp" / "server.pid").exists()


def test_systemd_units_stop_with_the_servers_signal_and_timeout() -> None:
    dropin = agent_module._stop_dropin(signal.SIGWINCH, 30)
    assert dropin == "[Service]\nKillSignal=SIGWINCH\nTimeoutStopSec=30\n"


def test_a_server_already_gone_is_not_drained_for(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    begin = time.monotonic()
    assert ok("stop", root, release="r1", drain=5)["server"] == "not running"
    assert time.monotonic() - begin < 3


@pytest.mark.parametrize("pid_start", [1, None])
def test_retiring_the_old_relay_never_stops_a_process_its_stale_pidfile_names(tmp_path: Path, pid_start: int | None) -> None:
    """An old relay's pidfile whose pid now names another process (the relay died, the pid was reused): left alone,
    whether the record has the relay's start time (``pid_start``) or is older than that."""
    root = tmp_path / "app"
    (root / "shared" / "logs").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (root / "shared" / "proxy.pid").write_text(str(sleeper.pid))
        (root / "shared" / "proxy.json").write_text(json.dumps({"listen": "127.0.0.1", "port": 1, "pid_start": pid_start}))
        answer = ok("retire_relay", root).data
        assert answer == {"port": 1, "stopped": False} and sleeper.poll() is None
        assert json.loads((root / "shared" / "proxy.json").read_text())["retired"]
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_retiring_the_old_relay_stops_it(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "shared" / "logs").mkdir(parents=True)
    script = root / "shared" / "warp-proxy.py"
    # Like the relay: python3 warp-proxy.py LISTEN PORT PATH, listening until stopped.
    script.write_text(
        "import socket, sys, time\ns = socket.socket()\ns.bind((sys.argv[1], int(sys.argv[2])))\ns.listen()\ntime.sleep(60)\n"
    )
    port = free_port()
    relay = subprocess.Popen([sys.executable, str(script), "127.0.0.1", str(port), str(root)], start_new_session=True)
    try:
        wait_for(lambda: not port_free(port), timeout=5, what="the relay listening")
        (root / "shared" / "proxy.pid").write_text(str(relay.pid))
        (root / "shared" / "proxy.json").write_text(json.dumps({"listen": "127.0.0.1", "port": port, "pid_start": None}))
        assert ok("retire_relay", root).data == {"port": port, "stopped": True}
        assert relay.wait(timeout=5) is not None
        assert ok("info", root).data["relay"] is None
        # The front meant to take over fails: the relay comes back, listening, and the handover fails saying so.
        failing = {"source": 'import sys; print(\'{"error": "no"}\'); sys.exit(1)', "site": {}}
        refused = agent("handover", root, **failing)
        assert refused.code != 0 and refused.data["error"].endswith("no; the old relay serves it again"), refused
        assert ok("info", root).data["relay"] == port and not port_free(port)
        os.killpg(int((root / "shared" / "proxy.pid").read_text()), signal.SIGTERM)
        # Another account took the port meanwhile: the relay cannot serve it, and the handover says who holds it.
        wait_for(lambda: port_free(port), timeout=5, what="the relay gone")
        squatter = Squatter(port)
        try:
            refused = agent("handover", root, **failing)
            held = f"could not listen on it again: held by pid {squatter.proc.pid} (user {squatter.user}, cmd "
            assert refused.code != 0 and held in refused.data["error"], refused
        finally:
            squatter.close()
    finally:
        relay.kill()


# -- a port held by a dead deploy's server ------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("left_as, becomes", [("healthy", "abandoned"), ("retired", "retired")])
def test_start_takes_back_the_port_of_a_release_that_is_not_live(
    tmp_path: Path, servers: Servers, left_as: str, becomes: str
) -> None:
    """The last deploy was cut off between start and stop: its server still holds the port."""
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, "graceful", stop_signal="SIGWINCH", stop_timeout=5).code == 0
    ok("health", root, release="r1", timeout=10)
    ok("mark", root, release="r1", values={"status": left_as})
    started = servers.start(root, "r2", port, "graceful")
    assert started.code == 0, started
    (reclaimed,) = started["reclaimed"]
    assert reclaimed["release"] == "r1" and reclaimed["status"] == becomes and reclaimed["signals"] == ["SIGWINCH"]
    assert record(root, "r1")["status"] == becomes
    ok("health", root, release="r2", timeout=10)
    assert "got SIGWINCH" in servers.events()


@pytest.mark.integration
def test_a_port_held_by_the_live_release_or_by_a_stranger_is_not_taken(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, "graceful").code == 0
    ok("health", root, release="r1", timeout=10)
    ok("switch", root, release="r1")
    refused = servers.start(root, "r2", port, "graceful")
    assert refused.code != 0 and "held by the live release r1" in refused.data["error"]
    assert fetch(port)["status"] == 200
    # A stranger listens on the port, and a release's stale pidfile names a pid
    # that now belongs to another process: neither is touched.
    other = free_port()
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", other))
    stranger.listen()
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (root / "releases" / "r0" / ".warp").mkdir(parents=True)
        (root / "releases" / "r0" / ".warp" / "server.pid").write_text(str(sleeper.pid))
        values = {"status": "healthy", "port": other, "pid": sleeper.pid, "pid_start": 1}
        (root / "releases" / "r0" / ".warp" / "deploy.json").write_text(json.dumps(values))
        taken = servers.start(root, "r3", other, "graceful")
        assert taken.code != 0 and f"pid {os.getpid()}" in taken.data["error"], taken
        assert sleeper.poll() is None and record(root, "r0")["status"] == "healthy"
    finally:
        stranger.close()
        sleeper.kill()
        sleeper.wait(timeout=10)


# Another account's listener: binds 127.0.0.1:PORT (as soon as it is free), says "bound", answers 200 to everyone.
SQUATTER = """
import socket, sys, time

port = int(sys.argv[1])
s = socket.socket()
while True:
    try:
        s.bind(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.01)
s.listen(16)
print("bound", flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 8\\r\\n\\r\\nhijacked")
    c.close()
"""


class Squatter:
    """The squatter as another account: ``nobody`` when the tests run as root, else a process of our own."""

    def __init__(self, port: int) -> None:
        import pwd

        root = os.geteuid() == 0
        self.user = "nobody" if root else pwd.getpwuid(os.geteuid()).pw_name
        account = {"user": "nobody", "group": "nogroup" if _has_group("nogroup") else "nobody"} if root else {}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SQUATTER, str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True, **account
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "bound"
        self.held = f"port {port} is held by pid {self.proc.pid} (user {self.user}, cmd "

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.integration
def test_start_names_the_account_whose_process_holds_the_port(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    squatter = Squatter(port)
    try:
        refused = servers.start(root, "r1", port, "graceful")
        assert refused.code != 0 and squatter.held in refused.data["error"], refused
    finally:
        squatter.close()


@pytest.mark.integration
def test_health_never_takes_another_accounts_answer_for_the_servers(tmp_path: Path, servers: Servers) -> None:
    """Another account binds the new backend port after start found it free, before the server does."""
    root, port = tmp_path / "app", free_port()
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    ok("start", root, release="r1", port=port, command="exec sleep 60")  # a server slow to bind: it never does
    servers.pids.append(record(root, "r1")["pid"])
    squatter = Squatter(port)
    try:
        checked = agent("health", root, release="r1", timeout=10)
        assert checked.code != 0 and squatter.held in checked.data["error"], checked
        assert "not by the server of release r1" in checked.data["error"]
        assert checked["release_status"] == "failed" and record(root, "r1")["status"] == "failed"
    finally:
        squatter.close()


def test_a_listener_in_the_units_cgroup_or_the_servers_group_is_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    server = subprocess.Popen(["sleep", "30"], start_new_session=True)  # a server whose family this process is not
    try:
        assert agent_module._intruders(port, os.getpgid(0)) == []  # this process's own group: the server's
        (stranger,) = agent_module._intruders(port, server.pid)
        assert stranger.startswith(f"pid {os.getpid()} (user ")
        monkeypatch.setattr(agent_module, "_in_unit", lambda pid, unit: pid == os.getpid() and unit == "warp-x@1.service")
        assert agent_module._intruders(port, server.pid, "warp-x@1.service") == []  # under systemd: the unit's cgroup
        assert agent_module._intruders(port, server.pid, "warp-y@1.service") == [stranger]
        # Root in a container (no CAP_SYS_PTRACE) cannot read the open files of a server run as www-data: the
        # socket's owner tells, and it is the server's only when a process of the server runs as that account.
        monkeypatch.setattr(agent_module, "_holders", lambda inodes, pids=None: {})
        assert agent_module._intruders(port, server.pid) == []
        monkeypatch.setattr(agent_module, "_uid", lambda pid: 12345)
        (unseen,) = agent_module._intruders(port, server.pid)
        assert unseen.startswith("a process of user ") and unseen.endswith(" that this account cannot see")
    finally:
        listener.close()
        server.kill()
        server.wait(timeout=10)
    assert agent_module._intruders(port, server.pid) is None  # nobody listens


def test_under_systemd_the_unit_of_the_live_releases_port_is_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releases on one port share its unit: an older release naming it must not get the live server stopped."""
    unit = agent_module._unit_name(str(tmp_path), "server").replace("@.service", "@8081.service")
    for rid, status, port in [("r1", "retired", 8081), ("r2", "healthy", 8081), ("r3", "live", 8082), ("r4", "live", 8081)]:
        (tmp_path / "releases" / rid / ".warp").mkdir(parents=True)
        (tmp_path / "releases" / rid / ".warp" / "deploy.json").write_text(
            json.dumps({"status": status, "port": port, "unit": unit})
        )
    stopped: list[str] = []

    def stop_release(root: str, name: str, req: dict[str, Any]) -> tuple[str, list[str]]:
        stopped.append(name)
        return "stopped", []

    monkeypatch.setattr(agent_module, "_unit_pid", lambda name: os.getpid())
    monkeypatch.setattr(agent_module, "_stop_release", stop_release)
    monkeypatch.setattr(agent_module, "_port_holders", lambda port: set())
    (tmp_path / "current").symlink_to("releases/r4")
    assert agent_module._reclaim(str(tmp_path), "r5", 8081) == [] and stopped == []
    # The live release is elsewhere: the unit is stopped once, and only its newest release is marked.
    os.unlink(tmp_path / "current")
    (tmp_path / "current").symlink_to("releases/r3")
    (tmp_path / "releases" / "r4" / ".warp" / "deploy.json").write_text(json.dumps({"status": "retired", "port": 8082}))
    reclaimed = agent_module._reclaim(str(tmp_path), "r5", 8081)
    assert stopped == ["r2"] and [(r["release"], r["status"]) for r in reclaimed] == [("r2", "abandoned")]
    assert record(tmp_path, "r1")["status"] == "retired"


# -- logs that stay small --------------------------------------------------------------


def _lines(count: int) -> bytes:
    return b"".join(b"line %06d %s\n" % (n, b"y" * 40) for n in range(count))


def test_the_log_writer_rotates_at_the_cap_and_keeps_disk_use_bounded(tmp_path: Path) -> None:
    log = tmp_path / "r1.log"
    log.write_bytes(b"z" * 10_000)  # a log from before the cap, already too big
    payload = json.dumps({"action": "logpipe", "path": str(log), "max_bytes": 4096, "keep": 2})
    data = _lines(3000)
    result = subprocess.run([sys.executable, AGENT_FILE, payload], input=data, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.log", "r1.log.1", "r1.log.2"]
    files = [tmp_path / "r1.log.2", tmp_path / "r1.log.1", log]
    assert all(0 < f.stat().st_size <= 4096 and f.read_bytes().endswith(b"\n") for f in files)
    assert b"".join(f.read_bytes() for f in files) == data[-sum(f.stat().st_size for f in files) :]
    assert log.stat().st_mode & 0o777 == 0o640 and (tmp_path / "r1.log.1").stat().st_mode & 0o777 == 0o640


@pytest.mark.integration
def test_a_servers_output_goes_through_the_capped_writer_which_ends_with_it(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    started = servers.start(root, "r1", port, "chatty", env="CHATTY=60000 ", log_max_bytes=8192, log_keep=1)
    assert started.code == 0 and started["log_capped"], started
    ok("health", root, release="r1", timeout=10)
    log = root / "shared" / "logs" / "r1.log"
    wait_for(lambda: (log.parent / "r1.log.1").exists(), what="the log rotating")
    assert sorted(p.name for p in log.parent.iterdir()) == ["r1.log", "r1.log.1"]
    assert all(p.stat().st_size <= 8192 for p in log.parent.iterdir())
    writer = record(root, "r1")["log_writer_pid"]
    assert writer and writer != started["pid"]
    ok("stop", root, release="r1", drain=0)
    wait_for(lambda: not _running(writer), timeout=5, what="the log writer ending with its server")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_systemd_run_script_keeps_the_server_main_and_its_output_capped(tmp_path: Path) -> None:
    (tmp_path / "warp-agent.py").write_text(AGENT)
    log, fifo = tmp_path / "r1.log", tmp_path / "server.fifo"
    config = json.dumps({"action": "logpipe", "path": str(log), "max_bytes": 2048, "keep": 1})
    writer = [sys.executable, str(tmp_path / "warp-agent.py"), config]
    command = 'i=0; while [ $i -lt 400 ]; do echo "line $i of the server\'s output"; i=$((i+1)); done'
    script = agent_module._run_script(command, str(log), writer, str(fifo))
    assert script.splitlines()[-1].startswith("exec sh -c ")  # the server replaces the script: systemd's main process
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    wait_for(lambda: log.exists() and log.read_text().endswith("line 399 of the server's output\n"), what="the last line")
    assert (tmp_path / "r1.log.1").exists() and all(p.stat().st_size <= 2048 for p in (log, tmp_path / "r1.log.1"))


def test_prune_removes_the_logs_of_the_releases_it_removes(tmp_path: Path) -> None:
    root = tmp_path / "app"
    logs = root / "shared" / "logs"
    logs.mkdir(parents=True)
    for rid in ("r1", "r2", "r3"):
        (root / "releases" / rid / ".warp").mkdir(parents=True)
        (root / "releases" / rid / ".warp" / "deploy.json").write_text(json.dumps({"status": "retired"}))
        for name in (f"{rid}.log", f"{rid}.log.1"):
            (logs / name).write_text("x")
    (logs / "proxy.log").write_text("x")
    (root / "current").symlink_to("releases/r3")
    answer = ok("prune", root, keep=1)
    assert answer["removed"] == ["r2", "r1"] and len(answer["logs_removed"]) == 4
    assert sorted(p.name for p in logs.iterdir()) == ["proxy.log", "r3.log", "r3.log.1"]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _processes_named(name: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and name in _cmdline(int(p)) and _running(int(p))]


# -- unit names and paths under systemd ----------------------------------------------------


def test_every_deploy_path_gets_units_of_its_own() -> None:
    paths = ["/srv/a.b", "/srv/a-b", "/srv/a b", "/srv/a/b", "/srv/a%b", "/srv/ä-b"]
    names = [agent_module._unit_name(p, "server") for p in paths]
    assert len(set(names)) == len(paths)
    assert all(re.fullmatch(r"warp-[A-Za-z0-9-]+-[0-9a-f]{8}-server@\.service", n) for n in names), names
    assert agent_module._unit_name("/srv/app/", "server") == agent_module._unit_name("/srv/app", "server")
    assert len(agent_module._unit_name("/" + "x" * 4000, "proxy")) < 128


ODD_ROOT = '/srv/my app%i$HOME"quoted\\'


def _systemd_words(value: str, instance: str) -> list[str]:
    """A command line as systemd reads it: specifiers, then quoted words with C escapes, then ``$$``."""
    resolved, i = "", 0
    while i < len(value):
        if value[i] == "%":
            resolved += {"%": "%", "i": instance}[value[i + 1]]
            i += 2
        else:
            resolved += value[i]
            i += 1
    words: list[str] = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', resolved):
        word = re.sub(r"\\(.)", r"\1", match.group(1)) if match.group(1) is not None else match.group(2)
        words.append(word.replace("$$", "$"))
    return words


def test_a_unit_runs_the_script_of_its_own_path_whatever_characters_the_path_has(tmp_path: Path) -> None:
    text = agent_module._unit_text(ODD_ROOT, "server", "app server")
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert _systemd_words(settings["ExecStart"], "8081") == ["/bin/sh", ODD_ROOT + "/shared/run/server-8081.sh"]
    assert settings["Description"].replace("%%", "%").replace(" (%i)", "") == f"warptasks: app server of {ODD_ROOT}"
    if shutil.which("systemd-analyze"):
        unit = tmp_path / "warp-check-server@8081.service"
        unit.write_text(text)
        checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and "ExecStart" not in checked.stderr, checked.stderr


def test_units_give_the_server_a_tmp_of_its_own_and_no_way_to_gain_privileges() -> None:
    text = agent_module._unit_text("/srv/app", "server", "app server")
    service = text.split("[Service]\n", 1)[1].split("\n[", 1)[0]
    settings = dict(line.split("=", 1) for line in service.splitlines() if "=" in line)
    assert settings["PrivateTmp"] == "yes" and settings["NoNewPrivileges"] == "yes"


def test_a_path_with_a_control_character_or_a_release_outside_releases_is_refused(tmp_path: Path) -> None:
    injected = agent("lock", tmp_path / "app\nExecStartPre=/bin/false", owner="o", token="t")
    assert injected.code != 0 and "control character" in injected.data["error"]
    assert os.listdir(tmp_path) == []
    root = tmp_path / "app"
    ok("lock", root, owner="o", token="t")
    wandering = agent("mark", root, release="../../elsewhere", values={"status": "x"})
    assert wandering.code != 0 and "plain folder name" in wandering.data["error"]
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    "action, request_",
    [
        ("mark", {"values": {"status": "rolled-back"}}),
        ("stop", {"status": "failed"}),
        ("start", {"port": 1, "command": "true"}),
        ("health", {"timeout": 1}),
        ("switch", {}),
    ],
)
def test_an_action_on_a_release_that_does_not_exist_fails_and_makes_nothing(
    tmp_path: Path, action: str, request_: dict[str, Any]
) -> None:
    """rollback --to no-such-release left releases/no-such-release/.warp/deploy.json behind."""
    root = tmp_path / "app"
    ok("lock", root, owner="o", token="t")
    refused = agent(action, root, release="no-such-release", **request_)
    assert refused.code != 0 and "release no-such-release does not exist" in refused.data["error"], refused
    assert os.listdir(root / "releases") == []


def test_mark_makes_a_release_only_when_asked_to_and_switch_never_remakes_a_removed_one(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ok("lock", root, owner="o", token="t")
    assert ok("mark", root, release="r1", values={"status": "uploading"}, create=True)["status"] == "uploading"
    assert (root / "releases" / "r1").stat().st_mode & 0o777 == 0o755 and record(root, "r1")["status"] == "uploading"
    (root / "releases" / "r2" / ".warp").mkdir(parents=True)
    ok("switch", root, release="r1")
    shutil.rmtree(root / "releases" / "r1")  # the live release's folder, removed by hand
    ok("switch", root, release="r2")
    assert sorted(os.listdir(root / "releases")) == ["r2"]


# -- each release's own health settings ------------------------------------------------------

READY = {"path": "/ready", "host_header": "app.example", "timeout": 5}
CHECKED = dict(READY, accept="2xx-3xx")  # what a check records: the settings it used, its default accept too


@pytest.mark.integration
def test_health_falls_back_to_the_settings_recorded_with_the_release(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, "picky", health=READY).code == 0  # "/" answers 500 on this one
    checked = ok("health", root, release="r1")
    assert checked["url"].endswith("/ready") and checked["status"] == 200 and checked["health"] == CHECKED
    ok("mark", root, release="r1", health={"timeout": 7})
    (listed,) = ok("status", root)["releases"]
    assert listed["health"] == dict(CHECKED, timeout=7) and listed["stop_signal"] == "SIGTERM"


@pytest.mark.integration
def test_the_settings_of_a_passing_check_are_recorded_for_a_later_rollback(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, "picky").code == 0
    ok("health", root, release="r1", path="/ready", host_header="app.example", timeout=5)
    assert record(root, "r1")["health"] == CHECKED


@pytest.mark.integration
def test_a_failed_check_during_a_rollback_leaves_the_target_a_rollback_target(tmp_path: Path, servers: Servers) -> None:
    root, port = tmp_path / "app", free_port()
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    ok("mark", root, release="r1", values={"status": "retired"})
    assert servers.start(root, "r1", port, "picky").code == 0
    refused = agent("health", root, release="r1", path="/", timeout=0.5, mark_failed=False)
    assert refused.code != 0 and refused["release_status"] == "retired"
    assert record(root, "r1")["status"] == "retired"
    assert agent("health", root, release="r1", path="/", timeout=0.5).code != 0
    assert record(root, "r1")["status"] == "failed"
