"""The front's sites through real deploys over SSH: ACME from Pebble, two apps by host name, forwarded
headers, certificate files, and ``--proxy none``.

The hosts use the machine's network (``network="host"``) without the package index (``index=False``, the
deploys ship wheels): Pebble (tests/harness/acme.py) listens on 127.0.0.1, its own HTTPS certificate names
127.0.0.1, and its DNS answers 127.0.0.1 for every name, so a host Caddy on 127.0.0.1 is where it validates
HTTP-01 and TLS-ALPN-01, on ports of their own. Without the index's CA bundle mounted, the host's trust store
is its own: Pebble's HTTPS CA is added to it as a user with a private CA would (update-ca-certificates), and
Caddy reads it from there. Clients connect from 127.0.0.5 so that the address an app sees is provably the
client's and not the front's (127.0.0.1).

The tests run in order on the same hosts, as a project's deploys would.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.harness.acme import Pebble, pebble
from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from tests.harness.tls import self_signed
from warptasks.remote import front
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.remote.rollback import remove, rollback
from warptasks.settings import DeploySettings

from .deploy_helpers import assert_ok, drop_workdir, make_workdir
from .test_deploy import deploy_image, free_port_run

pytestmark = pytest.mark.remote

CLIENT = "127.0.0.5"  # the tests' source address: not the front's 127.0.0.1
ADMIN = f"{front.ROOT_HOME}/run/admin.sock"

WSGI = """import json

