"""warp deploy on a host where systemd runs: servers and the front become enabled
units, restarted when they die and started again when the host boots."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import LABEL, SESSION_LABEL, session_keys
from tests.harness.images import SSH_PACKAGES, base_image
from warptasks.remote.account import app_account
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.rollback import status
from warptasks.settings import DeploySettings

from .deploy_helpers import get, make_django_project, release_served, set_version
from .test_deploy import deploy_image

pytestmark = pytest.mark.remote

PATH = "/srv/sys-site"
SERVER_UNIT = "warp-srv-sys-site-2216ea5f-server@{port}.service"
FRONT_UNIT = "warp-front.service"


def systemd_image(client: Any) -> str:
    deploy_image(client)  # the same packages, so the cached tree is shared
    # libpam-systemd: a login's session and runtime folder, which a user's own manager needs (see test_deploy_user_systemd).
    return base_image(client, (*SSH_PACKAGES, "apache2", "systemd", "systemd-sysv", "dbus", "libpam-systemd"))


class SystemdHost:
    """A bridge-network container booted by systemd (no outbound network), reachable over SSH on port 22."""

    def __init__(self, client: Any, workdir: Path) -> None:
        self.keys = session_keys()
        self.known_hosts = str(workdir / "known_hosts")
        self.container = client.containers.run(
            systemd_image(client),
            ["/lib/systemd/systemd"],
            detach=True,
            network_mode="bridge",
            dns=["127.0.0.1"],
            tmpfs={"/run": "", "/run/lock": ""},
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
            environment={"container": "docker"},
            stop_signal="SIGRTMIN+3",
            labels={LABEL: "ssh-host", SESSION_LABEL: str(os.getpid())},
        )
        self.boot()
        self.run("ssh-keygen -A && mkdir -p /root/.ssh && chmod 700 /root/.ssh")
        self.run(f"echo '{self.keys.public_key}' > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys")
        # ssh.service failed at boot (no host keys yet) and hit its start limit.
        self.run("systemctl reset-failed ssh && systemctl restart ssh")
        self.wait_for_ssh()

    def run(self, command: str) -> str:
        code, output = self.container.exec_run(["sh", "-c", command])
        text = output.decode(errors="replace")
        assert code == 0, f"{command}: {text}"
        return text

    def boot(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, output = self.container.exec_run(["systemctl", "is-system-running"])
            if output.decode().strip() in ("running", "degraded"):
                break
            time.sleep(0.3)
        self.container.reload()
        self.address = self.container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]

    def wait_for_ssh(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            scan = subprocess.run(["ssh-keyscan", "-T", "2", "-t", "ed25519", self.address], capture_output=True, text=True)
            lines = [line for line in scan.stdout.splitlines() if line and not line.startswith("#")]
            if lines:
                Path(self.known_hosts).write_text("\n".join(lines) + "\n")
                return
            time.sleep(0.3)
        raise RuntimeError(f"sshd of the systemd host did not answer at {self.address}")

    def restart(self) -> None:
        """Reboot: every process ends, systemd boots again and starts what is enabled."""
        self.container.restart(timeout=10)
        self.boot()
        self.wait_for_ssh()

    def remove(self) -> None:
        self.container.remove(force=True)


@pytest.fixture(scope="module")
def host() -> Iterator[SystemdHost]:
    workdir = Path(tempfile.mkdtemp(prefix="warp-deploy-systemd-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    machine = SystemdHost(ensure_engine(), workdir)
    try:
        yield machine
    finally:
        machine.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def _until(check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_servers_are_units_that_restart_and_come_back_after_a_reboot(host: SystemdHost) -> None:
    workdir = Path(host.known_hosts).parent
    project = make_django_project(workdir / "site", "1", server="gunicorn")
    opts = DeploySettings.resolve(
        None, path=PATH, identity=host.keys.key_filename, known_hosts=host.known_hosts, wheels=True, drain=1
    )
    target = HostTarget(host.address, "root")
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), summary(results)
    assert release_served(f"http://{host.address}:8080/") == "1"
    first = SERVER_UNIT.format(port=8081)
    assert host.run(f"systemctl is-active {first}").strip() == "active"
    assert host.run(f"systemctl is-enabled {first}").strip() == "enabled"
    assert host.run(f"systemctl is-enabled {FRONT_UNIT}").strip() == "enabled"
    front = host.run(f"systemctl show --property=MainPID --value {FRONT_UNIT}").strip()
    assert host.run(f"ps -o user= -p {front}").strip() == "warp-front"
    # Confined: a /tmp of its own, no privileges to gain, and the app itself not root (the deploy logs in as root).
    assert host.run(f"systemctl show --property=PrivateTmp,NoNewPrivileges --value {first}").split() == ["yes", "yes"]
    rows = [line.split(None, 1) for line in host.run("ps -eo user:32=,args=").splitlines()]
    owners = [user for user, args in rows if args.split()[:2][-1].endswith("/bin/gunicorn")]
    assert len(owners) >= 2 and set(owners) == {app_account(PATH)}, rows

    # The server dies: systemd starts it again.
    pid = host.run(f"systemctl show --property=MainPID --value {first}").strip()
    host.run(f"kill -9 {pid}")
    assert _until(lambda: release_served(f"http://{host.address}:8080/")) == "1"
    assert host.run(f"systemctl show --property=MainPID --value {first}").strip() != pid

    # A second release: its unit is enabled, the old one stopped and disabled.
    set_version(project, "2")
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), summary(results)
    assert release_served(f"http://{host.address}:8080/") == "2"
    second = SERVER_UNIT.format(port=8082)
    assert host.run(f"systemctl is-enabled {second}").strip() == "enabled"
    assert host.container.exec_run(["systemctl", "is-enabled", first]).output.decode().strip() == "disabled"

    # Reboot: the live release and the front are back, with no deploy.
    host.restart()
    target = HostTarget(host.address, "root")
    assert _until(lambda: release_served(f"http://{host.address}:8080/")) == "2"
    code, _ = get(f"http://{host.address}:8080/static/site.css")
    assert code == 200
    state = status([target], opts)[target.label]
    live = next(r for r in state["releases"] if r["id"] == state["current"])
    assert live["pid"] and state["caddy"]["running"] and state["front"]["backend"] == f"127.0.0.1:{live['port']}"
    assert state["health"] == 200, state
