"""warptasks' own supervisor, run for real: where systemd does not supervise a server, ``start`` runs it under the
agent's ``supervise`` action, which starts it again when it exits on its own and stops for good when told to.

Real processes on this machine: the stand-in app of :mod:`tests.test_agent` (``Servers``), crashing shell
commands, real signals. The restart pauses are shortened through ``start``'s ``backoff_start``/``backoff_max``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from warptasks.tasks.remote import _describe

from .test_agent import Servers, agent, fetch, free_port, ok, port_free, record, servers, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

SAYS = "[warp supervisor]"


def supervisor_state(root: Path, release: str) -> dict[str, Any]:
    try:
        return dict(json.loads(Path(record(root, release)["supervisor_state"]).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def log(root: Path, release: str) -> str:
    return (root / "shared" / "logs" / f"{release}.log").read_text(errors="replace")


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def session(pid: int) -> list[int]:
    """The running processes of the session ``pid`` leads (the supervisor and its server)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[3] == str(pid) and fields[0] != "Z":
                found.append(int(name))
    return found


def test_a_crashing_server_is_started_again_after_pauses_that_double_up_to_a_bound(
    tmp_path: Path,
    servers: Servers,  # noqa: F811
) -> None:
    root, port = tmp_path / "app", free_port()
    starts = tmp_path / "starts"
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    (root / "shared" / "logs").mkdir(parents=True)
    command = f"python3 -c 'import time; print(time.monotonic())' >> {starts}; echo crashing; exit 3"
    started = ok("start", root, release="r1", port=port, command=command, backoff_start=0.1, backoff_max=0.4)
    servers.pids.append(started["pid"])
    assert started["supervised"] is True and started["supervisor"] == "warp", started
    assert "warptasks' own supervisor" in started["supervision"] and "not at boot" in started["supervision"]
    wait_for(lambda: len(starts.read_text().split()) >= 7 if starts.exists() else False, what="7 starts")
    times = [float(t) for t in starts.read_text().split()]
    pauses = [b - a for a, b in zip(times, times[1:], strict=False)]
    # 0.1, 0.2, 0.4, then never more than 0.4: the pauses the supervisor chose are in its log (below); the times
    # measured only bound them from below (a start takes longer on a loaded machine, never shorter).
    assert pauses[0] >= 0.1 and pauses[1] >= 0.2 and all(p >= 0.4 for p in pauses[2:6]), pauses
    state = supervisor_state(root, "r1")
    assert state["supervisor"] == started["pid"] and state["restarts"] >= 6, state
    assert state["last_exit"]["how"] == "exited with code 3", state
    # The 7th start is in the starts file before its output has passed the log writer: wait for it there too.
    wait_for(lambda: log(root, "r1").count("crashing") >= 7, what="7 starts in the log")
    text = log(root, "r1")
    assert f"{SAYS} the server (pid " in text and "exited with code 3 after" in text
    waits = [f"on its own: starting it again in {s}s" for s in ("0.1", "0.2", "0.4")]
    assert all(w in text for w in waits) and "starting it again in 0.8s" not in text, text
    assert text.index(waits[0]) < text.index(waits[1]) < text.index(waits[2]), text
    # Told to stop (here while it waits to start the server again): it ends at once, and nothing starts any more.
    stopped = ok("stop", root, release="r1", drain=0)
    assert stopped["server"] == "stopped" and stopped["signals"] == ["SIGTERM"], stopped
    count = len(starts.read_text().split())
    time.sleep(1.2)
    assert len(starts.read_text().split()) == count and not running(started["pid"])
    assert supervisor_state(root, "r1")["state"] == "stopped"


