"""private_dirs.py, which mod_wsgi's command starts with: its folders made private, or refused, then the server exec'd."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from warptasks.scripts import source

SCRIPT = source("private_dirs.py")
SHOW = "import os, sys; print(sys.argv[1:], oct(os.stat(sys.argv[1]).st_mode & 0o777))"
ROOT = os.geteuid() == 0


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=30)


def test_missing_folders_are_made_private_then_the_command_runs(tmp_path: Path) -> None:
    root, sockets = tmp_path / "run" / "127.0.0.1-8080", tmp_path / "sockets"
    result = run("", str(root), str(sockets), "--", sys.executable, "-c", SHOW, str(root), "a b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"['{root}',", "'a", "b']", "0o700"]
    assert stat.S_IMODE(sockets.stat().st_mode) == 0o700


def test_an_own_folder_left_open_is_closed_again(tmp_path: Path) -> None:
    folder = tmp_path / "root"
    folder.mkdir()
    folder.chmod(0o777)
    assert run("", str(folder), "--", "true").returncode == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("planted", ["link", "file"])
def test_a_link_or_file_in_place_of_the_folder_is_refused_and_nothing_runs(tmp_path: Path, planted: str) -> None:
    folder, target, ran = tmp_path / "root", tmp_path / "elsewhere", tmp_path / "ran"
    target.mkdir()
    if planted == "link":
        folder.symlink_to(target)
    else:
        folder.write_text("")
    result = run("", str(folder), "--", "touch", str(ran))
    assert result.returncode == 1 and f"{folder} is not a folder" in result.stderr
    assert not ran.exists()


@pytest.mark.skipif(not ROOT, reason="only root can make a folder another account owns")
def test_a_folder_another_account_made_first_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    folder, ran = tmp_path / "root", tmp_path / "ran"
    folder.mkdir()
    (folder / "envvars").write_text(f"touch {ran}\n")
    nobody = pwd.getpwnam("nobody")
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    result = run("", str(folder), "--", "sh", str(folder / "envvars"))
    assert result.returncode == 1
    assert f"belongs to uid {nobody.pw_uid}, not to this account (uid 0)" in result.stderr
    assert not ran.exists()


@pytest.mark.skipif(not ROOT, reason="only root can give a folder to another group")
def test_as_root_the_workers_group_may_enter(tmp_path: Path) -> None:
    folder = tmp_path / "root"
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    assert run(group, str(folder), "--", "true").returncode == 0
    info = folder.stat()
    assert stat.S_IMODE(info.st_mode) == 0o750 and info.st_gid == pwd.getpwnam("nobody").pw_gid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("", "/x", "true"), "usage:", id="no-separator"),
        pytest.param(("", "--", "true"), "usage:", id="no-folder"),
        pytest.param(("", "/x", "--"), "usage:", id="no-command"),
        pytest.param(("no-such-group-warptasks", "/x", "--", "true"), "no group 'no-such-group-warptasks'", id="no-group"),
    ],
)
def test_wrong_arguments_are_a_clear_error(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
