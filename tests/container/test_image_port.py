"""PORT in the project's .s2i/environment is the port its image serves on, EXPOSEs and labels, when the container sets
no PORT (the S2I Python builder's gunicorn-different-port-test-app); a container's PORT still wins."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, build_options, free_port, get, remove_image, server_base, serving
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container

APP = (
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'Hello World from gunicorn WSGI application!']\n"
)


def _answers(client: docker.DockerClient, image: str, port: int, environment: dict[str, str]) -> bytes:
    with serving(client, image, port=port, environment=environment) as running:
        status, body = get(running.url + "/", timeout=2)
        assert status == 200, body
        return body


def test_the_projects_port_is_the_images_port(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    port = free_port()
    write_tree(
        project_dir,
        {"app.py": APP, "requirements.txt": "", ".s2i/environment": f"APP_MODULE=app:application\nPORT={port}\n"},
    )
    tag = f"warp-test-port:{TAG}"
    try:
        build_app_image(
            detect_app(project_dir), build_options(index_access, tag, server_base(docker_client)), client=docker_client
        )
        attrs = docker_client.images.get(tag).attrs["Config"]
        assert f"{port}/tcp" in attrs["ExposedPorts"], attrs["ExposedPorts"]
        assert attrs["Labels"]["io.openshift.expose-services"] == f"{port}:http"
        assert b"Hello World" in _answers(docker_client, tag, port, {})  # no PORT in the container: the project's
        other = free_port()
        assert b"Hello World" in _answers(docker_client, tag, other, {"PORT": str(other)})  # the container's wins
    finally:
        remove_image(docker_client, tag)