def test_kill_9_of_the_server_starts_it_again_and_a_graceful_stop_lets_its_request_finish(
    tmp_path: Path,
    servers: Servers,  # noqa: F811
) -> None:
    root, port = tmp_path / "app", free_port()
    started = servers.start(root, "r1", port, "graceful", stop_signal="SIGWINCH", stop_timeout=10, backoff_start=0.2)
    assert started.code == 0, started
    supervisor = started["pid"]
    ok("health", root, release="r1", timeout=10)
    first = supervisor_state(root, "r1")["pid"]
    assert first and first != supervisor and running(first)
    os.kill(first, signal.SIGKILL)  # a crash, an OOM kill
    wait_for(lambda: fetch(port).get("status") == 200 and supervisor_state(root, "r1").get("restarts") == 1, what="serving again")
    second = supervisor_state(root, "r1")["pid"]
    assert second not in (first, supervisor) and running(second) and running(supervisor)
    assert f"the server (pid {first}) was killed by SIGKILL after" in log(root, "r1")
    assert f"the server started again: pid {second} (restart 1)" in log(root, "r1")
    # The health check of a release whose server runs again is a health check like any other.
    ok("health", root, release="r1", timeout=10)
    shown = ok("status", root).data
    (mine,) = shown["releases"]
    assert mine["pid"] == supervisor and mine["server_pid"] == second and mine["restarts"] == 1, mine
    # The stop: the server's own signal, once, relayed to it; its request in flight finishes; it is not restarted.
    answers: dict[str, Any] = {}
    request = threading.Thread(target=lambda: answers.update(fetch(port, "/slow")))
    request.start()
    wait_for(lambda: "slow begun" in servers.events(), what="the slow request reaching the server")
    stopped = ok("stop", root, release="r1", drain=0)
    request.join(timeout=15)
    assert answers == {"status": 200, "body": "ok /slow"}
    assert stopped["server"] == "stopped" and stopped["signals"] == ["SIGWINCH"], stopped
    assert [e for e in servers.events() if e.startswith("got")] == ["got SIGWINCH"]
    time.sleep(0.8)  # longer than the restart pause: nothing starts again
    assert servers.events()[-1] == "exited" and servers.events().count("serving") == 2
    assert port_free(port) and session(supervisor) == [] and not running(second)
    assert f"{SAYS} SIGWINCH: stopping the server (pid {second}); it is not started again" in log(root, "r1")
    assert log(root, "r1").rstrip().endswith(f"{SAYS} stopped")
    wait_for(lambda: not running(record(root, "r1")["log_writer_pid"]), timeout=5, what="the log writer ending")


def test_a_signal_to_the_supervisors_pid_alone_reaches_the_server_once(tmp_path: Path, servers: Servers) -> None:  # noqa: F811
    root, port = tmp_path / "app", free_port()
    started = servers.start(root, "r1", port, "graceful", stop_signal="SIGWINCH", backoff_start=0.2)
    assert started.code == 0, started
    ok("health", root, release="r1", timeout=10)
    os.kill(started["pid"], signal.SIGWINCH)  # the pid `warp status` shows, as a user would
    wait_for(lambda: not running(started["pid"]), what="the supervisor ending with its server")
    time.sleep(0.5)
    assert [e for e in servers.events() if e.startswith("got")] == ["got SIGWINCH"]
    assert servers.events().count("serving") == 1 and port_free(port)


def test_a_server_that_exits_while_checked_fails_its_health_check_at_once(tmp_path: Path, servers: Servers) -> None:  # noqa: F811
    root, port = tmp_path / "app", free_port()
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    (root / "shared" / "logs").mkdir(parents=True)
    command = "sleep 0.5; echo 'ImportError: no module named mysite' >&2; exit 1"
    started = ok("start", root, release="r1", port=port, command=command, backoff_start=0.2)
    servers.pids.append(started["pid"])
    begin = time.monotonic()
    checked = agent("health", root, release="r1", timeout=30)
    assert checked.code != 0 and time.monotonic() - begin < 5, checked
    assert "the server exited with code 1 before answering" in checked.data["error"], checked
    assert "ImportError: no module named mysite" in checked.data["error"]
    assert checked["release_status"] == "failed"
    stopped = ok("stop", root, release="r1", drain=0)
    assert stopped["server"] == "stopped" and session(started["pid"]) == []


def test_warp_status_says_who_supervises_it_and_how_to_have_it_started_at_boot(tmp_path: Path, servers: Servers) -> None:  # noqa: F811
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, "graceful", systemd=False).code == 0
    ok("health", root, release="r1", timeout=10)
    ok("switch", root, release="r1")
    state = ok("status", root).data
    assert state["supervised"] is True and state["supervisor"] == "warp", state
    assert state["supervision"] == (
        "warptasks' own supervisor: started again when it crashes, but not at boot (started with --no-systemd: "
        "without it, where systemd runs, servers are units started at boot)"
    )
    shown = _describe("web", state).splitlines()
    assert shown[2] == f"  supervised by {state['supervision']}"
    assert shown[3].startswith("  app process pid ") and shown[3].endswith(" (restarts so far: 0)")
    assert "not supervised" not in "\n".join(shown)
