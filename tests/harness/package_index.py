"""A tiny HTTPS package index ("simple" API) served from this process, with a certificate of a test CA.

It holds one pure-Python wheel made here, so a build that installs from it needs nothing else from it;
only clients that trust the test CA (an image whose system store has it) can use it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import ssl
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .tls import TestCA, make_ca


@dataclass(frozen=True)
class PackageIndex:
    url: str  # the simple index, ending in /simple/
    ca: TestCA
    package: str
    version: str


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, value: str) -> Path:
    """A pure wheel of package ``name`` whose module holds ``VALUE = value``; built by hand, no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: warptasks-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items()) + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist}/RECORD", record)
    return wheel


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def https_index(
    folder: Path, name: str = "warptestpkg", version: str = "1.0", value: str = "from the test index"
) -> Iterator[PackageIndex]:
    """Serve a simple index with one wheel over HTTPS on 127.0.0.1:<free port>; stopped after."""
    root = folder / "index"
    (root / "simple" / name).mkdir(parents=True)
    (root / "files").mkdir()
    wheel = make_wheel(root / "files", name, version, value)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "simple" / "index.html").write_text(f'<html><body><a href="{name}/">{name}</a></body></html>\n')
    (root / "simple" / name / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>\n'
    )
    ca = make_ca(folder / "tls", "package index", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.certificate, ca.key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield PackageIndex(f"https://127.0.0.1:{server.server_address[1]}/simple/", ca, name, version)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
