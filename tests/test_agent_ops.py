"""The agent's day-2 actions run for real against a temporary deploy root: restart beside the live server, stop and
start on purpose, a cut-off restart ended by the next lock, config set/unset, and the audit log.

Servers are :mod:`tests.test_agent`'s stand-in app, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from warptasks.scripts import source

from .test_agent import Servers, agent, fetch, free_port, ok, port_free, record, servers, wait_for

__all__ = ["servers"]  # the fixture, used by name

pytestmark = pytest.mark.integration
ENVFILE = source("envfile.py")
TOKEN = "t0k3n"


def _pair() -> int:
    """A port whose next one is free too: the app's two backend ports."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port
    raise AssertionError("no two free ports in a row")


def _live(tmp_path: Path, servers: Servers, mode: str = "graceful") -> tuple[Path, int]:
    """A deploy root whose release r1 is live on the first of two ports, the deploy lock held with TOKEN."""
    root, port = tmp_path / "app", _pair()
    ok("lock", root, owner="test", token=TOKEN)
    (root / "releases" / "r1" / ".warp").mkdir(parents=True)
    commands = {str(p): servers.command(p, mode) for p in (port, port + 1)}
    ok("mark", root, release="r1", values={"command": commands[str(port)], "server_commands": commands})
    assert servers.start(root, "r1", port, mode, token=TOKEN, ports=[port, port + 1]).code == 0
    ok("health", root, release="r1", timeout=10)
    ok("switch", root, release="r1", token=TOKEN, upstream=str(root / "shared" / "upstream"))
    return root, port


def _upstream(root: Path) -> str:
    return (root / "shared" / "upstream").read_text().strip()


def _restart(root: Path, servers: Servers, **request: Any) -> Any:
    answer = agent("restart", root, op="begin", token=TOKEN, **request)
    if answer.code == 0 and answer.data.get("pid"):
        servers.pids.append(answer["pid"])
    return answer


def test_a_restart_starts_beside_the_live_server_switches_and_stops_the_old_one(tmp_path: Path, servers: Servers) -> None:
    root, port = _live(tmp_path, servers)
    old_pid = record(root, "r1")["pid"]
    begun = _restart(root, servers, timeout=10)
    assert begun.code == 0, begun
    assert begun["port"] == port + 1 and begun["previous_port"] == port and begun["status"] == 200
    # Both serve until the front is switched; the record names the new one and keeps the old one.
    assert fetch(port)["status"] == 200 and fetch(port + 1)["status"] == 200
    assert record(root, "r1")["replaced"]["pid"] == old_pid and _upstream(root) == f"127.0.0.1:{port}"
    ok("switch", root, release="r1", token=TOKEN)
    assert _upstream(root) == f"127.0.0.1:{port + 1}"
    ended = ok("restart", root, op="finish", token=TOKEN, drain=0)
    assert ended["stopped_port"] == port and ended["server"] == "stopped"
    wait_for(lambda: port_free(port), what="the old server's port free")
    rec = record(root, "r1")
    assert rec["port"] == port + 1 and rec["replaced"] is None and rec["status"] == "live"
    assert rec["command"] == servers.command(port + 1, "graceful")
    # And back again: the next restart takes the first port.
    assert _restart(root, servers, timeout=10)["port"] == port
    ok("switch", root, release="r1", token=TOKEN)
    ok("restart", root, op="finish", token=TOKEN)
    assert record(root, "r1")["port"] == port and _upstream(root) == f"127.0.0.1:{port}"


