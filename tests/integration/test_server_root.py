"""mod_wsgi-express's server root: private to the project, never the predictable folder in /tmp it defaults to."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from warptasks.servers.mod_wsgi import socket_folder

from .conftest import free_port, get, serving, warp, write

HELLO = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""
ROOT = os.geteuid() == 0


@contextmanager
def _planted(port: int, marker: Path) -> Iterator[Path]:
    """The folder mod_wsgi-express uses by default, made first by another account, its envvars writing ``marker``."""
    tmp = (os.environ.get("TMPDIR") or "/tmp").rstrip("/")  # as mod_wsgi-express picks it
    folder = Path(tmp) / f"mod_wsgi-127.0.0.1:{port}:{os.getuid()}"
    folder.mkdir(mode=0o755)
    try:
        (folder / "envvars").write_text(f"touch {marker}\n")
        if ROOT:
            nobody = pwd.getpwnam("nobody")
            for path in (folder, folder / "envvars"):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _refuses(account: str, path: Path) -> bool:
    """``account`` (with its own group only) cannot list ``path``."""
    user = pwd.getpwnam(account)
    result = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.listdir(sys.argv[1])", str(path)],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
    )
    return result.returncode != 0 and "PermissionError" in result.stderr


def _assert_private(folder: Path) -> None:
    """Owned by this account and closed to others; as root, open to the group of Apache's workers (www-data) only."""
    info = folder.stat()
    assert info.st_uid == os.geteuid()
    if ROOT:
        # Apache's children reach the daemon sockets, and the daemons the handler script, through the group.
        assert stat.S_IMODE(info.st_mode) == 0o750 and info.st_gid == pwd.getpwnam("www-data").pw_gid
        assert _refuses("nobody", folder)
    else:
        assert stat.S_IMODE(info.st_mode) == 0o700


@pytest.mark.parametrize("where", ["short-path", "long-path"])
def test_a_planted_tmp_server_root_is_never_used_and_the_projects_own_is_private(project_dir: Path, where: str) -> None:
    # Short: the daemon sockets fit in the server root. Long: they go to a checked folder of their own.
    base = Path(tempfile.mkdtemp(prefix="w", dir="/tmp")) if where == "short-path" else project_dir
    project = base / "site"
    port = free_port()
    server_root = project / ".warp" / "run" / f"127.0.0.1-{port}"
    sockets = Path(socket_folder(str(server_root), os.geteuid()))
    assert (sockets == server_root) == (where == "short-path")
    marker = base / "envvars-ran"
    try:
        os.chmod(base, 0o755)
        write(project, {"wsgi.py": HELLO})
        warp(project, "build")
        with _planted(port, marker) as planted, serving(project, port=port):
            assert get(f"http://127.0.0.1:{port}/").text == "hello"
            # apachectl sources envvars before Apache starts: by now a planted one would have run.
            assert not marker.exists(), "mod_wsgi-express ran the planted envvars"
            assert not (planted / "httpd.conf").exists()
            assert (server_root / "httpd.conf").is_file() and (server_root / "apachectl").is_file()
            assert glob.glob(f"{sockets}/wsgi.*.sock"), os.listdir(sockets)
            for folder in {server_root, sockets}:
                _assert_private(folder)
        assert not marker.exists(), "mod_wsgi-express ran the planted envvars"
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        if base != project_dir:
            shutil.rmtree(base, ignore_errors=True)
