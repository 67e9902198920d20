"""What a pushed image shows of the build machine: never a --build-env value, nor the origin remote's credentials.

One real build (gunicorn, on the Python-only base) of a project whose folder name holds ``${TOKEN_VARIABLE}`` and
whose origin remote carries a token; the build gets the token as a --build-env value. The runtime image, the one
pushed, is read as anyone pulling it can: ``docker inspect`` (labels, config), ``docker history``, its files.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from tests.cases import as_git_repo, write_tree
from tests.container.image_helpers import TAG, build_options, remove_image
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container

SECRET = "warp-attack-s3cr3t-T0KEN"
VARIABLE = "WARP_TEST_INDEX_TOKEN"
APP = "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"


def test_the_runtime_image_holds_no_build_env_value_nor_remote_credentials(
    docker_client: docker.DockerClient, python_image: str, index_access: IndexAccess, tmp_path: Path
) -> None:
    root = as_git_repo(write_tree(tmp_path / f"site${{{VARIABLE}}}", {"wsgi.py": APP, "requirements.txt": "six\n"}))
    origin = f"HTTPS://ci:{SECRET}@git.example.com/team/site.git"
    subprocess.run(["git", "-C", str(root), "remote", "add", "origin", origin], check=True)
    tag = f"warp-test-secrets:{TAG}"
    options = build_options(index_access, tag, python_image, server="gunicorn")
    options = replace(options, build_env={**options.build_env, VARIABLE: SECRET})
    try:
        build_app_image(detect_app(root, server="gunicorn"), options, client=docker_client)
        image = docker_client.images.get(tag)
        labels = image.labels
        assert labels["org.opencontainers.image.source"] == "https://git.example.com/team/site.git"
        # The folder's name, literally: the engine did not expand ${...} from the build's arguments.
        assert labels["org.opencontainers.image.title"] == f"site${{{VARIABLE}}}"
        assert SECRET not in json.dumps(image.attrs)
        history = [entry.get("CreatedBy", "") for entry in image.history()]
        assert not [line for line in history if SECRET in line or f"{VARIABLE}=" in line], history
        found = docker_client.containers.run(
            tag, ["sh", "-c", f"grep -rls {SECRET} /opt /etc /tmp 2>/dev/null; true"], remove=True, network_mode="none"
        )
        assert found.decode().strip() == ""
    finally:
        remove_image(docker_client, tag)


def test_a_commits_labels_are_literal_too(docker_client: docker.DockerClient, python_image: str) -> None:
    """warp s2i --builder commits the builder's container with LABEL changes: the engine expands $NAME there too."""
    value = f"site${{{VARIABLE}}} ${VARIABLE} a\\$b"
    container = docker_client.containers.create(python_image, ["true"], environment={VARIABLE: SECRET})
    try:
        committed = container.commit(changes=[f"LABEL t={img.label_value(value)}"])
    finally:
        container.remove(force=True)
    try:
        assert committed.labels["t"] == value
    finally:
        docker_client.images.remove(committed.id, force=True)
