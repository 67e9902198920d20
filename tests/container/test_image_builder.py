"""warp.builder and warp.s2i --builder against a real engine: the S2I contract, the same plan as warp.s2i."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, WSGI, build_options, files_in_image, get, remove_image, server_base, serving
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.build import build_app_image, build_builder_image
from warptasks.image.s2i import s2i_build

pytestmark = pytest.mark.container

BUILDER = f"warp-test-builder:{TAG}"


def env_key(client: docker.DockerClient, image: str) -> str:
    state = files_in_image(client, image, f"{img.PROJECT}/.warp/state.json")["state.json"]
    return json.loads(state)["env_key"]


def test_builder_image_assembles_and_runs_an_app_like_the_s2i_tool_with_the_same_plan_as_warp_s2i(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    base = server_base(docker_client)
    write_tree(project_dir, {"wsgi.py": WSGI, "requirements.txt": "six\n"})
    spec = detect_app(project_dir)
    build_builder_image(spec, build_options(index_access, BUILDER, base), client=docker_client)
    builder = docker_client.images.get(BUILDER)
    assert builder.labels["io.openshift.s2i.scripts-url"] == "image:///usr/libexec/s2i"
    assert builder.attrs["Config"]["User"] == str(img.USER_ID)
    usage = docker_client.containers.run(BUILDER, network_mode="none", remove=True).decode()
    assert "s2i build" in usage
    scripts = files_in_image(docker_client, BUILDER, img.S2I_SCRIPTS)
    assert sorted(scripts) == [f"s2i/{name}" for name in ("assemble", "run", "save-artifacts", "usage")]

    tag = f"warp-test-s2i-app:{TAG}"
    options = build_options(index_access, tag, base)
    first = s2i_build(spec, options, BUILDER, client=docker_client)
    assert "install requirements" in first.log and "install server" in first.log
    with serving(docker_client, tag, user="123456:0") as app:
        assert get(app.url + "/") == (200, b"VERSION-1")
    assert docker_client.images.get(tag).attrs["Config"]["Cmd"] == [f"{img.S2I_SCRIPTS}/run"]
    assert docker_client.images.get(tag).labels["io.openshift.expose-services"] == "8080:http"

    # The same source through warp.s2i makes the same environment: the same plan ran.
    same = f"warp-test-s2i-same:{TAG}"
    build_app_image(spec, build_options(index_access, same, base), client=docker_client)
    assert env_key(docker_client, same) == env_key(docker_client, tag)

    # An incremental build restores the saved environment and skips installing it again.
    (project_dir / "wsgi.py").write_text(WSGI.replace("VERSION-1", "VERSION-2"))
    second = s2i_build(detect_app(project_dir), replace(options, incremental=True), BUILDER, client=docker_client)
    assert "Restoring the environment" in second.log
    assert "skip install requirements" in second.log and "skip install server" in second.log
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, b"VERSION-2")
    for name in (tag, same, BUILDER):
        remove_image(docker_client, name)
