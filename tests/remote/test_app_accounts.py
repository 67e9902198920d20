"""Each app deployed as root on a host runs as an account of its own: apps cannot read each other's environment
or signal each other's processes; exec and the migration run as it; a host deployed with www-data moves to it
without a failed request; an account of that name someone else made is refused.

One real SSH host (as root), several deploy paths on it, a Django project behind the host's front."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote.account import account_mark, app_account
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

from .deploy_helpers import Load, assert_ok, drop_workdir, make_django_project, make_workdir, release_served, set_version
from .test_deploy import deploy_image, free_port_run
from .warp_runs import Warp

pytestmark = pytest.mark.remote

A, B = "/srv/acct-a", "/srv/acct-b"
# Run on the host: a JSON row (pid, parent, uid, args) for each process, from what every account may read (root in a
# container without CAP_SYS_PTRACE cannot read another account's cwd or environ).
PROCESSES = """
import json, os
rows = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        args = open("/proc/%s/cmdline" % pid, "rb").read().decode("utf-8", "replace").split("\\0")
        stat = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
        uid = [int(line.split()[2]) for line in open("/proc/%s/status" % pid) if line.startswith("Uid:")][0]
    except (OSError, IndexError):
        continue
    rows.append({"pid": int(pid), "parent": int(stat[1]), "uid": uid, "args": [a[:200] for a in args[:4]]})
print(json.dumps(rows))
"""


@dataclass
class Rig:
    host: Any
    workdir: Path

    def sh(self, command: str, user: str = "root") -> str:
        code, output = self.host.exec(command, user=user)
        assert code == 0, output
        return output

    def deploy(self, path: str, port: int, project: Path, **settings: Any) -> list[Any]:
        h = self.host
        target = HostTarget(h.address, h.user, h.port, app_port=port, listen="127.0.0.1")
        opts = DeploySettings.resolve(None, path=path, identity=h.key_filename, known_hosts=h.known_hosts, **settings)
        return deploy([target], str(project), opts, say=print)

    def server_pid(self, path: str) -> str:
        """The pid of the live release's gunicorn master: the first gunicorn below the command that starts it."""
        live = self.sh(f"readlink -f {path}/current").strip()
        rows = json.loads(self.sh(f"python3 -c {shlex.quote(PROCESSES)}"))
        below = {r["pid"] for r in rows if f"cd {live} " in " ".join(r["args"])}  # the starting sh -c line
        for _ in range(10):
            below |= {r["pid"] for r in rows if r["parent"] in below}
        servers = [r for r in rows if r["pid"] in below and any(a.endswith("/bin/gunicorn") for a in r["args"][:2])]
        masters = [r["pid"] for r in servers if r["parent"] not in {s["pid"] for s in servers}]
        assert len(masters) == 1, [r for r in rows if r["pid"] in below]
        return str(masters[0])

    def owner(self, pid_or_path: str) -> str:
        where = f"/proc/{pid_or_path}" if pid_or_path.isdigit() else pid_or_path
        return self.sh(f"stat -c %U {where}").strip()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = make_workdir("warp-accounts-")
    try:
        yield Rig(host, workdir)
    finally:
        remove_hosts([host])
        drop_workdir(workdir)


@pytest.fixture(scope="module")
def two_apps(rig: Rig) -> dict[str, Any]:
    """Apps A and B on the one host, each with a secret in its shared/environment."""
    apps: dict[str, Any] = {}
    for path, secret in ((A, "secret-of-a-5150"), (B, "secret-of-b-8086")):
        name = path.rsplit("-", 1)[1]
        project = make_django_project(rig.workdir / name, "1", server="gunicorn")
        env_file = rig.workdir / f"{name}.env"
        env_file.write_text(f"APP_SECRET={secret}\n")
        port = free_port_run()
        assert_ok(rig.deploy(path, port, project, env_file=str(env_file)))
        apps[path] = {"secret": secret, "port": port, "project": project, "account": app_account(path)}
    return apps


def test_two_apps_run_as_two_accounts_that_cannot_read_each_others_secrets(rig: Rig, two_apps: dict[str, Any]) -> None:
    a, b = two_apps[A], two_apps[B]
    assert a["account"] != b["account"]
    pid_a, pid_b = rig.server_pid(A), rig.server_pid(B)
    assert rig.owner(pid_a) == a["account"] and rig.owner(pid_b) == b["account"]
    # Made by the deploy as a system account with no login, marked as warptasks' for its path.
    fields = rig.sh(f"getent passwd {a['account']}").strip().split(":")
    assert fields[4] == account_mark(A) and fields[6].endswith("nologin") and 0 < int(fields[2]) < 1000, fields
    assert rig.sh(f"id -gn {a['account']}").strip() == a["account"]
    # The control: the app's own account reads its own server's environment...
    code, output = rig.host.exec(f"cat /proc/{pid_a}/environ", user=a["account"])
    assert code == 0 and a["secret"] in output, output
    # ...B's cannot: not A's server's environment, not A's shared/environment; nor signal A's server.
    for command in (f"cat /proc/{pid_a}/environ", f"cat {A}/shared/environment", f"kill -0 {pid_a}"):
        code, output = rig.host.exec(command, user=b["account"])
        assert code != 0 and a["secret"] not in output, (command, output)
    # The app's writable folder is its account's, and closed to the other.
    assert rig.sh(f"stat -c '%U %G %a' {A}/shared/data").split() == [a["account"], a["account"], "750"]
    code, output = rig.host.exec(f"ls {A}/shared/data", user=b["account"])
    assert code != 0, output


