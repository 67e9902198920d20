"""The warp s2i and warp builder commands: a real build streamed to the terminal, and their errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, WSGI, engine_url, get, remove_image, server_base, serving
from tests.harness.images import IndexAccess

pytestmark = pytest.mark.container
CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")


def warp(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": engine_url(), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "warptasks", *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env, check=False
    )


def index_arguments(index: IndexAccess) -> list[str]:
    """The command-line form of how this machine reaches the package index: its CA bundle and index settings."""
    ((path, _),) = index.host_files.items()
    args = ["--network", "host", "--ca-bundle", path]
    for name, value in sorted(index.environment.items()):
        if name not in CA_VARIABLES:
            args += ["--build-env", f"{name}={value}"]
    return args


def test_warp_s2i_streams_the_build_and_makes_an_image_that_serves(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    # Requirements no other test has, so the dependency stage really runs (an earlier test's cached layer prints nothing).
    write_tree(project_dir, {"wsgi.py": WSGI, "requirements.txt": f"six\n# {project_dir.name}\n"})
    tag = f"warp-test-cli:{TAG}"
    done = warp(
        "s2i",
        "--tag",
        tag,
        "--base-image",
        server_base(docker_client),
        "--no-pull",
        *index_arguments(index_access),
        cwd=project_dir,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Step 1/" in done.stdout and "[deps 1/" in done.stdout  # the engine's output, as it happened
    # Each plan step that ran says how long it took, the build where the time went; a pipe gets no escape codes.
    assert re.search(r"^\[deps 1/\d+\] [^:]+: done in \d+\.\ds$", done.stdout, re.M), done.stdout[-3000:]
    assert re.search(r"^built in \d+\.\ds: ", done.stdout, re.M), done.stdout[-3000:]
    assert "\x1b" not in done.stdout
    assert "system packages: the base image has Apache's apxs" in done.stdout
    assert f"docker run --rm -p 8080:8080 {tag}" in done.stdout
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, b"VERSION-1")
    remove_image(docker_client, tag)


def test_warp_builder_needs_no_project(docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path) -> None:
    tag = f"warp-test-cli-builder:{TAG}"
    done = warp(
        "builder",
        "--tag",
        tag,
        "--base-image",
        server_base(docker_client),
        "--no-pull",
        "--quiet",
        *index_arguments(index_access),
        cwd=project_dir,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Step 1/" not in done.stdout
    assert docker_client.images.get(tag).labels["io.openshift.s2i.scripts-url"] == "image:///usr/libexec/s2i"
    remove_image(docker_client, tag)


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
