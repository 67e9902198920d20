"""Image builds that cannot succeed: clear messages, non-zero exits, nothing tagged."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, WSGI, build_options, server_base
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.errors import ConfigError, StepFailed
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container


def test_a_failing_build_step_names_the_step_shows_its_output_and_tags_nothing(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI, "requirements.txt": "warptasks-surely-no-such-package-zq==0.0.1\n"})
    tag = f"warp-test-failing:{TAG}"
    with pytest.raises(StepFailed) as failed:
        build_app_image(
            detect_app(project_dir), build_options(index_access, tag, server_base(docker_client)), client=docker_client
        )
    assert "step 'install requirements'" in str(failed.value)
    assert "warptasks-surely-no-such-package-zq" in failed.value.output
    assert '"errorDetail"' not in failed.value.output and "{" not in str(failed.value)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)


def test_a_missing_base_image_is_a_clear_error(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI})
    missing = "warptasks-test/no-such-base:1"
    with pytest.raises(ConfigError, match=f"base image {missing} is not in the engine") as raised:
        options = build_options(index_access, f"warp-test-nobase:{TAG}", missing)
        build_app_image(detect_app(project_dir), options, client=docker_client)
    assert "--base-image" in raised.value.hint