NAME, VERSION = "{name}", "{version}"


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/env":
        keys = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTPS", "HTTP_HOST", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO")
        body = json.dumps({{key: environ.get(key) for key in keys}}).encode()
        kind = "application/json"
    else:
        body, kind = ("release " + NAME + "-" + VERSION + "\\n").encode(), "text/plain"
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]
"""


def make_app(root: Path, name: str, version: str) -> Path:
    """A WSGI app in ``wsgi.py`` (served by mod_wsgi): ``/`` names it and its version, ``/env`` what the server told it.

    ``wsgi.url_scheme`` is what Django's ``request.is_secure()`` reads (no ``SECURE_PROXY_SSL_HEADER`` needed).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "wsgi.py").write_text(WSGI.format(name=name, version=version))
    for path in (root, root / "wsgi.py"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return root


def request(
    port: int, host: str, path: str = "/", headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes, bytes | None]:
    """One request to 127.0.0.1:``port`` from 127.0.0.5 with ``Host: host`` (and SNI ``host`` over TLS).

    (status, headers, body, the server's certificate in DER or None)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT, 0))
    with raw:
        sock: socket.socket = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        with sock:
            lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            der = sock.getpeercert(binary_form=True) if tls else None
            response = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
            response.begin()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body, der


def verified(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


def unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def until(what: Any, timeout: float = 60) -> Any:
    """``what()`` retried until it returns without raising (certificates take a moment to be issued)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return what()
        except (OSError, ssl.SSLError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@dataclass
class Ports:
    base: int

    http: int = field(init=False)  # host A's front: HTTP (redirects, HTTP-01)
    https: int = field(init=False)  # host A's front: HTTPS (app.test, files.test)
    plain: int = field(init=False)  # host A: the public port of shop.test, blog.test (plain HTTP, by host name)
    app: int = field(init=False)  # backend pairs
    files: int = field(init=False)
    blog: int = field(init=False)
    none: int = field(init=False)  # host B: public port of the --proxy none app (backends none+1, none+2)

    def __post_init__(self) -> None:
        b = self.base
        # shop has no backend_port: plain+1 and plain+2
        self.http, self.https, self.plain = b, b + 1, b + 2
        self.app, self.files, self.blog, self.none = b + 5, b + 7, b + 9, b + 11


@dataclass
class Rig:
    hosts: list[Any]
    ports: Ports
    pebble: Pebble
    workdir: Path
    base: DeploySettings
    lines: list[str] = field(default_factory=list)

    @property
    def a(self) -> Any:
        return self.hosts[0]

    @property
    def b(self) -> Any:
        return self.hosts[1]

    def target(self, host: Any, **extra: Any) -> HostTarget:
        return HostTarget(host.address, host.user, host.port, listen="127.0.0.1", **extra)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text)

    def deploy(self, host: Any, project: Path, **settings: Any) -> list[Any]:
        self.lines.clear()
        results = deploy([self.target(host)], str(project), replace(self.base, **settings), say=self.say)
        print(summary(results))
        return results

    def sh(self, host: Any, command: str) -> str:
        code, output = host.exec(command)
        assert code == 0, f"{command}: {output}"
        return output


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    client = ensure_engine()
    image = deploy_image(client)
    workdir = make_workdir("warp-front-sites-")
    hosts = ssh_hosts(client, 2, network="host", image=image, index=False)
    try:
        with ExitStack() as stack:
            ports = Ports(free_port_run(14))
            ca = stack.enter_context(pebble(workdir / "pebble", ports.http, ports.https))
            a = hosts[0]
            # What a user with a private CA does: its root in the system store, which Caddy reads.
            a.put_file("/usr/local/share/ca-certificates/pebble-https.crt", ca.tls_ca.read_bytes())
            code, output = a.exec("update-ca-certificates")
            assert code == 0, output
            opts = DeploySettings.resolve(
                None,
                identity=a.key_filename,
                known_hosts=a.known_hosts,
                wheels=True,
                keep=3,
                drain=1,
                http_port=ports.http,
                https_port=ports.https,
            )
            yield Rig(hosts, ports, ca, workdir, opts)
    finally:
        remove_hosts(hosts)
        drop_workdir(workdir)


def _body(answer: tuple[int, dict[str, str], bytes, bytes | None]) -> str:
    status, _, body, _ = answer
    assert status == 200, answer
    return body.decode()


# -- 1. ACME --------------------------------------------------------------------------------------------------------


def acme(rig: Rig, version: str) -> list[Any]:
    project = make_app(rig.workdir / "app", "app", version)
    return rig.deploy(
        rig.a,
        project,
        path="/srv/app",
        domains=("app.test",),
        acme_ca=rig.pebble.directory,
        acme_email="ops@example.org",
        backend_port=rig.ports.app,
    )


def test_acme_certificate_from_pebble_served_redirected_and_never_ordered_again(rig: Rig) -> None:
    started = time.monotonic()
    assert_ok(acme(rig, "1"))
    p, root = rig.ports, rig.pebble.root
    answer = until(lambda: request(p.https, "app.test", tls=verified(root)))
    assert _body(answer) == "release app-1\n"
    print(f"ACME: first deploy and certificate in {time.monotonic() - started:.1f}s")
    orders = rig.pebble.orders()
    assert orders == 1

    status, headers, _, _ = request(p.http, "app.test", "/page?x=1")
    assert status == 308 and headers["location"].startswith("https://app.test"), (status, headers)
    assert headers["location"].endswith("/page?x=1")

    env = json.loads(_body(request(p.https, "app.test", "/env", tls=verified(root))))
    assert env["wsgi.url_scheme"] == "https" and env["HTTP_X_FORWARDED_PROTO"] == "https", env
    assert env["HTTP_HOST"] == "app.test", env

    assert_ok(acme(rig, "2"))
    assert _body(request(p.https, "app.test", tls=verified(root))) == "release app-2\n"
    assert rig.pebble.orders() == orders
    assert not any("front: site" in line for line in rig.lines), rig.lines  # an unchanged site: nothing sent to Caddy
    log = rig.sh(rig.a, f"cat {front.ROOT_HOME}/logs/caddy.log")
    print(
        "ACME: orders",
        rig.pebble.orders(),
        "; 'certificate obtained successfully' in caddy.log:",
        log.count("certificate obtained successfully"),
    )


# -- 3. Forwarded headers ----------------------------------------------------------------------------------------


def test_a_spoofed_x_forwarded_for_never_reaches_remote_addr(rig: Rig) -> None:
    p = rig.ports
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Real-IP": "6.6.6.6"}
    env = json.loads(_body(request(p.https, "app.test", "/env", spoof, tls=verified(rig.pebble.root))))
    print("over HTTPS with a spoofed X-Forwarded-For, the app saw:", env)
    assert env["REMOTE_ADDR"] == CLIENT, env
    assert "6.6.6.6" not in (env["HTTP_X_FORWARDED_FOR"] or ""), env
    assert env["wsgi.url_scheme"] == "https"


# -- 2. Two apps by host name ------------------------------------------------------------------------------------


def site_config(rig: Rig, path: str) -> str:
    app = front.app_id(path)
    return rig.sh(rig.a, f"curl -sS --fail --unix-socket {ADMIN} http://localhost/id/{app}")


def shop(rig: Rig, version: str) -> list[Any]:
    project = make_app(rig.workdir / "shop", "shop", version)
    return rig.deploy(rig.a, project, path="/srv/shop", domains=("shop.test",), tls=False, port=rig.ports.plain)


def blog(rig: Rig, version: str) -> list[Any]:
    project = make_app(rig.workdir / "blog", "blog", version)
    return rig.deploy(
        rig.a, project, path="/srv/blog", domains=("blog.test",), tls=False, port=rig.ports.plain, backend_port=rig.ports.blog
    )


@dataclass
class HostLoad:
    """Requests one after another to a host name on a port, from 127.0.0.5, until stopped."""

    port: int
    host: str
    ok: int = 0
    bodies: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, _, body, _ = request(self.port, self.host)
                if status == 200:
                    self.ok += 1
                    self.bodies.add(body.decode())
                else:
                    self.failures.append(f"HTTP {status}: {body[:100]!r}")
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(repr(error))

    def __enter__(self) -> HostLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)


