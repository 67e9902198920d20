"""Which systemd manager supervises a host's servers, and what the agent says when none does.

As root: system units, exactly as before. As another account: that account's user units
(``systemctl --user``), where lingering keeps its manager running; else plain processes
with a pidfile, and ``info``/``status``/``warp status`` say why.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from warptasks.scripts import agent as agent_module
from warptasks.tasks.remote import _describe

from .test_agent import Servers, free_port, ok, servers  # noqa: F401  (servers: a fixture)

UID = 4321
NAME = "deployer"

SYSTEM_UNIT = """[Unit]
Description=warptasks: app server of /srv/app (%i)
After=network.target

[Service]
Type=simple
ExecStart=/bin/sh "/srv/app/shared/run/server-%i.sh"
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
PrivateTmp=yes
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def _service(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.split("[Service]\n", 1)[1].splitlines() if "=" in line)


def test_a_system_unit_is_as_it_was_and_a_user_unit_is_wanted_by_the_users_own_boot() -> None:
    assert agent_module._unit_text("/srv/app", "server", "app server") == SYSTEM_UNIT
    user = agent_module._unit_text("/srv/app", "server", "app server", user=True)
    settings = _service(user)
    assert settings["WantedBy"] == "default.target" and "multi-user" not in user
    assert settings["NoNewPrivileges"] == "yes" and settings["Restart"] == "on-failure"
    # A user manager gives a /tmp of its own only through user namespaces, and fails the unit where it cannot.
    assert "PrivateTmp" not in settings
    assert settings["ExecStart"] == _service(SYSTEM_UNIT)["ExecStart"]


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The agent runs as a uid that is not root, whose home, runtime folder and linger folder are under ``tmp_path``."""
    home = tmp_path / "home"
    entry = pwd.struct_passwd((NAME, "x", UID, UID, "", str(home), "/bin/sh"))
    monkeypatch.setattr(os, "geteuid", lambda: UID)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: entry if uid == UID else pwd.getpwnam("root"))
    monkeypatch.setattr(agent_module, "USER_RUNTIME", str(tmp_path / "run-user"))
    monkeypatch.setattr(agent_module, "LINGER_DIR", str(tmp_path / "linger"))
    monkeypatch.setattr(agent_module, "SYSTEMD_RUNNING", str(tmp_path))
    monkeypatch.setattr(agent_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    (tmp_path / "linger").mkdir()
    for name in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


class Commands:
    """Stands in for ``subprocess.run``: records each argv, answers from ``answers`` (argv[0] -> (code, out, err))."""

    def __init__(self, **answers: tuple[int, str, str]) -> None:
        self.answers, self.calls = answers, []  # type: ignore[var-annotated]

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        code, out, err = self.answers.get(argv[0], (1, "", f"{argv[0]}: not expected"))
        return subprocess.CompletedProcess(argv, code, out, err)


def test_as_root_units_are_the_systems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(agent_module, "SYSTEMD_RUNNING", str(tmp_path))
    assert agent_module._systemctl_argv("daemon-reload") == ["systemctl", "daemon-reload"]
    assert agent_module._unit_dir() == "/etc/systemd/system"
    assert agent_module._supervisor({"systemd": True}) == ("system", None)
    assert agent_module._supervisor({"systemd": False}) == (None, "started with --no-systemd")
    monkeypatch.setattr(agent_module, "SYSTEMD_RUNNING", str(tmp_path / "absent"))
    assert agent_module._supervisor({"systemd": True}) == (None, "systemd does not run on this host")


def test_as_another_account_units_are_its_own_and_systemctl_finds_its_manager(account: Path) -> None:
    assert agent_module._unit_dir() == str(account / "home" / ".config" / "systemd" / "user")
    # No runtime folder (the manager is not running): nothing is made up.
    assert agent_module._systemctl_argv("daemon-reload") == ["systemctl", "--user", "daemon-reload"]
    assert "XDG_RUNTIME_DIR" not in os.environ
    # An SSH command often comes without them: the runtime folder and the bus in it are named.
    runtime = account / "run-user" / str(UID)
    runtime.mkdir(parents=True)
    (runtime / "bus").touch()
    assert agent_module._systemctl_argv("show", "x.service") == ["systemctl", "--user", "show", "x.service"]
    assert os.environ["XDG_RUNTIME_DIR"] == str(runtime)
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == f"unix:path={runtime}/bus"


def test_without_lingering_an_account_gets_no_units_and_is_told_how_to_get_them(
    account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = Commands(loginctl=(0, "Linger=no\n", ""), systemctl=(0, "Version=252\n", ""))
    monkeypatch.setattr(agent_module.subprocess, "run", commands)
    assert agent_module._supervisor({"systemd": True}) == (None, f"enable lingering: loginctl enable-linger {NAME}")
    assert commands.calls == [["loginctl", "show-user", NAME, "--property=Linger"]]


@pytest.mark.parametrize("how", ["loginctl", "linger file"])
def test_with_lingering_and_a_manager_that_answers_servers_are_user_units(
    account: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    commands = Commands(loginctl=(0, f"Linger={'yes' if how == 'loginctl' else 'no'}\n", ""), systemctl=(0, "Version=252\n", ""))
    monkeypatch.setattr(agent_module.subprocess, "run", commands)
    if how == "linger file":
        (account / "linger" / NAME).touch()
    assert agent_module._supervisor({"systemd": True}) == ("user", None)
    assert ["systemctl", "--user", "show", "--property=Version"] in commands.calls
    assert agent_module._supervisor({"systemd": False}) == (None, "started with --no-systemd")


def test_a_lingering_account_whose_manager_does_not_answer_is_told_so(account: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (account / "linger" / NAME).touch()
    failing = Commands(systemctl=(1, "", "Failed to connect to bus: No such file or directory\n"))
    monkeypatch.setattr(agent_module.subprocess, "run", failing)
    assert agent_module._supervisor({"systemd": True}) == (
        None,
        f"the systemd manager of {NAME} does not answer: Failed to connect to bus: No such file or directory",
    )


def test_a_release_started_as_a_process_is_told_what_the_host_lacks_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "_user_units", lambda: True)
    assert agent_module._supervision({"unit": "warp-x-server@8081.service"}) == "systemd --user"
    assert agent_module._supervision({"unsupervised": "started with --no-systemd"}) == "started with --no-systemd"
    lacking = f"enable lingering: loginctl enable-linger {NAME}"
    monkeypatch.setattr(agent_module, "_supervisor", lambda req: (None, lacking))
    assert agent_module._supervision({"unsupervised": "systemd does not run on this host"}) == lacking
    # Lingering was enabled since: the next deploy makes it a unit.
    monkeypatch.setattr(agent_module, "_supervisor", lambda req: ("user", None))
    assert "deploy again" in agent_module._supervision({"unsupervised": lacking})


def test_status_and_info_say_a_server_without_systemd_is_supervised_by_warptasks_own(tmp_path: Path, servers: Servers) -> None:  # noqa: F811
    root, port = tmp_path / "app", free_port()
    started = servers.start(root, "r1", port, systemd=False)
    assert started.code == 0, started
    assert started["supervised"] is True and started["supervisor"] == "warp"
    assert started["supervision"].startswith("warptasks' own supervisor: started again when it crashes, but not at boot")
    assert ok("status", root)["supervised"] is None  # no live release yet
    ok("switch", root, release="r1")
    state = ok("status", root).data
    assert state["supervised"] is True and state["supervision"] == started["supervision"]
    assert state["supervision"].endswith(
        "(started with --no-systemd: without it, where systemd runs, servers are units started at boot)"
    )
    info = ok("info", root, systemd=False).data
    assert info["supervised"] is False and info["supervision"] == "started with --no-systemd"


def test_a_release_started_before_the_supervisor_existed_is_a_plain_process_as_before(
    tmp_path: Path,
    servers: Servers,  # noqa: F811
) -> None:
    root, port = tmp_path / "app", free_port()
    assert servers.start(root, "r1", port, systemd=False).code == 0
    ok("switch", root, release="r1")
    path = root / "releases" / "r1" / ".warp" / "deploy.json"
    older = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("supervisor", "supervisor_state")}
    path.write_text(json.dumps(older))  # what an older version recorded
    state = ok("status", root).data
    assert state["supervised"] is False and state["supervision"] == "started with --no-systemd"
    assert state["supervisor"] is None and state["releases"][0]["restarts"] is None
    assert "not supervised (started with --no-systemd)" in _describe("web", state)


def test_warptasks_own_supervisor_says_how_to_have_the_server_started_at_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    own = "warptasks' own supervisor: started again when it crashes, but not at boot"
    lacking = f"enable lingering: loginctl enable-linger {NAME}"
    monkeypatch.setattr(agent_module, "_supervisor", lambda req: (None, lacking))
    assert agent_module._supervision({"supervisor": "warp", "unsupervised": lacking}) == (
        f"{own} (to have it started at boot: {lacking}, then deploy again)"
    )
    assert agent_module._supervision({"supervisor": "warp", "unsupervised": "started with --no-systemd"}) == (
        f"{own} (started with --no-systemd: without it, where systemd runs, servers are units started at boot)"
    )
    monkeypatch.setattr(agent_module, "_supervisor", lambda req: (None, "systemd does not run on this host"))
    assert agent_module._supervision({"supervisor": "warp", "unsupervised": "systemd does not run on this host"}) == (
        f"{own} (systemd does not run on this host: where it does, servers are units started at boot)"
    )
    monkeypatch.setattr(agent_module, "_supervisor", lambda req: ("user", None))  # lingering enabled since
    assert agent_module._supervision({"supervisor": "warp", "unsupervised": lacking}) == (
        f"{own} (systemd can supervise it now: deploy again to have it started at boot)"
    )


def _state(**live: Any) -> dict[str, Any]:
    release = {"id": "r1", "status": "live", "port": 8081, "pid": 42}
    return {"current": "r1", "releases": [release], "proxy": {}, "health": 200, "hostname": "web", **live}


def test_warp_status_says_when_the_live_server_is_not_supervised_and_how_to_fix_it() -> None:
    why = f"enable lingering: loginctl enable-linger {NAME}"
    shown = _describe("web", _state(supervised=False, supervision=why)).splitlines()
    assert shown[2] == f"  not supervised ({why})"
    assert "not supervised" not in _describe("web", _state(supervised=True, supervision="systemd --user"))
    assert "not supervised" not in _describe("web", _state())  # an older agent says nothing of it


def test_warp_status_says_a_server_runs_under_warptasks_supervisor_and_how_often_it_was_started_again() -> None:
    why = "warptasks' own supervisor: started again when it crashes, but not at boot (systemd does not run on this host: ...)"
    state = _state(supervised=True, supervisor="warp", supervision=why)
    state["releases"][0].update(server_pid=43, restarts=2)
    shown = _describe("web", state).splitlines()
    assert shown[2:4] == [f"  supervised by {why}", "  app process pid 43 (restarts so far: 2)"]
    state["releases"][0].update(server_pid=None)  # waiting to start it again
    assert "  app process pid NOT RUNNING (restarts so far: 2)" in _describe("web", state).splitlines()


def test_warp_status_escapes_what_the_host_says_as_warp_audit_does() -> None:
    """Who stopped the server (and the host's name, a release's id, an error) come from the host's files: an escape
    sequence or a line break in them is shown as \\xNN, never given to the operator's terminal, nor a forged line."""
    forged = "ops\x1b]0;owned\x07\nweb2 (web2): current r9\r"
    release = {"id": "r1\x1b[2J", "status": "live", "port": 8081, "pid": 0, "stopped": {"by": forged}}
    state = {"current": "r1\x1b[2J", "releases": [release], "proxy": {}, "health": 200, "hostname": "web\x9b"}
    shown = _describe("web", state)
    assert not any(ch in shown for ch in "\x1b\x07\r\x9b"), shown
    lines = shown.splitlines()
    assert lines[1] == (
        "  server STOPPED on purpose by ops\\x1b]0;owned\\x07\\x0aweb2 (web2): current r9\\x0d (warp start starts it again)"
    )
    assert len(lines) == 4 and lines[0].startswith("web (web\\x9b): current r1\\x1b[2J")
    assert _describe("web", {"error": "no agent\x1b[31m"}) == "web: ERROR no agent\\x1b[31m"
