"""A real image registry for the tests: Debian's ``docker-registry`` (distribution 2.8) as a plain process.

It listens on 127.0.0.1 on a free port with its own config file and storage in a temporary folder, and
is stopped after. The engine allows plain HTTP to 127.0.0.0/8 without configuration (dockerd's default
insecure registries), so no daemon.json is needed. With ``users`` it asks for htpasswd (bcrypt) logins.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from .system import require_command
from .tls import TestCA, make_ca


@dataclass(frozen=True)
class Registry:
    address: str  # host:port, as image names spell it
    folder: Path
    users: dict[str, str]
    tls: TestCA | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` in the registry, read over its HTTP API."""
        request = urllib.request.Request(f"{self.url}/v2/{repository}/tags/list")
        if self.users:
            user, password = next(iter(self.users.items()))
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        context = ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else None
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return sorted(json.load(response).get("tags") or [])
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise

    def docker_config(self, folder: Path, user: str, password: str) -> Path:
        """A DOCKER_CONFIG folder holding a login for this registry, as ``docker login`` writes it (0600)."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        config = folder / "config.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"auths": {self.address: {"auth": auth}}}))
        return folder

    def credential_helper(self, folder: Path, user: str, password: str) -> tuple[Path, Path]:
        """A DOCKER_CONFIG folder naming a credential helper for this registry (``credHelpers``), and the folder
        holding that helper, ``docker-credential-warptest`` (to put on PATH): it answers ``get`` as helpers do."""
        bin_dir = folder / "bin"
        bin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        answer = json.dumps({"ServerURL": self.address, "Username": user, "Secret": password})
        helper = bin_dir / "docker-credential-warptest"
        helper.touch(mode=0o700)
        helper.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >/dev/null\nprintf '%s\\n' '{answer}'\n")
        config_dir = folder / "config"
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (config_dir / "config.json").write_text(json.dumps({"credHelpers": {self.address: "warptest"}}))
        return config_dir, bin_dir


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _htpasswd(users: dict[str, str], path: Path) -> None:
    htpasswd = require_command("htpasswd", "apache2-utils")
    lines = []
    for user, password in users.items():
        # -i: the password on stdin, never in argv. The registry reads bcrypt only (-B).
        done = subprocess.run([htpasswd, "-niB", user], input=password, capture_output=True, text=True, check=True)
        lines.append(done.stdout.strip())
    path.write_text("\n".join(lines) + "\n")


def registry_config(folder: Path, listen: str, users: dict[str, str], tls: TestCA | None) -> Path:
    """The registry's config file (JSON is YAML): storage in ``folder``, listening on ``listen``."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(folder / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": listen, "secret": base64.b64encode(time.time_ns().to_bytes(16, "big")).decode()},
    }
    if tls:
        config["http"] = {**config["http"], "tls": {"certificate": str(tls.certificate), "key": str(tls.key)}}  # type: ignore[dict-item]
    if users:
        _htpasswd(users, folder / "htpasswd")
        config["auth"] = {"htpasswd": {"realm": "warptasks-test", "path": str(folder / "htpasswd")}}
    path = folder / "config.yml"
    path.write_text(json.dumps(config, indent=1))
    return path


def _answers(registry: Registry) -> bool:
    context = ssl.create_default_context(cafile=str(registry.tls.ca)) if registry.tls else None
    try:
        with urllib.request.urlopen(f"{registry.url}/v2/", timeout=2, context=context):
            return True
    except urllib.error.HTTPError as error:
        return error.code == 401  # up, and asking for a login
    except OSError:
        return False


@contextmanager
def running_registry(folder: Path, users: dict[str, str] | None = None, tls: TestCA | None = None) -> Iterator[Registry]:
    """Start ``docker-registry`` on 127.0.0.1:<free port>, wait (bounded) until it answers, stop it after."""
    binary = require_command("docker-registry", "docker-registry")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    registry = Registry(f"127.0.0.1:{port}", folder, dict(users or {}), tls)
    config = registry_config(folder, registry.address, registry.users, tls)
    log = folder / "registry.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 20
        while not _answers(registry):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer on {registry.address}:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


CONTAINER_PORT = 5000
CERTS_D = Path("/etc/docker/certs.d")


@contextmanager
def registry_container(client: docker.DockerClient, folder: Path, image: str, tls: bool) -> Iterator[Registry]:
    """docker-registry in a test container on the engine's default bridge: an address outside 127.0.0.0/8, so the
    engine insists on HTTPS with a certificate it trusts. With ``tls``, a test CA signs a certificate for that address.

    The certificate needs the address, which is known only once the container runs: the container waits (bounded)
    for its config file, written then.
    """
    binary = require_command("docker-registry", "docker-registry")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    wait = 'i=0; while [ ! -f /registry/go ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i+1)); done; exec "$@"'
    container = client.containers.run(
        image,
        ["sh", "-c", wait, "sh", "/usr/local/bin/docker-registry", "serve", "/registry/config.yml"],
        detach=True,
        network_mode="bridge",
        volumes={
            binary: {"bind": "/usr/local/bin/docker-registry", "mode": "ro"},
            str(folder): {"bind": "/registry", "mode": "rw"},
        },
        labels={"warptasks-test": "registry"},
    )
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        if not address:
            raise RuntimeError("the registry container got no address on the default bridge")
        ca = make_ca(folder / "tls", "registry", [address]) if tls else None
        registry = Registry(f"{address}:{CONTAINER_PORT}", folder, {}, ca)
        inside = (
            TestCA(Path("/registry/tls/ca.crt"), Path("/registry/tls/server.crt"), Path("/registry/tls/server.key"))
            if ca
            else None
        )
        config = registry_config(folder, f"0.0.0.0:{CONTAINER_PORT}", {}, inside)
        config.write_text(config.read_text().replace(str(folder / "storage"), "/registry/storage"))
        (folder / "go").touch()
        deadline = time.monotonic() + 20
        while not _answers(registry):
            container.reload()
            if container.status == "exited" or time.monotonic() > deadline:
                logs = container.logs().decode(errors="replace")[-2000:]
                raise RuntimeError(f"the registry container did not answer on {registry.address}:\n{logs}")
            time.sleep(0.2)
        yield registry
    finally:
        container.remove(force=True)


@contextmanager
def engine_trusts(registry: Registry) -> Iterator[Path]:
    """The registry's CA where the engine looks for it (/etc/docker/certs.d/<host:port>/ca.crt); removed after."""
    assert registry.tls is not None
    made = [path for path in (CERTS_D.parent, CERTS_D) if not path.exists()]
    folder = CERTS_D / registry.address
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(registry.tls.ca.read_bytes())
    try:
        yield folder
    finally:
        (folder / "ca.crt").unlink(missing_ok=True)
        folder.rmdir()
        for path in reversed(made):  # leave the machine's /etc as it was
            if not any(path.iterdir()):
                path.rmdir()
