"""The warp command run against one SSH test host as a user runs it, and the faults the fault tests inject.

A deploy can be held before one of its phases (the deploy's test-only hook,
``WARP_TEST_PAUSE_AT``/``WARP_TEST_PAUSE_DIR``, see
:mod:`warptasks.remote.interrupt`), then killed, interrupted or cut off
from its host at exactly that point.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warptasks.remote.interrupt import PAUSE_AT, PAUSE_DIR

BIN = os.path.dirname(sys.executable)
_runs = itertools.count(1)

# Run inside a host (through the engine, not SSH) with a signal name: send it to every sshd process but the
# listener, i.e. to every SSH connection's processes (the deploy's, its lease keeper's); new connections are still
# accepted. SIGSTOP freezes the connections (open, but nothing answers), SIGKILL drops them.
SIGNAL_SSH = r"""
import os, signal, sys
procs = {}
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    try:
        comm = open("/proc/%s/comm" % name).read().strip()
        ppid = int(open("/proc/%s/stat" % name).read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        continue
    procs[int(name)] = (comm, ppid)
# The listener is the sshd whose parent is no sshd (its title is rewritten: its arguments cannot tell).
hit = [p for p, (comm, ppid) in procs.items() if comm.startswith("sshd") and procs.get(ppid, ("",))[0].startswith("sshd")]
for pid in hit:
    try:
        os.kill(pid, getattr(signal, sys.argv[1]))
    except OSError:
        pass
print(len(hit))
"""


def signal_ssh(host: Any, name: str) -> int:
    """Send signal ``name`` to the processes of every SSH connection to ``host``; how many there were."""
    code, output = host.exec(["python3", "-c", SIGNAL_SSH, name])
    assert code == 0, output
    return int(output.strip().splitlines()[-1])


@dataclass
class Run:
    """A warp command running in the background, its output in a file, maybe held before a phase."""

    proc: subprocess.Popen[bytes]
    output: Path
    pause_dir: Path | None
    phase: str | None

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_paused(self, timeout: float = 300) -> None:
        """Until the deploy holds before its phase (it fails the test if the deploy ends first)."""
        assert self.pause_dir is not None and self.phase
        marker = self.pause_dir / f"paused-{self.phase}"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert self.proc.poll() is None, f"warp ended before {self.phase}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"warp did not get to {self.phase}:\n{self.text()[-3000:]}"
            time.sleep(0.05)

    def go(self) -> None:
        assert self.pause_dir is not None
        (self.pause_dir / "go").touch()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.proc.poll() is None, f"warp ended before saying {text!r}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"warp did not say {text!r}:\n{self.text()[-3000:]}"
            time.sleep(0.05)

    def signal(self, number: int) -> None:
        self.proc.send_signal(number)

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return code, self.text()

    def release_id(self) -> str:
        match = re.search(r"^release (\S+): ", self.text(), re.MULTILINE)
        assert match, self.text()[-2000:]
        return match.group(1)


@dataclass
class Warp:
    """``warp`` against one test host: its deploy path and public port, a HOME of its own, extra environment."""

    host: Any
    project: Path
    path: str
    port: int
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def argv(self, action: str, *extra: str) -> list[str]:
        reach = ["--host", self.host.host_string, "--identity", self.host.key_filename]
        reach += ["--known-hosts", self.host.known_hosts, "--path", self.path]
        if action == "deploy":
            reach += ["--port", str(self.port), "--listen", "127.0.0.1"]
        return [os.path.join(BIN, "warp"), action, *reach, *extra]

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        # HOME is a fresh folder: nothing from this machine's ~/.ssh is used.
        return {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1", **self.env, **(extra or {})}

    def start(self, action: str, *extra: str, pause_at: str | None = None, env: dict[str, str] | None = None) -> Run:
        number = next(_runs)
        output = self.workdir / f"warp-{number}.log"
        pause_dir = None
        more = dict(env or {})
        if pause_at:
            pause_dir = self.workdir / f"pause-{number}"
            pause_dir.mkdir()
            more.update({PAUSE_AT: pause_at, PAUSE_DIR: str(pause_dir)})
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                self.argv(action, *extra), cwd=self.project, stdout=out, stderr=subprocess.STDOUT, env=self.environment(more)
            )
        return Run(proc, output, pause_dir, pause_at)

    def run(self, action: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 600) -> tuple[int, str]:
        return self.start(action, *extra, env=env).finish(timeout)

    def ok(self, action: str, *extra: str, env: dict[str, str] | None = None) -> str:
        code, text = self.run(action, *extra, env=env)
        assert code == 0, text[-4000:]
        return text

    def status(self) -> dict[str, Any]:
        """This host's ``warp status --json``."""
        text = self.ok("status", "--json")
        return dict(next(iter(json.loads(text[text.index("{") :])["hosts"].values())))


def statuses(state: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["status"] for r in state["releases"]}


def sigkill(run: Run) -> None:
    run.signal(signal.SIGKILL)
    run.proc.wait(timeout=30)
