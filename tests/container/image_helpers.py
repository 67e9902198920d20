"""Helpers for the image tests: the base image with what servers need, build options, running containers."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import docker
import docker.errors

from tests.harness import engine
from tests.harness.images import IndexAccess, base_image
from warptasks.image.engine import ImageOptions

# Image tags of this test run, so two runs at once (two people, or CI and a person) never share an image.
TAG = f"run{os.getpid()}"

# What mod_wsgi needs on a Debian image; most tests build on a base that has it, to keep the tier fast.
SERVER_BUILD_PACKAGES = ("apache2", "apache2-dev", "gcc", "libc6-dev", "python3-dev")

WSGI = (
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'VERSION-1']\n"
)

APP_PY = (
    "import os\n"
    "from http.server import BaseHTTPRequestHandler, HTTPServer\n\n"
    "class Hello(BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = ('app.py as uid %d' % os.getuid()).encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n\n"
    "HTTPServer((os.environ['HOST'], int(os.environ['PORT'])), Hello).serve_forever()\n"
)


def engine_url() -> str:
    """The DOCKER_HOST of the engine the harness uses, for the warp command run as a subprocess."""
    for url in engine._candidates():
        if engine._quick_ping(url):
            return url
    raise AssertionError("no engine answers; the docker_client fixture starts one")


def server_base(client: docker.DockerClient) -> str:
    return base_image(client, SERVER_BUILD_PACKAGES)


def build_options(index: IndexAccess, tag: str, base: str, **kw: Any) -> ImageOptions:
    """Options for a build that reaches the package index as this machine does (host network, its CA bundle)."""
    return ImageOptions(
        tag=tag,
        base_image=base,
        network="host",
        build_env=dict(index.environment),
        extra_files=dict(index.files),
        pull=False,
        quiet=True,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Running:
    container: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exec(self, *argv: str) -> str:
        code, output = self.container.exec_run(list(argv))
        assert code == 0, output
        return output.decode().strip()

    def stop_seconds(self) -> float:
        started = time.monotonic()
        self.container.stop(timeout=10)
        return time.monotonic() - started


@contextmanager
def serving(
    client: docker.DockerClient,
    image: str,
    *,
    user: str | None = None,
    wait: float = 60,
    port: int | None = None,
    environment: dict[str, str] | None = None,
    **run: Any,
) -> Iterator[Running]:
    """Run ``image`` on the host network and wait (bounded) until it answers HTTP on ``port``; ``run``: more options.

    ``port``: where it is expected to answer (default: a free one); ``environment``: the container's (default: PORT
    set to that port; give another to test the image's own choice of port).
    """
    port = port or free_port()
    container = client.containers.run(
        image,
        detach=True,
        network_mode="host",
        environment={"PORT": str(port)} if environment is None else environment,
        user=user,
        labels={"warptasks-test": "image"},
        **run,
    )
    running = Running(container, port)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                get(running.url + "/", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                container.reload()
                if container.status == "exited" or time.monotonic() > deadline:
                    raise AssertionError(
                        f"the container did not answer on port {port}:\n" + container.logs().decode(errors="replace")[-3000:]
                    ) from None
                time.sleep(0.3)
        yield running
    finally:
        container.remove(force=True)


def startproject(root: Path, name: str = "mysite") -> None:
    """A real ``django-admin startproject``, with requirements.txt pinning the Django that made it."""
    subprocess.run([sys.executable, "-m", "django", "startproject", name, str(root)], check=True)
    (root / "requirements.txt").write_text(f"Django=={django.get_version()}\n")


def files_in_image(client: docker.DockerClient, image: str, path: str) -> dict[str, bytes]:
    """The files at ``path`` in ``image`` (name relative to its parent -> content), read without running anything."""
    container = client.containers.create(image, network_mode="none")
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    finally:
        container.remove(force=True)


def layers(client: docker.DockerClient, image: str) -> list[str]:
    return client.images.get(image).attrs["RootFS"]["Layers"]


def remove_image(client: docker.DockerClient, name: str) -> None:
    try:
        client.images.remove(name, force=True)
    except docker.errors.ImageNotFound:
        pass
