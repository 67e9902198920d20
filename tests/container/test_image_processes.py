"""A Procfile process type in an application image: ``docker run IMAGE warp start worker`` runs it."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import APP_PY, TAG, build_options, remove_image, server_base
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container

WORKER = "import os, sys; print('worker', os.environ['WARP_ACTION'], os.environ['QUEUE'], os.getuid(), sys.prefix)"


def test_an_image_runs_a_procfile_process_type_in_the_apps_environment(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(
        project_dir,
        {"app.py": APP_PY, "Procfile": f'worker: python -c "{WORKER}"\n', ".s2i/environment": "QUEUE=redis://q\n"},
    )
    tag = f"warp-test-procs:{TAG}"
    options = build_options(index_access, tag, server_base(docker_client))
    build_app_image(detect_app(project_dir), options, client=docker_client)
    try:
        output = docker_client.containers.run(tag, ["warp", "start", "worker"], remove=True)
        last = output.decode().strip().splitlines()[-1].split()
        assert last[:4] == ["worker", "worker", "redis://q", str(img.USER_ID)], output
        assert last[4].startswith(f"{img.ENVS}/"), output  # the app's environment's Python
        with pytest.raises(docker.errors.ContainerError, match="no process type 'clock'"):
            docker_client.containers.run(tag, ["warp", "start", "--process", "clock"], remove=True, stderr=True)
    finally:
        remove_image(docker_client, tag)
