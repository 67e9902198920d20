"""warp deploy on a real host: the host's shared/environment and the project's environment file reach the
server literally, as its environment; never through a shell, and never on a command line another account can read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote.account import app_account
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.scripts import envfile
from warptasks.settings import DeploySettings

from .deploy_helpers import get
from .test_deploy import free_port_run

pytestmark = pytest.mark.remote

PATH = "/srv/env-site"
MARKER = "/tmp/warp-env-ran"
# Each line as a shell sourcing it broke it (or ran it): the server must see exactly what envfile.parse reads.
SHARED = f"""# secrets of this host
SECRET_KEY=q7$y3&(w)!=b
DB_PASSWORD=pw$ord42
TICKS=`touch {MARKER}`tick-secret
SUBST=$(touch {MARKER}-2)subst-secret
QUOTED="it's \\"quoted-secret\\""
export SINGLE='$HOME single-secret'
"""
# The project's own environment file: committed with the app, but its values are the app's settings all the same.
PROJECT_ENV = "PROJECT_TOKEN=proj-secret-4711\n"
SECRETS = ("q7$y3&(w)!=b", "pw$ord42", "tick-secret", "subst-secret", "quoted-secret", "single-secret", "proj-secret-4711")
NAMES = ("SECRET_KEY", "DB_PASSWORD", "TICKS", "SUBST", "QUOTED", "SINGLE", "PROJECT_TOKEN")

APP = f"""import json
import os

NAMES = {NAMES!r}


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({{name: os.environ.get(name) for name in NAMES}}).encode()]
"""


HOOK = """#!/bin/sh
printf '%s\\n' "$SECRET_KEY" "$PROJECT_TOKEN" > "$WARP_DATA_DIR/{hook}-saw"
"""


@dataclass
class Deployed:
    host: Any
    url: str
    results: list[Any]

    def sh(self, command: str) -> str:
        code, output = self.host.exec(command)
        assert code == 0, output
        return output


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    client = ensure_engine()
    [host] = ssh_hosts(client, 1, network="host")
    workdir = Path(tempfile.mkdtemp(prefix="warp-deploy-env-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    try:
        project = workdir / "site"
        (project / ".warpdrive").mkdir(parents=True)
        (project / "wsgi.py").write_text(APP)
        (project / ".warpdrive" / "server_type").write_text("gunicorn\n")
        (project / ".warpdrive" / "environment").write_text(PROJECT_ENV)
        hooks = project / ".warpdrive" / "action_hooks"
        hooks.mkdir()
        for hook in ("migrate", "deploy"):  # a deploy's other steps: the migration, the hook before the server starts
            (hooks / hook).write_text(HOOK.format(hook=hook))
        for path in [project, *project.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() or path.parent == hooks else 0o644)
        secrets_file = workdir / "secrets.env"
        secrets_file.write_text(SHARED)
        port = free_port_run()
        opts = DeploySettings.resolve(
            None,
            path=PATH,
            identity=host.key_filename,
            known_hosts=host.known_hosts,
            env_file=str(secrets_file),
            drain=1,
        )
        target = HostTarget(host.address, host.user, host.port, app_port=port, listen="127.0.0.1")
        results = deploy([target], str(project), opts, say=print)
        print(summary(results))
        yield Deployed(host, f"http://127.0.0.1:{port}/", results)
    finally:
        remove_hosts([host])
        if os.environ.get("WARP_TEST_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


def test_the_server_sees_the_environment_files_values_exactly_as_written(deployed: Deployed) -> None:
    assert all(r.ok for r in deployed.results), summary(deployed.results)
    status, body = get(deployed.url)
    assert status == 200, body
    expected = {**envfile.parse(PROJECT_ENV, "project"), **envfile.parse(SHARED, "shared")}
    assert json.loads(body) == expected
    assert expected["SECRET_KEY"] == "q7$y3&(w)!=b" and expected["QUOTED"] == 'it\'s \\"quoted-secret\\"'
    for hook in ("migrate", "deploy"):
        saw = deployed.sh(f"cat {PATH}/shared/data/{hook}-saw")  # written as the app's account, in its folder
        assert saw == f"{expected['SECRET_KEY']}\n{expected['PROJECT_TOKEN']}\n", hook
    # Nothing in a value ran: no shell ever read the file.
    assert deployed.sh(f"ls {MARKER}* 2>/dev/null || true").strip() == ""


def test_no_command_line_on_the_host_carries_a_value(deployed: Deployed) -> None:
    # ps shows every process's arguments to every account on the host: the values travel as environment only.
    lines = deployed.sh("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null")
    assert "gunicorn" in lines
    for secret in SECRETS:
        assert secret not in lines, f"{secret!r} is on a command line"
    # The files the values travel in instead: only the deploy's account can open them.
    assert deployed.sh(f"stat -c %a {PATH}/current/.warp/env").strip() == "700"
    modes = deployed.sh(f"stat -c '%n %a' {PATH}/current/.warp/env/*").split()
    names = [m.rsplit("/", 1)[1] for m in modes[::2]]
    # cmd-*: the commands warp exec, shell and migrate run on the release (recorded by the deploy, not run by it);
    # server-<port>: the same server on the other backend port, for a restart beside the live one.
    assert modes[1::2] == ["600"] * 7, modes
    assert names[:6] == ["before-1", "cmd-exec", "cmd-migrate", "cmd-shell", "migrate", "server"], modes
    assert names[6].startswith("server-") and names[6][len("server-") :].isdigit(), modes
    # Nor does the command recorded with the release (and run again by a rollback).
    records = deployed.sh(f"cat {PATH}/releases/*/.warp/deploy.json")
    assert "gunicorn" in records
    for secret in SECRETS:
        assert secret not in records, f"{secret!r} is in the recorded command"


def test_a_root_deploys_server_runs_as_the_apps_own_account(deployed: Deployed) -> None:
    # The deploy logs in as root; the server and its workers must not be (the sh that starts it stays root). They run
    # as the account the deploy made for this app, not as www-data, which every other app and service would share.
    account = app_account(PATH)
    uid, gid = deployed.sh(f"id -u {account}").strip(), deployed.sh(f"id -g {account}").strip()
    table = deployed.sh("ps -eo pid=,uid=,args=")
    rows = [line.split(None, 2) for line in table.splitlines()]
    servers = [(pid, owner) for pid, owner, args in rows if args.split()[:2][-1].endswith("/bin/gunicorn")]
    assert len(servers) >= 2, table  # the master and its worker(s)
    assert {owner for _, owner in servers} == {uid}, table
    for pid, _ in servers:
        ids = deployed.sh(f"grep -E '^(Uid|Gid):' /proc/{pid}/status").split()
        assert set(ids[1:5]) == {uid} and set(ids[6:10]) == {gid}, ids
