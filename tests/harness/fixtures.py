"""pytest fixtures for tests that need a Docker engine or SSH hosts (import them with `from tests.harness.fixtures import *`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from . import hosts as _hosts
from . import images as _images
from .engine import ensure_engine
from .registry import Registry, running_registry

__all__ = ["auth_registry", "docker_client", "image_registry", "index_access", "python_image", "ssh_hosts", "ssh_image"]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for a running engine (the harness starts Debian's dockerd if none answers)."""
    client = ensure_engine()
    _hosts.remove_stale_hosts(client)
    yield client
    mine = client.containers.list(all=True, filters={"label": f"{_hosts.SESSION_LABEL}={os.getpid()}"})
    for container in mine:
        try:
            container.remove(force=True, v=True)
        except docker.errors.APIError:
            pass
    client.close()


@pytest.fixture(scope="session")
def python_image(docker_client: docker.DockerClient) -> str:
    """Tag of the plain Debian image: python3, python3-venv, python3-pip, ca-certificates."""
    return _images.python_image(docker_client)


@pytest.fixture(scope="session")
def ssh_image(docker_client: docker.DockerClient) -> str:
    """Tag of the SSH-host image: the plain one plus sshd, rsync and what compiles mod_wsgi."""
    return _images.ssh_image(docker_client)


@pytest.fixture(scope="session")
def index_access() -> _images.IndexAccess:
    """This machine's CA bundle and pip settings, for containers that install from the package index."""
    return _images.index_access()


@pytest.fixture
def ssh_hosts(docker_client: docker.DockerClient, ssh_image: str) -> Iterator[Callable[..., list[_hosts.Host]]]:
    """Factory: `ssh_hosts(count=1, network="host"|"bridge", index=True)` -> fresh hosts, removed after the test."""
    made: list[_hosts.Host] = []

    def start(count: int = 1, network: str = "host", index: bool = True) -> list[_hosts.Host]:
        started = _hosts.ssh_hosts(docker_client, count, network=network, image=ssh_image, index=index)
        made.extend(started)
        return started

    yield start
    _hosts.remove_hosts(made)


@pytest.fixture
def image_registry(tmp_path: Path) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1:<free port>, plain HTTP, storage in the test's folder; stopped after."""
    with running_registry(tmp_path / "registry") as registry:
        yield registry


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    """The same, asking for a login: one user (``registry.users``) with a fresh random password."""
    with running_registry(tmp_path / "auth-registry", users={"warp-test": secrets.token_urlsafe(16)}) as registry:
        yield registry
