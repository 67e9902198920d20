"""Running commands and timing them; every wait here is bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class BenchError(RuntimeError):
    """A benchmark could not run (not a slow result: a broken one)."""


@dataclass(frozen=True)
class Timed:
    seconds: float
    output: str
    returncode: int = 0


def run(
    argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 900, check: bool = True
) -> Timed:
    """Run ``argv`` to completion and time it (wall clock)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as expired:
        raise BenchError(f"timed out after {timeout:g} s: {' '.join(argv)}") from expired
    seconds = time.perf_counter() - started
    if check and done.returncode:
        tail = "\n".join(done.stdout.strip().splitlines()[-25:])
        raise BenchError(f"exit {done.returncode}: {' '.join(argv)}\n{tail}")
    return Timed(seconds, done.stdout, done.returncode)


def shell(script: str, **kw: object) -> Timed:
    return run(["bash", "-c", script], **kw)  # type: ignore[arg-type]


class Server:
    """A server process in its own session, so the whole tree can be ended."""

    def __init__(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str], log: str) -> None:
        self.argv = list(argv)
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path) as handle:
                return "\n".join(handle.read().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> float | None:
        """SIGTERM to the process itself; seconds until it exited (None: had to be killed)."""
        if self.process.poll() is not None:
            self._cleanup()
            return 0.0
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
            took: float | None = time.perf_counter() - started
        except subprocess.TimeoutExpired:
            took = None
        self._cleanup()
        return took

    def _cleanup(self) -> None:
        # Apache's children and daemon processes must not outlive a measurement.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(10)
        self._log.close()