def test_a_restart_whose_check_fails_leaves_the_old_server_serving(tmp_path: Path, servers: Servers) -> None:
    root, port = _live(tmp_path, servers)
    before = record(root, "r1")
    # /ready answers 400 without Host app.example: a definite refusal.
    failed = _restart(root, servers, path="/ready", timeout=10)
    assert failed.code != 0 and "keeps serving" in failed.stderr, failed
    rec = record(root, "r1")
    assert {k: rec.get(k) for k in ("port", "pid", "command")} == {k: before[k] for k in ("port", "pid", "command")}
    assert rec.get("replaced") is None and rec["status"] == "live"
    assert (root / "releases" / "r1" / ".warp" / "server.pid").read_text() == str(before["pid"])
    assert fetch(port)["status"] == 200 and _upstream(root) == f"127.0.0.1:{port}"
    wait_for(lambda: port_free(port + 1), what="the new server stopped")


def test_a_restart_cut_off_before_its_switch_is_ended_by_the_next_lock(tmp_path: Path, servers: Servers) -> None:
    root, port = _live(tmp_path, servers)
    before = record(root, "r1")
    assert _restart(root, servers, timeout=10).code == 0
    ok("unlock", root, token=TOKEN)  # the client is gone: never switched, never finished
    taken = ok("lock", root, owner="next", token="other")
    assert taken["settled"]["restored_port"] == port
    assert record(root, "r1")["port"] == port and record(root, "r1")["pid"] == before["pid"]
    wait_for(lambda: port_free(port + 1), what="the unswitched new server stopped")
    assert fetch(port)["status"] == 200


def test_a_restart_that_could_not_start_its_server_leaves_the_live_one_to_the_next_lock(tmp_path: Path, servers: Servers) -> None:
    # Another account (or anything) holds the other backend port: the restart fails before a new server runs. The
    # next lock (the next deploy, config set, restart) must not take the live server for the one it replaced.
    import socket

    root, port = _live(tmp_path, servers)
    before = record(root, "r1")
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", port + 1))
        squatter.listen()
        failed = _restart(root, servers, timeout=10)
        assert failed.code != 0 and f"port {port + 1} is held" in failed.data["error"], failed
    finally:
        squatter.close()
    ok("unlock", root, token=TOKEN)
    ok("lock", root, owner="next", token="other")
    assert fetch(port).get("status") == 200, "the live server was stopped"
    assert record(root, "r1")["pid"] == before["pid"] and not record(root, "r1").get("replaced")


# The agent killed (SIGKILL) right after it started the new server of a restart, before it recorded it.
KILLED_AFTER_LAUNCH = """
import json, os, signal, sys
source = open(sys.argv[1], encoding="utf-8").read()
space = {"__name__": "warp_agent", "__file__": sys.argv[1]}
exec(compile(source, sys.argv[1], "exec"), space)
launch = space["_launch"]
def launched_then_killed(*args, **kwargs):
    values, answer = launch(*args, **kwargs)
    print(json.dumps({"pid": values["pid"]}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
space["_launch"] = launched_then_killed
request = json.loads(sys.argv[2])
space["_check"](request)
space["restart"](request)
"""


def test_a_restart_killed_before_it_recorded_its_new_server_is_ended_by_the_next_lock(tmp_path: Path, servers: Servers) -> None:
    import subprocess
    import sys

    from .test_agent import AGENT_FILE

    root, port = _live(tmp_path, servers)
    before = record(root, "r1")
    request = json.dumps({"action": "restart", "root": str(root), "op": "begin", "token": TOKEN, "timeout": 10})
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_LAUNCH, AGENT_FILE, request], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -9, killed
    servers.pids.append(json.loads(killed.stdout.splitlines()[0])["pid"])
    wait_for(lambda: not port_free(port + 1), what="the new, unrecorded server listening")
    ok("unlock", root, token=TOKEN)
    ok("lock", root, owner="next", token="other")
    assert fetch(port).get("status") == 200, "the live server was stopped"
    assert record(root, "r1")["pid"] == before["pid"] and not record(root, "r1").get("replaced")
    assert (root / "releases" / "r1" / ".warp" / "server.pid").read_text() == str(before["pid"])
    wait_for(lambda: port_free(port + 1), what="the server the restart started, never recorded, stopped")