def test_the_deploys_migration_and_exec_run_as_the_apps_account_with_the_shared_environment(
    rig: Rig, two_apps: dict[str, Any]
) -> None:
    a = two_apps[A]
    # The deploy's migration (the project's hook, then Django's sqlite database) wrote as the app's account.
    for made in ("migrations.log", "db.sqlite3"):
        assert rig.owner(f"{A}/shared/data/{made}") == a["account"], made
    warp = Warp(rig.host, a["project"], A, a["port"], rig.workdir)
    show = "import os, pwd; print('as', pwd.getpwuid(os.geteuid()).pw_name, os.environ['APP_SECRET'])"
    assert f"as {a['account']} {a['secret']}" in warp.ok("exec", "--", "python", "-c", show)
    assert f"as root {a['secret']}" in warp.ok("exec", "--as-root", "--", "python", "-c", show)
    # warp migrate too: it appends to the file the deploy's migration made, as that account.
    before = rig.sh(f"wc -l < {A}/shared/data/migrations.log").strip()
    warp.ok("migrate")
    assert int(rig.sh(f"wc -l < {A}/shared/data/migrations.log")) == int(before) + 1
    assert rig.owner(f"{A}/shared/data/migrations.log") == a["account"]


def test_a_host_deployed_with_www_data_moves_to_the_apps_account_serving_throughout(rig: Rig) -> None:
    path = "/srv/acct-upgrade"
    account = app_account(path)
    project = make_django_project(rig.workdir / "upgrade", "1", server="gunicorn")
    port = free_port_run()
    assert_ok(rig.deploy(path, port, project, user="www-data", group="www-data"))
    assert rig.owner(rig.server_pid(path)) == "www-data"
    # What the app wrote as www-data (as an earlier warptasks ran every app), and a database its root migration made.
    rig.sh(f"mkdir {path}/shared/uploads && chown www-data:www-data {path}/shared/uploads")
    rig.sh(f"echo photo > {path}/shared/uploads/1.jpg", user="www-data")
    assert rig.owner(f"{path}/shared/data/db.sqlite3") == "root"
    url = f"http://127.0.0.1:{port}/"
    set_version(project, "2")
    with Load([url]) as load:
        assert_ok(rig.deploy(path, port, project))
    assert not load.failures, load.failures[:5]
    assert load.ok > 0 and load.seen == {"1", "2"}, (load.ok, load.seen)
    assert release_served(url) == "2" and rig.owner(rig.server_pid(path)) == account
    for made in ("shared/uploads", "shared/uploads/1.jpg", "shared/data/db.sqlite3"):
        assert rig.owner(f"{path}/{made}") == account, made
    rig.sh(f"echo more >> {path}/shared/uploads/1.jpg", user=account)  # still usable: the app writes it
    # And --user www-data takes it back to the old way.
    set_version(project, "3")
    assert_ok(rig.deploy(path, port, project, user="www-data", group="www-data"))
    assert release_served(url) == "3" and rig.owner(rig.server_pid(path)) == "www-data"


def test_a_move_from_www_data_that_fails_after_the_hand_over_leaves_www_data_its_files(rig: Rig) -> None:
    path = "/srv/acct-failed"
    account = app_account(path)
    project = make_django_project(rig.workdir / "failed", "1", server="gunicorn")
    port = free_port_run()
    assert_ok(rig.deploy(path, port, project, user="www-data", group="www-data"))
    rig.sh(f"mkdir {path}/shared/uploads && chown www-data:www-data {path}/shared/uploads")
    rig.sh(f"echo photo > {path}/shared/uploads/1.jpg", user="www-data")
    # The move to the app's account hands the files over at the migration; the release: line after it fails.
    set_version(project, "2")
    (project / "Procfile").write_text("release: false\n")
    (results,) = rig.deploy(path, port, project)
    assert not results.ok and results.phase == "release", summary([results])
    url = f"http://127.0.0.1:{port}/"
    assert release_served(url) == "1" and rig.owner(rig.server_pid(path)) == "www-data"
    # The last good server, still www-data, writes its files as before; nothing is left the new account's.
    for made in ("shared/uploads", "shared/uploads/1.jpg"):
        assert rig.owner(f"{path}/{made}") == "www-data", made
    rig.sh(f"echo more >> {path}/shared/uploads/1.jpg && touch {path}/shared/uploads/2.jpg", user="www-data")
    assert rig.sh(f"find {path} -user {account} -print").strip() == ""
    assert rig.sh(f"ls {path}/shared").split().count("account-handover.json") == 0
    # The next deploy, whose release: line passes, moves it for good.
    (project / "Procfile").write_text("release: true\n")
    assert_ok(rig.deploy(path, port, project))
    assert release_served(url) == "2" and rig.owner(f"{path}/shared/uploads/2.jpg") == account


def test_an_existing_account_of_that_name_warptasks_did_not_make_is_refused(rig: Rig) -> None:
    path = "/srv/acct-squatted"
    account = app_account(path)
    rig.sh(f"useradd --system --no-create-home --shell /usr/sbin/nologin --comment 'someone else' {account}")
    project = make_django_project(rig.workdir / "squatted", "1", server="gunicorn")
    results = rig.deploy(path, free_port_run(), project)
    assert not results[0].ok, summary(results)
    message = summary(results)
    assert f"the account {account} exists on this host and warptasks did not make it for the deploy path {path}" in message
    assert "'someone else'" in message and "--user" in message, message
    assert rig.host.exec(f"test -e {path}/current")[0] != 0  # nothing went live
    assert "warptasks" not in rig.sh(f"getent passwd {account}")  # and the account is left as it was
