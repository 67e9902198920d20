"""HTTPS over ACME for real: the front's Caddy gets a certificate for ``app.test`` from Pebble through HTTP-01.

Pebble (tests/harness/acme.py) resolves every name to 127.0.0.1 and validates
at the HTTP port of the Caddy under test. The certificate must verify against
Pebble's root, and putting the site again, reloading Caddy for another app's
change, or restarting Caddy must not order another one: it is read back from
the front's storage.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.acme import Pebble, acme_ca
from warptasks.remote import front

from .front_helpers import backend, caddy_venv_once, for_caddy, free_port, get, running_front

pytestmark = pytest.mark.integration
__all__ = ["acme_ca"]  # the fixture, used by name


def https_get(port: int, name: str, root: Path, timeout: float = 60) -> bytes:
    """GET / over HTTPS at 127.0.0.1:``port`` as ``name``, verified against ``root``; retried until Caddy has a certificate."""
    context = ssl.create_default_context(cafile=str(root))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                    return b"".join(iter(lambda: tls.recv(65536), b""))
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_a_certificate_over_http01_verified_against_pebble_and_never_ordered_again(
    acme_ca: Callable[[int, int], Pebble], tmp_path: Path
) -> None:
    http_port, https_port = free_port(), free_port()
    ca = acme_ca(http_port, https_port)
    with running_front(caddy_venv_once(), http_port=http_port, https_port=https_port) as f, backend("A", tmp_path) as a:
        (tls_ca,) = for_caddy(ca.tls_ca)  # Pebble's files are root's alone
        tls = front.Tls("acme", ca=ca.directory, email="ops@example.org", ca_roots=(str(tls_ca),), challenges=("http-01",))
        site = front.Site(front.app_id("/srv/app"), hosts=("app.test",), tls=tls)
        f.site(site, backend=a)

        answer = https_get(https_port, "app.test", ca.root)
        assert answer.startswith(b"HTTP/1.1 200") and b'"name": "A"' in answer
        assert b'"x-forwarded-proto": "https"' in answer
        assert '"challenge_type":"http-01"' in f.log()
        (stored,) = Path(f.host.home, "data", "certificates").glob("*/app.test/app.test.crt")
        issued, orders = stored.read_bytes(), ca.orders()
        assert orders == 1

        status, _ = get(http_port, "/page", host="app.test")
        assert status == 308  # plain HTTP goes to HTTPS

        assert f.site(site)["changed"] is False  # a redeploy: nothing sent to Caddy
        f.site(front.Site(front.app_id("/srv/other"), port=free_port()), backend=a)  # another app: Caddy reloads
        f.stop()
        f.ensure()  # a new Caddy process, as after a reboot
        assert b'"name": "A"' in https_get(https_port, "app.test", ca.root)
        assert ca.orders() == orders and stored.read_bytes() == issued