def test_two_apps_by_host_name_on_one_port(rig: Rig) -> None:
    p = rig.ports
    assert_ok(shop(rig, "1"))
    assert_ok(blog(rig, "1"))
    assert _body(request(p.plain, "shop.test")) == "release shop-1\n"
    assert _body(request(p.plain, "blog.test")) == "release blog-1\n"
    live = rig.sh(rig.a, "cat /srv/shop/current/.warp/deploy.json")
    assert json.loads(live)["port"] == p.plain + 1, live  # shop took the default pair


def test_a_second_app_without_backend_port_is_refused_and_the_first_keeps_serving(rig: Rig) -> None:
    p = rig.ports
    project = make_app(rig.workdir / "clash", "clash", "1")
    results = rig.deploy(rig.a, project, path="/srv/clash", domains=("clash.test",), tls=False, port=p.plain)
    print("COLLISION:", summary(results))
    assert not any(r.ok for r in results)
    message = summary(results) + "\n" + "\n".join(rig.lines)
    # The agent names the port, the process holding it and whose release it is.
    assert f"port {p.plain + 1} is held by" in message and "/srv/shop/releases/" in message, message
    assert _body(request(p.plain, "shop.test")) == "release shop-1\n"
    assert _body(request(p.plain, "blog.test")) == "release blog-1\n"
    status, _, body, _ = request(p.plain, "clash.test")
    print(f"clash.test after the failed deploy answers {status} {body[:80]!r}")
    assert b"clash" not in body  # no site was put (Caddy answers an unknown name with its empty default)
    assert front.app_id("/srv/clash") not in rig.sh(rig.a, f"curl -sS --unix-socket {ADMIN} http://localhost/config/")


def test_a_new_version_and_a_rollback_of_one_app_leave_the_other_alone(rig: Rig) -> None:
    p = rig.ports
    before = site_config(rig, "/srv/blog")
    with HostLoad(p.plain, "blog.test") as load:
        time.sleep(0.5)
        assert_ok(shop(rig, "2"))
        assert _body(request(p.plain, "shop.test")) == "release shop-2\n"
        opts = replace(rig.base, path="/srv/shop", domains=("shop.test",), tls=False, port=p.plain)
        results = rollback([rig.target(rig.a)], opts, say=print)
        assert_ok(results)
        assert _body(request(p.plain, "shop.test")) == "release shop-1\n"
        time.sleep(0.5)
    print(f"blog.test under load: {load.ok} ok, {len(load.failures)} failed, bodies {load.bodies}")
    assert load.failures == [] and load.ok > 20
    assert load.bodies == {"release blog-1\n"}
    assert site_config(rig, "/srv/blog") == before


