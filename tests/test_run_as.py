"""run_as.py: a root start's server runs as an unprivileged account, checked, with no way back to root."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys

import pytest

from warptasks.scripts import source

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can change to another account")
SHOW = (
    "import json, os; print(json.dumps({'uids': os.getresuid(), 'gids': os.getresgid(), 'groups': os.getgroups(), "
    "'env': [os.environ.get(n) for n in ('HOME', 'USER', 'LOGNAME', 'KEPT')]}))"
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """run_as.py as plan_start ships it: its source, run by the environment's Python."""
    return subprocess.run(
        [sys.executable, "-c", source("run_as.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@as_root
def test_the_command_runs_as_the_account_with_every_id_changed_and_no_other_group() -> None:
    account = pwd.getpwnam("nobody")
    home = pwd.getpwuid(0).pw_dir
    result = run("nobody", "nogroup", "--", sys.executable, "-c", SHOW, env={"HOME": home, "KEPT": "$x `y`"})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    gid = grp.getgrnam("nogroup").gr_gid
    assert seen["uids"] == [account.pw_uid] * 3 and seen["gids"] == [gid] * 3
    assert seen["groups"] in ([], [gid])
    # Root's home is not the account's; the rest of the environment passes through as it was.
    assert seen["env"] == [account.pw_dir, "nobody", "nobody", "$x `y`"]


@as_root
def test_a_home_the_environment_sets_is_kept() -> None:
    result = run("nobody", "nogroup", "--", sys.executable, "-c", SHOW, env={"HOME": "/srv/app-home"})
    assert json.loads(result.stdout)["env"][0] == "/srv/app-home"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(("nobody", "nogroup"), 2, "usage:", id="no-command"),
        pytest.param(("nobody", "nogroup", "true"), 2, "usage:", id="no-separator"),
        pytest.param(("no-such-user-warptasks", "nogroup", "--", "true"), 2, "no account 'no-such-user-warptasks'", id="user"),
        pytest.param(("nobody", "no-such-group-warptasks", "--", "true"), 2, "no group 'no-such-group-warptasks'", id="group"),
        pytest.param(("root", "nogroup", "--", "true"), 2, "root's own account or group", id="root-user"),
        pytest.param(("nobody", "root", "--", "true"), 2, "root's own account or group", id="root-group"),
    ],
)
def test_wrong_use_is_a_clear_error_and_runs_nothing(args: tuple[str, ...], code: int, message: str) -> None:
    result = run(*args)
    assert result.returncode == code and message in result.stderr and "Traceback" not in result.stderr


@as_root
def test_a_command_that_cannot_run_fails_as_a_shell_would() -> None:
    result = run("nobody", "nogroup", "--", "no-such-command-warptasks", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 127 and "cannot run no-such-command-warptasks" in result.stderr


@as_root
def test_started_without_root_it_refuses_rather_than_run_as_itself() -> None:
    # The inner run_as.py is already nobody: it cannot change to www-data, and says what to do.
    inner = (sys.executable, "-c", source("run_as.py"), "www-data", "www-data", "--", "true")
    result = run("nobody", "nogroup", "--", *inner)
    assert result.returncode == 1
    assert "cannot change to uid" in result.stderr and "start as root" in result.stderr
