"""warp.s2i against a real engine: application images that serve real projects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import docker
import pytest

from tests.cases import as_git_repo, write_tree
from tests.container.image_helpers import (
    APP_PY,
    TAG,
    WSGI,
    build_options,
    get,
    layers,
    remove_image,
    server_base,
    serving,
    startproject,
)
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def base(docker_client: docker.DockerClient) -> str:
    return server_base(docker_client)


def test_django_image_serves_pages_and_collected_static_files_as_a_non_root_user(
    docker_client: docker.DockerClient, base: str, index_access: IndexAccess, project_dir: Path
) -> None:
    startproject(project_dir)
    (project_dir / ".env").write_text("SECRET_KEY=never-in-the-image\n")
    tag = f"warp-test-django:{TAG}"
    result = build_app_image(detect_app(project_dir), build_options(index_access, tag, base), client=docker_client)
    assert result.plan is not None and "collectstatic" in [s.name for s in result.plan.runnable]
    with serving(docker_client, tag) as app:
        status, body = get(app.url + "/")
        assert status == 200 and b"Django" in body
        status, css = get(app.url + "/static/admin/css/base.css")
        assert status == 200 and len(css) > 1000
        assert app.exec("id", "-u") == str(img.USER_ID)
        assert app.exec("id", "-g") == "0"
        assert app.exec("ls", "-a", "/opt/app-root/src").split().count(".env") == 0
        # Migrations never run implicitly: the default SQLite database was never created.
        assert "db.sqlite3" not in app.exec("ls", "/opt/app-root/src")
        assert app.exec("cat", "/proc/1/comm") == "dumb-init"  # forwards signals, reaps zombies
        seconds = app.stop_seconds()
    print(f"docker stop took {seconds:.2f} s")
    assert seconds < 9, "docker stop waited for the kill: the server did not end on SIGTERM"
    labels = docker_client.images.get(tag).labels
    assert labels["io.openshift.s2i.scripts-url"] == "image:///usr/libexec/s2i"
    assert labels["io.openshift.expose-services"] == "8080:http"
    assert labels["io.k8s.display-name"] == project_dir.name
    assert "8080/tcp" in docker_client.images.get(tag).attrs["Config"]["ExposedPorts"]
    remove_image(docker_client, tag)


def test_a_code_only_change_rebuilds_on_the_cached_dependency_layer_and_any_uid_can_run_it(
    docker_client: docker.DockerClient, base: str, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI, "requirements.txt": "six\n"})
    as_git_repo(project_dir)
    git = ["git", "-C", str(project_dir)]
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    tag = f"warp-test-wsgi:{TAG}"
    options = build_options(index_access, tag, base)
    first = build_app_image(detect_app(project_dir), options, client=docker_client)
    assert docker_client.images.get(tag).labels["org.opencontainers.image.revision"] == commit
    deps_run = f"RUN umask 002 && mkdir -p {img.PROJECT}/.warp && sh {img.WARP_HOME}/build/deps.sh"
    before = layers(docker_client, tag)
    (project_dir / "wsgi.py").write_text(WSGI.replace("VERSION-1", "VERSION-2"))
    second = build_app_image(detect_app(project_dir), options, client=docker_client)
    assert first.build and second.build
    print(
        f"cold build {first.seconds:.1f} s, code-only rebuild {second.seconds:.1f} s, "
        f"{docker_client.images.get(tag).attrs['Size'] / 1e6:.0f} MB"
    )
    assert deps_run in second.build.cached
    assert f"RUN sh {img.WARP_HOME}/build/app.sh" not in second.build.cached
    after = layers(docker_client, tag)
    shared = len(after) - 2  # only the source and its app phase differ (plus the small app.sh copy)
    assert after[: shared - 1] == before[: shared - 1] and after != before
    with serving(docker_client, tag, user="123456:0") as app:
        assert get(app.url + "/") == (200, b"VERSION-2")
        assert app.exec("id", "-u") == "123456"
        assert app.exec("sh", "-c", "test ! -e /opt/app-root/src/.git && echo clean") == "clean"
    remove_image(docker_client, tag)


def test_an_app_py_image_runs_the_apps_own_server(
    docker_client: docker.DockerClient, base: str, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"app.py": APP_PY})
    tag = f"warp-test-app-py:{TAG}"
    result = build_app_image(detect_app(project_dir), build_options(index_access, tag, base), client=docker_client)
    assert result.plan is not None
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, f"app.py as uid {img.USER_ID}".encode())
        state = json.loads(app.exec("cat", "/opt/app-root/src/.warp/state.json"))
        assert state["server"] == "shell"
    remove_image(docker_client, tag)


def test_a_base_image_without_apxs_gets_apache_installed_by_the_dockerfile(
    docker_client: docker.DockerClient, python_image: str, index_access: IndexAccess, project_dir: Path
) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI})
    tag = f"warp-test-apxs:{TAG}"
    result = build_app_image(detect_app(project_dir), build_options(index_access, tag, python_image), client=docker_client)
    assert "apt-get install" in result.dockerfile and "apache2-dev" in result.dockerfile
    assert any("installed with apt-get" in note for note in result.notes)
    with serving(docker_client, tag) as app:
        assert get(app.url + "/") == (200, b"VERSION-1")
    remove_image(docker_client, tag)
