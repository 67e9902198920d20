"""warp deploy as an account that is not root, on a host where systemd runs.

With lingering on, each server and the front (Caddy) are user units of that account
(``systemctl --user``): restarted when they die, started again when the host boots. Without it,
a server runs under warptasks' own supervisor (restarted when it dies, not at boot) and the front is
a plain process, each with a pidfile, and ``warp status`` says how to have the server started at boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.engine import ensure_engine
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.rollback import status
from warptasks.scripts.agent import _unit_name
from warptasks.scripts.front import _unit
from warptasks.settings import DeploySettings

from .deploy_helpers import make_django_project, release_served, set_version
from .test_deploy_systemd import SystemdHost, _until

pytestmark = pytest.mark.remote

LINGERING = "deployer"  # lingering on: its manager runs from boot, without a session
PLAIN = "visitor"  # lingering off
BIN = os.path.dirname(sys.executable)


def _units(account: str) -> tuple[str, str]:
    """The server's units (``{port}`` to fill in) of ``account``'s deploy at ``/home/<account>/app``, and its front's."""
    server = _unit_name(f"/home/{account}/app", "server").replace("@.", "@{port}.")
    return server, _unit(f"/home/{account}/.local/share/warp-front")


class UserHost(SystemdHost):
    """The systemd host, with two accounts the test key logs in as: one lingering, one not."""

    def add_account(self, name: str, linger: bool) -> None:
        self.run(f"useradd --create-home --shell /bin/sh {name}")
        self.run(f"install -d -m 700 -o {name} -g {name} /home/{name}/.ssh")
        self.run(f"echo '{self.keys.public_key}' > /home/{name}/.ssh/authorized_keys")
        self.run(f"chown {name}: /home/{name}/.ssh/authorized_keys && chmod 600 /home/{name}/.ssh/authorized_keys")
        if linger:
            self.run(f"loginctl enable-linger {name}")
            _until(lambda: self.user_ctl(name, "show", "--property=Version"), 30)

    def user_ctl(self, name: str, *args: str) -> str:
        """``systemctl --user ARGS`` as ``name``, through its own manager; the output (it must succeed)."""
        uid = self.run(f"id -u {name}").strip()
        words = " ".join(args)
        return self.run(f"runuser -u {name} -- env XDG_RUNTIME_DIR=/run/user/{uid} systemctl --user {words}")

    def user_state(self, name: str, what: str, unit: str) -> str:
        """``systemctl --user is-enabled/is-active UNIT`` as ``name``: its answer, whatever its exit code."""
        uid = self.run(f"id -u {name}").strip()
        command = ["runuser", "-u", name, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}", "systemctl", "--user", what, unit]
        return str(self.container.exec_run(command).output.decode().strip())

    def owners(self, program: str) -> set[str]:
        rows = [line.split(None, 1) for line in self.run("ps -eo user=,args=").splitlines()]
        return {user for user, args in rows if args.split()[:2][-1].endswith(program)}


