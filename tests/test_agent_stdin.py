"""The agent's request travels on its stdin, never on a command line (``ps`` shows those to every account).

Run for real, as the deploy runs it: ``python -c AGENT`` with one JSON line
on stdin, through an invoke ``Context`` here (a fabric ``Connection`` on a
host, in tests/remote/test_agent_stdin.py). The older form, the request as
the first argument, still works.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import invoke
import pytest

from warptasks.plan import Step, command_line
from warptasks.remote.session import BOOT, LOCK_NOT_HELD, agent_call, run_agent
from warptasks.scripts import source

AGENT = source("agent.py")
AGENT_FILE = str(files("warptasks.scripts").joinpath("agent.py"))  # run as a file: -c is capped at 128 KiB


def answer(result: invoke.Result) -> dict:
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def test_the_agent_reads_its_request_from_stdin(tmp_path: Path) -> None:
    root = tmp_path / "app"
    line = json.dumps({"action": "lock", "root": str(root), "owner": "o", "token": "t1", "lease": 60}) + "\n"
    taken = subprocess.run([sys.executable, AGENT_FILE], input=line, capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0 and json.loads(taken.stdout.splitlines()[-1])["locked"], taken.stderr
    # The older form: the request as the first argument.
    checked = subprocess.run(
        [sys.executable, AGENT_FILE, json.dumps({"action": "check", "root": str(root), "token": "t1"})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0 and json.loads(checked.stdout.splitlines()[-1])["held"], checked.stderr
    bad = subprocess.run([sys.executable, AGENT_FILE], input="not json\n", capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "one JSON object, on stdin" in bad.stderr


def test_the_request_is_not_on_the_command_line() -> None:
    step, text = agent_call("python3", "lock", root="/srv/app", owner="o", token="s3cret-token")
    assert step.argv == ("python3", "-I", "-c", BOOT)  # isolated: the home folder never shadows the stdlib
    assert "s3cret" not in command_line(step) and AGENT not in command_line(step)
    # On stdin: the script's length in bytes, the script, then the request, one JSON line.
    size, rest = text.split("\n", 1)
    assert rest[: int(size)] == AGENT and len(AGENT.encode()) == int(size)
    request = rest[int(size) :]
    assert request.endswith("\n") and "\n" not in request[:-1]
    assert json.loads(request) == {"action": "lock", "root": "/srv/app", "owner": "o", "token": "s3cret-token"}


def test_a_script_larger_than_one_command_line_argument_runs(tmp_path: Path) -> None:
    """Linux refuses one argument over 128 KiB (E2BIG): the agent outgrew that, so it travels on stdin."""
    big = "PAD = %r\n" % ("x" * 200_000) + AGENT
    result = run_agent(invoke.Context(), sys.executable, "info", script=big, root=str(tmp_path / "app"))
    assert result.exited == 0, result.stderr
    assert answer(result)["current"] is None


def test_run_agent_through_invoke_sends_a_large_request_at_once(tmp_path: Path) -> None:
    """invoke reads a stream that is not a terminal one byte per 10 ms: the proxy's source would take seconds."""
    context = invoke.Context()
    begin = time.monotonic()
    result = run_agent(context, sys.executable, "info", root=str(tmp_path / "app"), padding="x" * 4000)
    assert result.exited == 0 and "hostname" in answer(result), result.stderr
    assert time.monotonic() - begin < 10


def _ours(pid: str) -> bool:
    """Whether ``pid`` descends from this test process (other test runs on the machine run agents too)."""
    for _ in range(5):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = handle.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            return False
        if int(pid) == os.getpid():
            return True
    return False


def watched(run: Callable[[], invoke.Result]) -> tuple[invoke.Result, list[str]]:
    """``run()``'s result, and the command lines of its agents seen in /proc while it ran (as ``ps`` shows them)."""
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        text = handle.read().decode("utf-8", "replace")
                except OSError:
                    continue
                if ("__warp_source__" in text or "agent.py" in text) and _ours(pid):  # an agent of this test
                    seen.append(text)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return run(), seen
    finally:
        done.set()
        watcher.join()


def test_a_waiting_agent_shows_no_token_in_its_command_line(tmp_path: Path) -> None:
    """The token lets its holder renew, switch and release the lock: another account must not read it in ps."""
    root = str(tmp_path / "app")
    context = invoke.Context()
    first, second = (f"{name}-{secrets.token_hex(8)}" for name in ("first", "second"))  # this test's alone
    assert run_agent(context, sys.executable, "lock", root=root, owner="first", token=first, lease=60).exited == 0
    # Held by "first": this agent waits 2s for the lock, long enough to be seen.
    request = {"root": root, "owner": "second", "token": second, "wait": 2}
    waited, seen = watched(lambda: run_agent(context, sys.executable, "lock", **request))
    assert waited.exited == LOCK_NOT_HELD and "first" in waited.stderr
    assert seen, "the waiting agent was never seen"
    assert [text for text in seen if second in text or root in text] == [], "its request was on its command line"
    # What the older form showed every account.
    old = agent_step(sys.executable, "lock", **request)
    _, seen = watched(lambda: context.run(command_line(old), warn=True, hide=True, in_stream=False))
    assert [text for text in seen if second in text]


@pytest.mark.parametrize("given", ["", "[1, 2]"])
def test_a_request_that_is_no_json_object_is_refused(given: str) -> None:
    refused = subprocess.run([sys.executable, AGENT_FILE], input=given, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "one JSON object" in json.loads(refused.stdout.splitlines()[-1])["error"]


def agent_step(python: str, action: str, /, **request: Any) -> Step:
    """A command shaped as deploys ran the agent before: the request on its command line, where ``ps`` shows it to
    every account (the agent itself no longer fits on one: a stand-in that waits a second, then exits 3, as a
    lock that is not free would). What the watchers must see, or they could not fail."""
    stand_in = "import sys, time; time.sleep(1); sys.exit(3)  # agent.py"
    return Step(f"deploy {action}", (python, "-c", stand_in, json.dumps({"action": action, **request})), "", f"deploy {action}")
