"""Image builds that cannot succeed: clear messages, non-zero exits, nothing tagged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import WSGI, build_options, server_base
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.errors import ConfigError, StepFailed
from warptasks.image_build import build_app_image

pytestmark = pytest.mark.container


def warp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warptasks", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, check=False)


def test_a_failing_build_step_names_the_step_shows_its_output_and_tags_nothing(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI, "requirements.txt": "warptasks-surely-no-such-package-zq==0.0.1\n"})
    tag = "warp-test-failing:1"
    with pytest.raises(StepFailed) as failed:
        build_app_image(detect_app(project_dir), build_options(index_access, tag, server_base(docker_client)),
                        client=docker_client)
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
        build_app_image(detect_app(project_dir), build_options(index_access, "warp-test-nobase:1", missing), client=docker_client)
    assert "--base-image" in raised.value.hint


def test_the_s2i_task_refuses_an_invalid_tag_before_building(docker_client: docker.DockerClient, project_dir: Path) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI})
    done = warp("s2i", "--project", str(project_dir), "--tag", "Not A/Valid:Tag!", "--no-pull")
    assert done.returncode != 0
    assert "'Not A/Valid:Tag!' is not a valid image name" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_s2i_task_says_how_to_reach_an_engine_when_none_answers(project_dir: Path) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI})
    done = warp("s2i", "--project", str(project_dir), "--no-pull", env={"DOCKER_HOST": f"unix://{project_dir}/no-engine.sock"})
    assert done.returncode != 0
    assert "no Docker engine reachable" in done.stderr and "DOCKER_HOST" in done.stderr
    assert "Traceback" not in done.stderr