@pytest.fixture(scope="module")
def host() -> Iterator[UserHost]:
    workdir = Path(tempfile.mkdtemp(prefix="warp-deploy-user-systemd-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    machine = UserHost(ensure_engine(), workdir)
    try:
        machine.add_account(LINGERING, linger=True)
        machine.add_account(PLAIN, linger=False)
        yield machine
    finally:
        machine.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def _settings(host: UserHost, account: str) -> DeploySettings:
    reach = {"identity": host.keys.key_filename, "known_hosts": host.known_hosts}
    return DeploySettings.resolve(None, path=f"/home/{account}/app", wheels=True, drain=1, **reach)


def test_with_lingering_servers_are_user_units_that_restart_and_come_back_after_a_reboot(host: UserHost) -> None:
    workdir = Path(host.known_hosts).parent
    project = make_django_project(workdir / "site", "1", server="gunicorn")
    opts, target = _settings(host, LINGERING), HostTarget(host.address, LINGERING)
    server, front = _units(LINGERING)
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), summary(results)
    assert release_served(f"http://{host.address}:8080/") == "1"
    first = server.format(port=8081)
    assert host.user_state(LINGERING, "is-active", first) == "active"
    assert host.user_state(LINGERING, "is-enabled", first) == "enabled"
    assert host.user_state(LINGERING, "is-enabled", front) == "enabled"
    assert host.user_state(LINGERING, "is-active", front) == "active"
    wanted = host.run(f"ls /home/{LINGERING}/.config/systemd/user/default.target.wants").split()
    assert sorted(wanted) == sorted([first, front])
    assert "warp-" not in host.run("ls /etc/systemd/system")  # nothing of the system's
    assert host.owners("/bin/gunicorn") == {LINGERING}
    for unit in (first, front):
        assert host.user_ctl(LINGERING, "show", "--property=NoNewPrivileges", "--value", unit).strip() == "yes"
    state = status([target], opts)[target.label]
    assert state["supervised"] is True and state["supervision"] == "systemd --user", state
    assert state["caddy"]["running"] and state["caddy"]["unit"] == front and state["caddy"]["manager"] == "user", state
    assert host.run(f"ps -o user= -p {state['caddy']['pid']}").strip() == LINGERING

    # The server dies: its user manager starts it again.
    pid = host.user_ctl(LINGERING, "show", "--property=MainPID", "--value", first).strip()
    host.run(f"kill -9 {pid}")

    def restarted() -> str:
        now = host.user_ctl(LINGERING, "show", "--property=MainPID", "--value", first).strip()
        assert now not in ("0", pid)
        return now

    _until(restarted)
    assert _until(lambda: release_served(f"http://{host.address}:8080/")) == "1"

    # A second release: its unit runs, the old one is stopped and disabled.
    set_version(project, "2")
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), summary(results)
    assert release_served(f"http://{host.address}:8080/") == "2"
    second = server.format(port=8082)
    assert host.user_state(LINGERING, "is-enabled", second) == "enabled"
    assert host.user_state(LINGERING, "is-active", second) == "active"
    assert host.user_state(LINGERING, "is-enabled", first) == "disabled"
    assert host.user_state(LINGERING, "is-active", first) == "inactive"

    # Reboot: the account's manager starts at boot (lingering), and with it the live release and the front,
    # through which the app answers again.
    host.restart()
    assert _until(lambda: release_served(f"http://{host.address}:8080/")) == "2"
    assert host.user_state(LINGERING, "is-active", front) == "active"
    state = status([HostTarget(host.address, LINGERING)], opts)[target.label]
    live = next(r for r in state["releases"] if r["id"] == state["current"])
    assert live["pid"] and state["caddy"]["running"] and state["supervised"] is True, state
    assert state["caddy"]["unit"] == front and state["caddy"]["pid"], state


def test_without_lingering_servers_run_under_warptasks_supervisor_and_warp_status_says_so(host: UserHost) -> None:
    workdir = Path(host.known_hosts).parent
    project = make_django_project(workdir / "plain-site", "1", server="gunicorn")
    opts, target = _settings(host, PLAIN), HostTarget(host.address, PLAIN, app_port=9080)
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), summary(results)
    assert release_served(f"http://{host.address}:9080/") == "1"
    assert host.run(f"ls -a /home/{PLAIN}").split().count(".config") == 0  # no unit written
    assert host.run(f"cat /home/{PLAIN}/app/releases/*/.warp/server.pid").strip()
    caddy = host.run(f"cat /home/{PLAIN}/.local/share/warp-front/run/caddy.pid").strip()  # the front: a plain process
    assert host.run(f"ps -o user= -p {caddy}").strip() == PLAIN
    reach = ["--host", f"{PLAIN}@{host.address}", "--path", f"/home/{PLAIN}/app"]
    reach += ["--identity", host.keys.key_filename, "--known-hosts", host.known_hosts]
    env = {**os.environ, "HOME": str(workdir)}  # nothing from this machine's ~/.ssh
    shown = subprocess.run(
        [os.path.join(BIN, "warp"), "status", *reach], cwd=project, capture_output=True, text=True, timeout=300, env=env
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    supervised = (
        "  supervised by warptasks' own supervisor: started again when it crashes, but not at boot "
        f"(to have it started at boot: enable lingering: loginctl enable-linger {PLAIN}, then deploy again)"
    )
    assert supervised in shown.stdout.splitlines(), shown.stdout

    # Lingering enabled since: the next deploy makes the server and the front units, the old processes stopped.
    old = host.run(f"cat /home/{PLAIN}/app/releases/*/.warp/server.pid").strip()
    host.run(f"loginctl enable-linger {PLAIN}")
    _until(lambda: host.user_ctl(PLAIN, "show", "--property=Version"), 30)
    set_version(project, "2")
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), summary(results)
    assert release_served(f"http://{host.address}:9080/") == "2"
    server, front = _units(PLAIN)
    wanted = host.run(f"ls /home/{PLAIN}/.config/systemd/user/default.target.wants").split()
    assert sorted(wanted) == sorted([server.format(port=9082), front])
    assert host.container.exec_run(["kill", "-0", old]).exit_code != 0
    assert host.container.exec_run(["kill", "-0", caddy]).exit_code != 0  # the plain Caddy, replaced by the unit
    assert host.user_state(PLAIN, "is-active", front) == "active"
    state = status([target], opts)[target.label]
    assert state["supervised"] is True and state["caddy"]["running"] and state["caddy"]["unit"] == front, state
    assert str(state["caddy"]["pid"]) == host.user_ctl(PLAIN, "show", "--property=MainPID", "--value", front).strip()
