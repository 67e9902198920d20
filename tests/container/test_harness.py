"""The test harness itself: a real engine, and base images made here without any registry."""

from __future__ import annotations

import docker
import pytest

from tests.harness.images import PYTHON_PACKAGES, base_image, image_key

pytestmark = pytest.mark.container


def test_engine_answers_and_runs_containers(docker_client: docker.DockerClient) -> None:
    assert docker_client.ping() is True
    assert docker_client.info()["Driver"] in ("overlay2", "vfs")


def test_python_image_runs_debian_python(docker_client: docker.DockerClient, python_image: str) -> None:
    output = docker_client.containers.run(
        python_image, ["python3", "-c", "import sys, venv, ensurepip; print(1, sys.executable)"], remove=True, network_mode="none"
    )
    assert output.decode().split() == ["1", "/usr/bin/python3"]


def test_base_image_is_made_once_and_reused(docker_client: docker.DockerClient, python_image: str) -> None:
    image_id = docker_client.images.get(python_image).id
    assert base_image(docker_client) == python_image
    assert base_image(docker_client, extra_packages=PYTHON_PACKAGES) == python_image
    assert docker_client.images.get(python_image).id == image_id


def test_image_tag_follows_the_package_list() -> None:
    assert image_key(()) == image_key(PYTHON_PACKAGES)
    assert image_key(("rsync", "curl")) == image_key(("curl", "rsync"))
    assert image_key(("rsync",)) != image_key(())


def test_ssh_image_has_what_a_deploy_target_needs(docker_client: docker.DockerClient, ssh_image: str) -> None:
    script = "command -v sshd rsync apxs gcc python3-config >/dev/null && ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l"
    output = docker_client.containers.run(ssh_image, ["sh", "-c", script], remove=True, network_mode="none")
    # No baked-in host keys: every host makes its own, so hosts can be told apart.
    assert output.decode().strip() == "0"


def test_index_access_reaches_the_package_index_from_a_container(
    docker_client: docker.DockerClient, python_image: str, index_access
) -> None:
    container = docker_client.containers.run(
        python_image,
        ["python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d", "/tmp/wheels", "six"],
        network_mode="host",
        environment=index_access.environment,
        volumes=index_access.volumes,
        detach=True,
    )
    try:
        result = container.wait(timeout=300)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 0, logs
    assert "Saved /tmp/wheels/six-" in logs
