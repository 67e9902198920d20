"""A project written for OpenShift's S2I Python builder builds and runs unchanged through the warptasks builder."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, WSGI, build_options, get, remove_image, server_base, serving
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image.build import build_builder_image
from warptasks.image.s2i import s2i_build

pytestmark = pytest.mark.container

S2I_PROJECT = {
    # sclorg's settings: the app lives in web/, gunicorn's config names the app, WEB_CONCURRENCY sizes the workers.
    ".s2i/environment": "APP_HOME=web\nAPP_CONFIG=gunicorn.conf.py\nWEB_CONCURRENCY=3\nDISABLE_MIGRATE=1\n",
    "web/gunicorn.conf.py": "wsgi_app = 'hello.site:application'\n",
    "web/hello/__init__.py": "",
    "web/hello/site.py": WSGI.replace("VERSION-1", "s2i project"),
    "web/requirements.txt": "six\n",
    "README.md": "not part of the app\n",
}


def test_an_s2i_python_builder_project_runs_unchanged(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, S2I_PROJECT)
    spec = detect_app(project_dir)
    assert spec.target == "hello.site:application" and "wsgi_app in gunicorn.conf.py" in spec.why
    base = server_base(docker_client)
    builder, tag = f"warp-test-builder-conventions:{TAG}", f"warp-test-s2i-conventions:{TAG}"
    build_builder_image(spec, build_options(index_access, builder, base), client=docker_client)
    result = s2i_build(spec, build_options(index_access, tag, base), builder, client=docker_client)
    assert "install requirements" in result.log
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, b"s2i project")
        log = app.container.logs().decode(errors="replace")
        assert "3 process(es)" in log and "WEB_CONCURRENCY" in log
    for name in (tag, builder):
        remove_image(docker_client, name)
