"""Run as root without systemd, the front's script runs Caddy as the account ``warp-front``, able to bind ports
below 1024 and nothing more; its admin socket stays out of other accounts' reach; a home of an older version
(root's everywhere, Caddy run as root) is taken over in place, its certificates kept.

Traffic goes to 127.0.0.0/8 only: the port below 1024 is taken on a loopback address where it is free.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warptasks.remote import front

from .front_helpers import ACCOUNT, FRONT, Front, backend, caddy_venv_once, free_port, get, short_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="Caddy gets an account of its own only when the front runs as root"),
]

CAP_NET_BIND_SERVICE = 1 << 10


def low_port() -> tuple[str, int]:
    """A loopback address and a port below 1024 free there: 127.0.0.1:80 if it is, else another of 127.0.0.0/8."""
    for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.10.20.30"):
        for port in (80, 81, 88, 1000):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((address, port))
                except OSError:
                    continue
                return address, port
    pytest.fail("no port below 1024 is free on 127.0.0.0/8")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def connect_as(account: str, path: str) -> subprocess.CompletedProcess[str]:
    """Try to connect to the unix socket ``path`` as ``account`` (setpriv, no capabilities)."""
    probe = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"
    entry = pwd.getpwnam(account)
    argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--inh-caps=-all"]
    return subprocess.run([*argv, "--", "/usr/bin/python3", "-I", "-c", probe, path], capture_output=True, text=True)


@pytest.fixture
def home() -> Iterator[Path]:
    path = short_dir("wfu-")
    try:
        yield path
    finally:
        subprocess.run(
            [sys.executable, "-I", "-c", FRONT],
            input=json.dumps({"action": "stop", "home": str(path), "grace_seconds": 2}) + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        if os.environ.get("WARP_TEST_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)


def test_caddy_runs_as_its_own_account_with_only_the_right_to_bind_low_ports(home: Path, tmp_path: Path) -> None:
    address, port = low_port()
    runner = Front(front.FrontHost(home=str(home), listen=address, http_port=port, https_port=free_port()), caddy_venv_once())
    answer = runner.ensure()
    account = pwd.getpwnam(ACCOUNT)  # made by the first ensure if it was missing
    assert answer["state"] == "started" and answer["user"] == ACCOUNT

    status = proc_status(answer["pid"])
    assert status["Uid"].split() == [str(account.pw_uid)] * 4 and status["Gid"].split() == [str(account.pw_gid)] * 4
    assert int(status["CapEff"], 16) == CAP_NET_BIND_SERVICE and int(status["CapPrm"], 16) == CAP_NET_BIND_SERVICE
    assert int(status["CapBnd"], 16) == CAP_NET_BIND_SERVICE and status["NoNewPrivs"] == "1"
    assert runner.status()["user"] == ACCOUNT

    # It serves a site on the low port of a loopback address.
    with backend("A", tmp_path) as a:
        app = front.app_id("/srv/low")
        runner.site(front.Site(app, port=port), backend=a)
        with socket.create_connection((address, port), timeout=10) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
            reply = b"".join(iter(lambda: s.recv(65536), b""))
        assert reply.startswith(b"HTTP/1.1 200") and b'"name": "A"' in reply

    # What it writes is its own, what it only reads is root's; the admin socket's folder is its own and private.
    owners = {name: (home / name).stat().st_uid for name in ("run", "data", "config", "logs", "upstreams", "base.json")}
    mine = account.pw_uid
    assert owners == {"run": mine, "data": mine, "config": mine, "logs": mine, "upstreams": 0, "base.json": 0}
    assert (home / "upstreams" / app).stat().st_uid == 0 and (home / "upstreams" / app).stat().st_mode & 0o777 == 0o644
    assert (home / "run").stat().st_mode & 0o777 == 0o700 and (home / "data").stat().st_mode & 0o777 == 0o700
    sock = home / "run" / "admin.sock"
    assert sock.is_socket() and sock.stat().st_uid == account.pw_uid
    refused = connect_as("nobody", str(sock))
    assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused
    assert "connected" in connect_as(ACCOUNT, str(sock)).stdout  # the probe works: only the account made the difference

    # A restart as the same account keeps it; nothing reports a change.
    assert runner.ensure()["state"] == "running"


def test_a_home_of_an_older_front_is_taken_over_in_place_keeping_its_certificates(home: Path, tmp_path: Path) -> None:
    """An older front ran Caddy as root in a home that was root's everywhere: ``ensure`` hands Caddy's folders to its
    account and restarts it once as that account; the certificates Caddy obtained (data/) stay."""
    venv = caddy_venv_once()
    host = front.FrontHost(home=str(home), listen="127.0.0.1", http_port=free_port(), https_port=free_port())
    runner = Front(host, venv)
    with backend("A", tmp_path) as a:
        runner.ensure()
        app, port = front.app_id("/srv/old"), free_port()
        runner.site(front.Site(app, port=port), backend=a)
        runner.stop()
        # As the older front left it: everything root's, and a Caddy running as root with its root-owned pidfile.
        certificate = home / "data" / "certificates" / "acme-v02.api.letsencrypt.org-directory" / "old.test" / "old.test.crt"
        certificate.parent.mkdir(parents=True)
        certificate.write_text("-----BEGIN CERTIFICATE-----\nkept\n-----END CERTIFICATE-----\n")
        certificate.chmod(0o600)
        for root, dirs, files in os.walk(home):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), 0, 0)
        for name in ("run", "data", "config", "logs"):
            os.lchown(home / name, 0, 0)
        caddy = Path(venv, "bin", "caddy")
        argv = [str(caddy), "run", "--config", str(home / "live.json"), "--pidfile", str(home / "run" / "caddy.pid")]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}
        env["XDG_DATA_HOME"] = str(home / "data")
        with open(home / "logs" / "caddy.out", "ab") as out:
            old = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=home)
        try:
            _until_answers(port)
            assert proc_status(old.pid)["Uid"].split()[0] == "0"
            assert runner.status()["user"] == "root"

            answer = runner.ensure()
            assert answer["state"] == "restarted" and answer["user"] == ACCOUNT and answer["pid"] != old.pid
            assert old.wait(30) is not None  # the root Caddy was stopped
        finally:
            if old.poll() is None:
                old.kill()
                old.wait()
        account = pwd.getpwnam(ACCOUNT)
        assert proc_status(answer["pid"])["Uid"].split()[0] == str(account.pw_uid)
        assert get(port)[1]["name"] == "A"  # root's copy of the config came back, as the new account
        assert certificate.read_text().endswith("kept\n-----END CERTIFICATE-----\n")
        for root, dirs, files in os.walk(home / "data"):
            for name in [*dirs, *files, "."]:
                assert os.lstat(os.path.join(root, name)).st_uid == account.pw_uid, os.path.join(root, name)
        assert (home / "logs" / "caddy.log").stat().st_uid == account.pw_uid
        assert (home / "upstreams" / app).stat().st_uid == 0
        assert runner.ensure()["state"] == "running"  # once: the next ensure finds it as it should be


def _until_answers(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if get(port)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the root Caddy did not serve on port {port}")
        time.sleep(0.2)


# Caddy's account, taken over, changes the running config through the admin socket it owns.
INJECT = """
import http.client, json, socket, sys

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])

