"""Images of projects whose dependencies come from setup.py or Pipfile.lock, served by gunicorn."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, WSGI, build_options, get, remove_image, server_base, serving
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container

GUNICORN = {".s2i/environment": "WARP_SERVER=gunicorn\n"}
SETUP_PY = GUNICORN | {
    "setup.py": "from setuptools import setup\nsetup(name='hello', version='1', packages=['hello'], install_requires=['six'])\n",
    "hello/__init__.py": "",
    "hello/web.py": WSGI.replace("VERSION-1", "setup.py project"),
    "gunicorn.conf.py": "wsgi_app = 'hello.web'\n",
}
PIPFILE_LOCK = GUNICORN | {
    "Pipfile.lock": json.dumps(
        {
            "_meta": {"sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}]},
            "default": {"six": {"version": "==1.17.0"}},
            "develop": {},
        }
    ),
    "wsgi.py": WSGI.replace("VERSION-1", "Pipfile.lock project"),
}


@pytest.mark.parametrize(
    ("files", "answer", "split"),
    [(SETUP_PY, b"setup.py project", True), (PIPFILE_LOCK, b"Pipfile.lock project", True)],
    ids=["setup.py", "Pipfile.lock"],
)
def test_packaged_and_locked_projects_build_and_serve(
    docker_client: docker.DockerClient,
    index_access: IndexAccess,
    project_dir: Path,
    files: dict[str, str],
    answer: bytes,
    split: bool,
) -> None:
    write_tree(project_dir, files)
    tag = f"warp-test-project:{TAG}"
    result = build_app_image(
        detect_app(project_dir), build_options(index_access, tag, server_base(docker_client)), client=docker_client
    )
    # Both get a dependency layer of their own: setup.py's install_requires are read from it, the package itself is
    # installed after its code.
    assert any(("depends only on" in note) == split for note in result.notes if note.startswith("dependency layer"))
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, answer)
        assert "six" in app.exec(f"{img.PROJECT}/.warp/current/bin/python", "-m", "pip", "list")
    remove_image(docker_client, tag)


def test_a_server_chosen_with_the_option_is_the_one_the_image_starts(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI})
    tag = f"warp-test-chosen-server:{TAG}"
    options = replace(build_options(index_access, tag, server_base(docker_client)), server="waitress")
    build_app_image(detect_app(project_dir, server="waitress"), options, client=docker_client)
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, b"VERSION-1")
        assert "waitress" in app.container.logs().decode(errors="replace")
    remove_image(docker_client, tag)
