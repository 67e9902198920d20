"""Pebble, Let's Encrypt's test ACME CA (Debian package ``pebble``), on 127.0.0.1, offline.

``pebble`` validates challenges at the ports it is given (where the Caddy under
test listens) after resolving names through ``pebble-challtestsrv``, whose
DNS answers 127.0.0.1 for every name (and no IPv6), so ``app.test`` reaches
this machine. Pebble's own HTTPS uses a CA made here for the test; its root
(which signs the certificates it issues) is new on every start and is
fetched from its management interface.

Use the ``acme_ca`` fixture (``from tests.harness.acme import acme_ca``), or
:func:`pebble` directly.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .system import ensure_packages, require_command
from .tls import make_ca

__all__ = ["Pebble", "acme_ca", "pebble"]


@dataclass(frozen=True)
class Pebble:
    """A running Pebble: its ACME directory URL, the root of what it issues, the CA of its own HTTPS, its log."""

    directory: str
    root: Path
    tls_ca: Path
    log: Path

    def orders(self) -> int:
        """How many certificate orders Pebble received so far (a renewal or re-issue would be one more)."""
        return self.log.read_text(errors="replace").count("POST /order-plz")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1 and localhost: Pebble's own HTTPS. (ca, cert, key)."""
    made = make_ca(folder / "https", "Pebble's HTTPS", ["localhost", "127.0.0.1"])
    return made.ca, made.certificate, made.key


def _started(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def _stopped(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _fetch(url: str, context: ssl.SSLContext, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as answer:
                return answer.read()
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer:\n{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.1)


@contextmanager
def pebble(folder: Path, http_port: int, tls_port: int) -> Iterator[Pebble]:
    """Pebble validating HTTP-01 at 127.0.0.1:``http_port`` and TLS-ALPN-01 at ``tls_port``; stopped afterwards."""
    ensure_packages("pebble")
    binary, challenges = require_command("pebble", "pebble"), require_command("pebble-challtestsrv", "pebble")
    folder.mkdir(parents=True, exist_ok=True)
    tls_ca, cert, key = _serving_ca(folder)
    dns, acme, management = _free_port(), _free_port(), _free_port()
    config = folder / "pebble.json"
    settings = {
        "listenAddress": f"127.0.0.1:{acme}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    config.write_text(json.dumps({"pebble": settings}))
    log = folder / "pebble.log"
    with ExitStack() as stack:
        # Only its DNS: every name is 127.0.0.1 (no AAAA answers, so no ::1 is tried).
        dns_argv = [challenges, "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", ""]
        dns_argv += ["-management", f"127.0.0.1:{_free_port()}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
        stack.callback(_stopped, _started(dns_argv, folder / "challtestsrv.log"))
        # No artificial sleeps, no rejected nonces: the test waits for nothing but the work.
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        proc = _started([binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"], log, env)
        stack.callback(_stopped, proc)
        context = ssl.create_default_context(cafile=str(tls_ca))
        directory = f"https://127.0.0.1:{acme}/dir"
        _fetch(directory, context, proc, log)
        root = folder / "pebble-root.pem"
        root.write_bytes(_fetch(f"https://127.0.0.1:{management}/roots/0", context, proc, log))
        yield Pebble(directory, root, tls_ca, log)


@pytest.fixture
def acme_ca(tmp_path: Path) -> Iterator[Callable[[int, int], Pebble]]:
    """Factory: ``acme_ca(http_port, tls_port)`` -> a running :class:`Pebble` validating there; stopped after the test."""
    with ExitStack() as stack:

        def start(http_port: int, tls_port: int) -> Pebble:
            return stack.enter_context(pebble(tmp_path / f"pebble-{http_port}", http_port, tls_port))

        yield start
