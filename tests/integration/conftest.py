"""Real builds and real servers on 127.0.0.1: helpers for the integration tier."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

WARP = [sys.executable, "-m", "warptasks"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


def warp(
    project: Path, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``warp`` command in ``project``; output captured."""
    result = subprocess.run(
        [*WARP, *args], cwd=project, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and result.returncode != 0:
        raise AssertionError(f"warp {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def get(url: str, timeout: float = 10) -> Response:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Response(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read(), dict(error.headers))


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(url: str, process: subprocess.Popen[str], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            get(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url} within {timeout}s:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[str], timeout: float = 40) -> int:
    """SIGTERM, as a supervisor would; the server must exit by itself.

    Usually within a second. The bound allows gunicorn's worst case: a TERM
    that lands while it forks a worker reaches that worker before its handlers
    exist, and the master then waits out its 30 s graceful timeout.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError("server ignored SIGTERM") from None
    return process.returncode


@contextmanager
def serving(project: Path, *args: str, path: str = "/", timeout: float = 60, port: int = 0) -> Iterator[Server]:
    """``warp start`` for real, on ``port`` (default: a free one); stopped with SIGTERM afterwards."""
    port = port or free_port()
    log = project.parent / f"{project.name}-server-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*WARP, "start", "--port", str(port), *args],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + path, process, log, timeout)
        yield Server(process, url, log)
    finally:
        code = stop(process)
        # Left running, a server would hold its port and workers after the test.
        assert process.poll() is not None, f"server still running after SIGTERM (exit {code})"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if rel.endswith((".sh",)) or "/action_hooks/" in rel:
            path.chmod(0o755)
    return root


def django_version() -> str:
    import django

    return django.get_version()


def startproject(root: Path, name: str = "mysite") -> Path:
    """A real ``django-admin startproject``, untouched but for requirements.txt."""
    subprocess.run([sys.executable, "-m", "django", "startproject", name, str(root)], check=True)
    (root / "requirements.txt").write_text(f"Django=={django_version()}\n")
    return root