c = Conn("localhost")
evil = {"listen": ["127.0.0.1:" + sys.argv[2]], "routes": [{"handle": [{"handler": "file_server", "root": "/"}]}]}
c.request("PUT", "/config/apps/http/servers/evil", json.dumps(evil), {"Content-Type": "application/json"})
print(c.getresponse().status)
"""


def test_what_caddys_account_adds_does_not_outlive_a_restart(home: Path, tmp_path: Path) -> None:
    """A compromised Caddy can change its running config (it owns the admin socket), never root's copy it starts
    from: after a restart by ``ensure``, only the apps' own sites are served."""
    venv = caddy_venv_once()
    host = front.FrontHost(home=str(home), listen="127.0.0.1", http_port=free_port(), https_port=free_port())
    runner = Front(host, venv)
    with backend("A", tmp_path) as a:
        runner.ensure()
        app, port = front.app_id("/srv/app"), free_port()
        runner.site(front.Site(app, port=port), backend=a)
        evil = free_port()
        entry = pwd.getpwnam(ACCOUNT)
        argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--inh-caps=-all"]
        sock = str(home / "run" / "admin.sock")
        put = subprocess.run(
            [*argv, "--", "/usr/bin/python3", "-I", "-c", INJECT, sock, str(evil)], capture_output=True, text=True
        )
        assert put.stdout.strip() == "200", put
        assert get(evil)[0] in (200, 404)  # the injected server runs
        live = home / "live.json"
        assert live.stat().st_uid == 0 and "evil" not in live.read_text()
        os.kill(runner.status()["pid"], signal.SIGKILL)
        time.sleep(0.5)
        assert runner.ensure()["state"] == "started"
        assert get(port)[1]["name"] == "A"
        with pytest.raises(OSError):
            get(evil)
        assert "evil" not in json.dumps(runner.config())
