"""The agent's health check, run for real against a stand-in server on 127.0.0.1.

What it accepts: any answer below 500 for the default check of "/" (the app
loaded and answers), 2xx or 3xx for a path given on purpose; a redirect is an
answer, never followed; a definite refusal ends the check at once, naming
``--health``; a server still starting is waited for.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from warptasks.scripts import source

pytestmark = pytest.mark.integration

AGENT = source("agent.py")
AGENT_FILE = str(files("warptasks.scripts").joinpath("agent.py"))  # run as a file: -c is capped at 128 KiB

# Serves after DELAY seconds: / answers ROOT_STATUS; /moved redirects to the public https name (as Django's
# SECURE_SSL_REDIRECT does); /missing 404; /boom 500; anything else 200.
APP = """
import http.server, sys, time

port, root_status, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        codes = {"/": root_status, "/missing": 404, "/boom": 500, "/moved": 301}
        code = codes.get(self.path, 200)
        self.send_response(code)
        if code == 301:
            self.send_header("Location", "https://public.invalid/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def agent(action: str, root: Path, env: dict[str, str] | None = None, **request: Any) -> tuple[int, dict[str, Any]]:
    payload = json.dumps({"action": action, "root": str(root), **request})
    result = subprocess.run(
        [sys.executable, AGENT_FILE, payload], capture_output=True, text=True, timeout=90, env={**os.environ, **(env or {})}
    )
    lines = result.stdout.strip().splitlines()
    return result.returncode, json.loads(lines[-1]) if lines else {"stderr": result.stderr}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A release whose server is the stand-in app, started through the agent's ``start``."""

    def __init__(self, root: Path, script: Path) -> None:
        self.root, self.script, self.pids = root, script, []  # type: list[int]

    def start(self, root_status: int = 200, delay: float = 0, release: str = "r1", **request: Any) -> int:
        port = free_port()
        (self.root / "releases" / release / ".warp").mkdir(parents=True, exist_ok=True)
        command = f"exec {shlex.quote(sys.executable)} {shlex.quote(str(self.script))} {port} {root_status} {delay}"
        code, answer = agent("start", self.root, release=release, port=port, command=command, **request)
        assert code == 0, answer
        self.pids.append(answer["pid"])
        return port

    def check(self, release: str = "r1", **request: Any) -> tuple[int, dict[str, Any], float]:
        begin = time.monotonic()
        code, answer = agent("health", self.root, release=release, **request)
        return code, answer, time.monotonic() - begin

    def status(self, release: str = "r1") -> Any:
        return json.loads((self.root / "releases" / release / ".warp" / "deploy.json").read_text())["status"]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    made = Site(tmp_path / "app", script)
    try:
        yield made
    finally:
        for pid in made.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def test_a_redirect_is_the_servers_answer_never_followed_to_the_public_name(site: Site) -> None:
    site.start()
    code, answer, _ = site.check(path="/moved", accept="2xx-3xx", timeout=5)
    assert code == 0 and answer["status"] == 301, answer


def test_the_default_check_passes_on_any_answer_below_500(site: Site) -> None:
    # A fresh Django project with DEBUG off answers 404 at /: it loaded, and it answers.
    site.start(root_status=404)
    code, answer, _ = site.check(path="/", accept="any-below-500", timeout=5)
    assert code == 0 and answer["status"] == 404 and answer["health"]["accept"] == "any-below-500", answer


def test_a_path_given_on_purpose_that_answers_404_fails_at_once_naming_health(site: Site) -> None:
    site.start()
    code, answer, seconds = site.check(path="/missing", accept="2xx-3xx", timeout=60)
    assert code != 0 and seconds < 10, (seconds, answer)
    assert "HTTP 404" in answer["error"] and "--health" in answer["error"]
    assert site.status() == "failed"


def test_server_errors_in_a_row_fail_at_once_naming_health(site: Site) -> None:
    site.start(root_status=500)
    code, answer, seconds = site.check(path="/", accept="any-below-500", timeout=60)
    assert code != 0 and seconds < 10, (seconds, answer)
    assert "HTTP 500" in answer["error"] and "--health" in answer["error"]


def test_a_server_still_starting_is_waited_for(site: Site) -> None:
    site.start(delay=2)
    code, answer, seconds = site.check(path="/", accept="2xx-3xx", timeout=30)
    assert code == 0 and answer["status"] == 200 and seconds >= 1.5, (seconds, answer)


def test_the_accept_mode_is_recorded_and_used_when_a_later_check_names_none(site: Site) -> None:
    # A rollback checks the release as its deploy did, whatever options it is given.
    site.start(root_status=404, health={"path": "/", "accept": "any-below-500", "timeout": 5})
    code, answer, _ = site.check()
    assert code == 0 and answer["health"]["accept"] == "any-below-500", answer
    code, answer = agent("start", site.root, release="r2", port=1, command="true", health={"accept": "maybe"})
    assert code != 0 and "accept" in answer["error"]


def test_the_check_never_goes_through_the_accounts_http_proxy(site: Site) -> None:
    site.start()
    code, answer = agent("health", site.root, env={"http_proxy": "http://127.0.0.1:9"}, release="r1", path="/", timeout=5)
    assert code == 0 and answer["status"] == 200, answer