def test_removing_one_app_takes_its_routes_and_servers_and_leaves_the_other_serving(rig: Rig) -> None:
    p = rig.ports
    before = site_config(rig, "/srv/blog")
    opts = replace(rig.base, path="/srv/shop", domains=("shop.test",), tls=False, port=p.plain)
    with HostLoad(p.plain, "blog.test") as load:
        time.sleep(0.3)
        results = remove([rig.target(rig.a)], opts, say=print)
        time.sleep(0.3)
    assert_ok(results)
    # Removing a site reloads Caddy's config, which binds a new listening socket (SO_REUSEPORT) and closes the
    # old one: a connection the kernel had queued on the old socket in that instant is closed unanswered (Linux's
    # limit, documented in the README). At most one such connection; any answer other than blog's is a failure.
    unanswered = [f for f in load.failures if "RemoteDisconnected" in f or "ConnectionReset" in f]
    print(f"blog.test under load: {load.ok} ok, failures {load.failures}")
    assert len(unanswered) <= 1 and len(load.failures) == len(unanswered), load.failures
    assert load.ok > 5 and load.bodies == {"release blog-1\n"}
    assert site_config(rig, "/srv/blog") == before
    config = rig.sh(rig.a, f"curl -sS --unix-socket {ADMIN} http://localhost/config/")
    assert front.app_id("/srv/shop") not in config
    status, _, body, _ = request(p.plain, "shop.test")
    assert b"shop" not in body, (status, body)
    # Its servers are gone, its ports free; its releases and secrets stay (no --purge).
    assert "/srv/shop/" not in rig.sh(rig.a, "ps -eo args= | grep httpd.conf || true")
    assert rig.sh(rig.a, "ls /srv/shop/releases | wc -l").strip() != "0"
    assert rig.sh(rig.a, "test -e /srv/shop/current && echo yes || echo no").strip() == "no"
    # Purged: nothing of it is left in the deploy path but its (released) lock's guard file.
    assert_ok(remove([rig.target(rig.a)], opts, say=print, purge=True))
    assert rig.sh(rig.a, "ls -A /srv/shop").split() == [".warp-deploy.guard"]


# -- 4. Certificate files ----------------------------------------------------------------------------------------


def files(rig: Rig, version: str, cert: Path, key: Path) -> list[Any]:
    project = make_app(rig.workdir / "files", "files", version)
    return rig.deploy(
        rig.a,
        project,
        path="/srv/files",
        domains=("files.test",),
        tls_cert=str(cert),
        tls_key=str(key),
        backend_port=rig.ports.files,
    )


def test_certificate_files_served_kept_private_and_replaced(rig: Rig) -> None:
    p = rig.ports
    folder = f"{front.ROOT_HOME}/certs/{front.app_id('/srv/files')}"
    cert, key, der = self_signed(rig.workdir, "files.test", "one")
    assert_ok(files(rig, "1", cert, key))
    answer = until(lambda: request(p.https, "files.test", tls=unverified()))
    assert _body(answer) == "release files-1\n" and answer[3] == der
    listing = rig.sh(rig.a, f"stat -c '%n %U %G %a' {folder} {folder}/*")
    print("certificate files on the host:\n" + listing)
    keys = [line.split() for line in listing.splitlines() if line.split()[0].endswith(".key")]
    assert len(keys) == 1
    (old_key, owner, group, mode) = keys[0]
    assert owner == "root" and group == "warp-front" and int(mode, 8) & 0o007 == 0, listing
    assert int(rig.sh(rig.a, f"stat -c %a {folder}"), 8) & 0o007 == 0

    cert2, key2, der2 = self_signed(rig.workdir, "files.test", "two")
    assert_ok(files(rig, "2", cert2, key2))
    answer = until(lambda: request(p.https, "files.test", tls=unverified()))
    assert _body(answer) == "release files-2\n" and answer[3] == der2
    listing2 = rig.sh(rig.a, f"stat -c '%n %U %G %a' {folder}/*")
    print("after a new pair:\n" + listing2)
    assert old_key not in listing2 and len(listing2.splitlines()) == 2
    # app.test's ACME certificate is untouched by files.test's
    assert _body(request(p.https, "app.test", tls=verified(rig.pebble.root))) == "release app-2\n"


# -- 5. --proxy none ---------------------------------------------------------------------------------------------


def test_proxy_none_runs_no_caddy_and_publishes_the_backend(rig: Rig) -> None:
    p, b = rig.ports, rig.b
    first = None
    for version in ("1", "2"):
        project = make_app(rig.workdir / "none", "none", version)
        assert_ok(rig.deploy(b, project, path="/srv/none", proxy="none", port=p.none))
        upstream = rig.sh(b, "cat /srv/none/shared/upstream").strip()
        said = [line for line in rig.lines if "your front must send to" in line]
        print("proxy none:", upstream, said)
        assert said and said[-1].endswith(f"your front must send to {upstream}"), rig.lines
        host, port = upstream.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) in (p.none + 1, p.none + 2)
        assert first is None or int(port) != first
        first = int(port)
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read().decode() == f"release none-{version}\n"
        conn.close()
    code, out = b.exec("pgrep -a caddy")
    assert code == 1, out
    assert b.exec(f"test -e {front.ROOT_HOME}")[0] != 0