def test_stop_on_purpose_then_start_on_its_port(tmp_path: Path, servers: Servers) -> None:
    root, port = _live(tmp_path, servers)
    ok("stop", root, release="r1", token=TOKEN, stopped={"by": "ops@laptop"})
    wait_for(lambda: port_free(port), what="the server stopped")
    [listed] = ok("status", root)["releases"]
    assert listed["pid"] is None and listed["stopped"]["by"] == "ops@laptop" and listed["status"] == "live"
    refused = _restart(root, servers)
    assert refused.code != 0 and "warp start" in refused.stderr
    started = _restart(root, servers, mode="start", timeout=10)
    assert started.code == 0 and started["port"] == port and started["previous_port"] is None, started
    assert record(root, "r1")["stopped"] is None and fetch(port)["status"] == 200
    again = _restart(root, servers, mode="start")
    assert again.code == 0 and again["already"] is True


def test_a_server_that_died_is_started_again_on_its_port(tmp_path: Path, servers: Servers) -> None:
    root, port = _live(tmp_path, servers)
    os.killpg(record(root, "r1")["pid"], 9)
    wait_for(lambda: port_free(port), what="the server dead")
    again = _restart(root, servers, timeout=10)
    assert again.code == 0 and again["port"] == port and again["previous_port"] is None, again
    assert record(root, "r1").get("replaced") is None and fetch(port)["status"] == 200


def test_restart_acts_only_under_the_lock(tmp_path: Path, servers: Servers) -> None:
    root, _ = _live(tmp_path, servers)
    assert "token" in agent("restart", root, op="begin").stderr
    assert agent("restart", root, op="begin", token="not-the-holder").code == 3


# -- config ---------------------------------------------------------------------------------------------------------

HOST_FILE = "# secrets of this host\nDB_PASSWORD=pw$ord42\nexport DEBUG='1'\n\nKEEP=k\n"


def _config(root: Path, **request: Any) -> Any:
    return agent("config", root, envfile=ENVFILE, **request)


