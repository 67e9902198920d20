"""warp start as root: every server but mod_wsgi runs as an unprivileged account, checked before it starts."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from .conftest import free_port, get, serving, warp, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root starts servers as another account")

WHO = """import json
import os


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    ids = {"uids": os.getresuid(), "gids": os.getresgid(), "groups": os.getgroups(), "home": os.environ["HOME"]}
    return [json.dumps(ids).encode()]
"""


def _ids(pid: int) -> tuple[list[int], list[int]]:
    """The real, effective, saved and filesystem uids and gids of ``pid``, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return [int(v) for v in fields["Uid"].split()], [int(v) for v in fields["Gid"].split()]


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (the server's workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            queue += [int(child) for child in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize("server", ["gunicorn", "waitress"])
def test_as_root_the_server_and_its_workers_run_as_www_data(project_dir: Path, server: str) -> None:
    write(project_dir, {"wsgi.py": WHO})
    warp(project_dir, "build", "--server", server)
    account = pwd.getpwnam("www-data")
    with serving(project_dir, "--server", server) as site:
        seen = json.loads(get(site.url + "/").text)
        # warp start execs the server: its pid is the server's (gunicorn's master, waitress itself).
        processes = _tree(site.process.pid)
        ids = {pid: _ids(pid) for pid in processes}
        said = site.output()
    assert seen["uids"] == [account.pw_uid] * 3 and seen["gids"] == [account.pw_gid] * 3
    assert seen["groups"] in ([], [account.pw_gid]) and seen["home"] == account.pw_dir
    assert len(processes) >= (2 if server == "gunicorn" else 1)
    for pid, (uids, gids) in ids.items():
        assert uids == [account.pw_uid] * 4 and gids == [account.pw_gid] * 4, (pid, uids, gids)
    assert f"running as root: {server} runs as www-data:www-data" in said


def test_as_root_a_project_the_account_cannot_read_is_refused_before_the_start(project_dir: Path) -> None:
    private = project_dir / "private"
    private.mkdir(mode=0o700)
    app = private / "site"
    write(app, {"wsgi.py": WHO})
    warp(app, "build", "--server", "gunicorn")
    # A port of its own: what is checked here comes after the port check, and 8080 may be anyone's.
    result = warp(app, "start", "--server", "gunicorn", "--port", str(free_port()), check=False, timeout=60)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "Traceback" not in said
    for phrase in ("gunicorn's processes run as www-data:www-data", "www-data cannot", "Permission denied", "--user/--group"):
        assert phrase in said, said
    # Refused before the server was exec'd (warp start says "start: ..." then).
    assert not any(line.startswith("start: ") for line in result.stdout.splitlines()), result.stdout
