"""One host's SSH session: connected with its host key checked, running steps and the host agent.

The agent (:mod:`warptasks.scripts.agent`) is sent as source with each call,
its request one JSON line on its stdin (a command line, with the lock's token,
would be shown by ``ps`` to every account on the host), and answers one JSON
line; its bookkeeping (locks, release records, servers, the switch) happens on
the host, in one place.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from paramiko.ssh_exception import SSHException

from ..errors import WarpError
from ..plan import Step, command_line
from ..run.executor import Say, run_step, tail
from ..run.progress import Progress, doing
from ..scripts import ISOLATED, source
from ..settings import DeploySettings
from .hosts import HostTarget, connect, open_checked

AGENT = source("agent.py")
FRONT = source("front.py")


class DeployFailed(WarpError):
    """A deploy, rollback or status did not complete on some host."""


class LockLost(DeployFailed):
    """The agent refused to act for this deploy: it does not hold the host's deploy lock (the agent's exit 3)."""


LOCK_NOT_HELD = 3


# What the host's Python runs: the script comes on stdin, its length in bytes on the line before it, then its
# request. A script on the command line would be shown by ``ps`` and is capped by Linux at 128 KiB (E2BIG); the
# agent is larger. The script sees its own source as ``__warp_source__`` (to copy itself for the log writer).
BOOT = (
    "import sys;i=sys.stdin.buffer;s=i.read(int(i.readline())).decode('utf-8');"
    "exec(compile(s,'<warptasks>','exec'),{'__name__':'__main__','__warp_source__':s})"
)


def agent_call(python: str, action: str, /, *, script: str = AGENT, **request: Any) -> tuple[Step, str]:
    """The step that runs one action of a host script (the agent, or ``script``), and its stdin: the script (see
    :data:`BOOT`), then the request, one JSON line."""
    # -I: the script runs from the SSH user's home, whose files must never shadow the standard library.
    what = "front" if script is FRONT else "deploy"
    step = Step(f"{what} {action}", (python, ISOLATED, "-c", BOOT), "", f"{what} {action}")
    return step, f"{len(script.encode())}\n{script}" + json.dumps({"action": action, **request}) + "\n"


class _Whole(io.StringIO):
    """A text given whole to the first read: invoke (and fabric) read a stream that is not a terminal one byte per
    10 ms, which would take seconds for a request that carries the front proxy's source."""

    def read(self, size: int | None = -1) -> str:
        return super().read()


def run_agent(runner: Any, python: str, action: str, /, *, script: str = AGENT, **request: Any) -> Any:
    """Run one action of the agent (or of ``script``) through ``runner`` (a fabric Connection, an invoke Context):
    the request on its stdin, never on a command line; the runner's result (its exit code and output)."""
    step, text = agent_call(python, action, script=script, **request)
    return runner.run(command_line(step), warn=True, hide=True, pty=False, in_stream=_Whole(text), echo_stdin=False)


@dataclass
class Session:
    """An SSH connection to ``target``, made with ``settings`` (key, known hosts, user, timeout)."""

    target: HostTarget
    settings: DeploySettings
    conn: Any = None
    config: Any = None  # fabric's configuration (fab -i KEY, fabric.yaml), kept for reconnecting

    def open(self, config: Any = None) -> None:
        """Connect, checking the host key; a host that cannot be reached or logged in to is a DeployFailed."""
        self.config = config
        self.conn = connect(self.target, self.settings, config)
        try:
            open_checked(self.conn)
        except (OSError, EOFError) as error:
            raise DeployFailed(f"cannot reach {self.target.label} over SSH: {error}") from None
        except SSHException as error:
            raise DeployFailed(
                f"cannot log in to {self.target.label}: {error}",
                "check the user and key (--identity, or IdentityFile in ~/.ssh/config)",
            ) from None

    def agent(self, action: str, /, **request: Any) -> dict[str, Any]:
        """Run one agent action under the deploy path; its JSON answer, or DeployFailed with the agent's error."""
        return self._answer(action, run_agent(self.conn, self.settings.python, action, root=self.settings.path, **request))

    def front(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one action of the host's front script (a request of :mod:`.front`); its JSON answer, or DeployFailed."""
        action = request["action"]
        fields = {k: v for k, v in request.items() if k != "action"}
        return self._answer(f"front {action}", run_agent(self.conn, self.settings.python, action, script=FRONT, **fields))

    def _answer(self, action: str, result: Any) -> dict[str, Any]:
        lines = (result.stdout or "").strip().splitlines()
        try:
            data = json.loads(lines[-1]) if lines else {}
        except ValueError:
            data = {}
        if result.exited != 0:
            message = data.get("error") or tail(result.stderr or result.stdout or f"exit {result.exited}", 10)
            raise (LockLost if result.exited == LOCK_NOT_HELD else DeployFailed)(f"{action}: {message}")
        return data

    def run(self, step: Step, *, say: Say | None = None) -> Any:
        """Run ``step`` with its output hidden; with ``say``: say when it ends, and while it runs long (the user sees
        none of its output), that it is still running (see :mod:`warptasks.run.progress`)."""
        if say is None:
            return run_step(self.conn, step, hide=True)
        with Progress(say).step(step.name, doing(step.name, step.why), visible=False) as watchers:
            return run_step(self.conn, step, hide=True, watchers=watchers)

    def quiet(self) -> QuietRunner:
        return QuietRunner(self.conn)

    def sftp(self) -> Any:
        """The connection's SFTP client, opened again when its channel is closed: fabric keeps its first one, even
        after the connection dropped and fabric connected again for the next command."""
        cached = getattr(self.conn, "_sftp", None)
        if cached is not None and cached.get_channel().closed:
            self.conn._sftp = None
        return self.conn.sftp()

    def reopen_if_lost(self) -> None:
        """Connect again when the connection dropped (cleanup after a failure needs the host)."""
        transport = self.conn.client.get_transport() if self.conn else None
        if transport is None or not transport.is_active():
            self.conn.close()
            self.conn = connect(self.target, self.settings, self.config)
            open_checked(self.conn)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class QuietRunner:
    """A runner that hides step output (hosts run in parallel) and keeps it for the error."""

    hides_output = True  # so the executor's heartbeat counts every step as silent (see warptasks.run.progress)

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.last: Any = None

    def run(self, command: str, **kwargs: Any) -> Any:
        kwargs["hide"] = True
        self.last = self.conn.run(command, **kwargs)
        return self.last

    def last_output(self) -> str:
        if self.last is None:
            return ""
        return tail((self.last.stderr or "") + "\n" + (self.last.stdout or ""))