def _env_root(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    ok("lock", root, owner="test", token=TOKEN)
    env = root / "shared" / "environment"
    env.write_text(HOST_FILE)
    env.chmod(0o600)
    return root


def test_config_lists_names_and_only_when_asked_their_values(tmp_path: Path) -> None:
    root = _env_root(tmp_path)
    listed = _config(root)
    assert listed.code == 0 and listed["names"] == ["DB_PASSWORD", "DEBUG", "KEEP"] and listed["values"] is None
    assert "pw$ord42" not in listed.stdout
    assert _config(root, reveal=True)["values"] == {"DB_PASSWORD": "pw$ord42", "DEBUG": "1", "KEEP": "k"}


def test_config_sets_and_unsets_in_place_keeping_the_other_lines(tmp_path: Path) -> None:
    root = _env_root(tmp_path)
    env = root / "shared" / "environment"
    inode = env.stat().st_ino
    changed = _config(root, op="change", token=TOKEN, set={"DEBUG": "0", "NEW": "a$b`c`'\"#"}, unset=["KEEP", "NONE"])
    assert changed.code == 0, changed
    assert {k: changed[k] for k in ("set", "unchanged", "unset", "absent", "changed")} == {
        "set": ["DEBUG", "NEW"],
        "unchanged": [],
        "unset": ["KEEP"],
        "absent": ["NONE"],
        "changed": True,
    }
    text = env.read_text()
    assert text.startswith("# secrets of this host\nDB_PASSWORD=pw$ord42\nDEBUG=") and "KEEP" not in text
    assert _config(root, reveal=True)["values"] == {"DB_PASSWORD": "pw$ord42", "DEBUG": "0", "NEW": "a$b`c`'\"#"}
    # A new file renamed over the old one, private; nothing left beside it.
    assert env.stat().st_ino != inode and stat.S_IMODE(env.stat().st_mode) == 0o600
    assert sorted(p.name for p in (root / "shared").iterdir() if p.name.startswith(".environment")) == []
    same = _config(root, op="change", token=TOKEN, set={"DEBUG": "0"})
    assert same["unchanged"] == ["DEBUG"] and same["changed"] is False


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param({"set": {"1BAD": "x"}}, "not an environment variable name", id="bad-name"),
        pytest.param({"set": {"A-B": "x"}}, "not an environment variable name", id="dash"),
        pytest.param({"unset": ["A B"]}, "not an environment variable name", id="bad-unset"),
        pytest.param({"set": {"A": "one\ntwo"}}, "line break", id="newline"),
        pytest.param({"set": {"A": "one\u2028two"}}, "line break", id="unicode-line-separator"),
        pytest.param({"set": {"A": "1"}, "unset": ["A"]}, "both set and unset", id="both"),
    ],
)
def test_a_bad_change_is_refused_and_the_file_left_as_it_was(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    root = _env_root(tmp_path)
    refused = _config(root, op="change", token=TOKEN, **change)
    assert refused.code != 0 and says in refused.stderr, refused
    assert (root / "shared" / "environment").read_text() == HOST_FILE


def test_a_broken_host_file_is_named_by_line_never_quoted(tmp_path: Path) -> None:
    root = _env_root(tmp_path)
    (root / "shared" / "environment").write_text("A=1\nhunter2 is the password\n")
    for request in ({}, {"op": "change", "token": TOKEN, "set": {"B": "2"}}):
        refused = _config(root, **request)
        assert refused.code != 0 and "line 2 is not NAME=VALUE" in refused.stderr, refused
        assert "hunter2" not in refused.stderr + refused.stdout
    assert (root / "shared" / "environment").read_text() == "A=1\nhunter2 is the password\n"


def test_a_config_change_needs_the_lock(tmp_path: Path) -> None:
    root = _env_root(tmp_path)
    assert _config(root, op="change", set={"A": "1"}).code != 0
    assert _config(root, op="change", token="someone-else", set={"A": "1"}).code == 3
    assert (root / "shared" / "environment").read_text() == HOST_FILE


# -- audit ----------------------------------------------------------------------------------------------------------


def test_the_audit_log_has_a_begun_line_per_lock_and_the_end_lines_newest_last(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ok("lock", root, owner="test", token=TOKEN, audit={"action": "deploy", "by": "ci@build", "details": {"env_file": False}})
    ok("audit", root, token=TOKEN, entry={"action": "deploy", "by": "ci@build", "release": "r1", "result": "ok"})
    ok("unlock", root, token=TOKEN)
    ok("lock", root, owner="test", token="second", audit={"action": "config", "by": "ops", "details": {"set": ["A"]}})
    ok("audit", root, token="second", entry={"action": "config", "by": "ops", "result": "failed", "error": "boom"})
    entries = ok("audit", root, op="list")["entries"]
    assert [(e["action"], e["result"]) for e in entries] == [
        ("deploy", "begun"),
        ("deploy", "ok"),
        ("config", "begun"),
        ("config", "failed"),
    ]
    assert entries[3]["error"] == "boom" and entries[2]["details"] == {"set": ["A"]} and entries[1]["release"] == "r1"
    assert all(e["time"].endswith("Z") and "from" in e for e in entries)
    assert [e["result"] for e in ok("audit", root, op="list", limit=2)["entries"]] == ["begun", "failed"]
    log = root / "shared" / "audit.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    assert all(json.loads(line) for line in log.read_text().splitlines())
    # Only the lock's holder appends.
    assert agent("audit", root, token="not-held", entry={"action": "x", "result": "ok"}).code == 3


def test_an_audit_entry_for_a_purged_deploy_path_is_not_written(tmp_path: Path) -> None:
    root = tmp_path / "gone"
    os.makedirs(root)
    assert ok("audit", root, entry={"action": "remove", "result": "ok"})["written"] is False
    assert ok("audit", root, op="list")["entries"] == []
