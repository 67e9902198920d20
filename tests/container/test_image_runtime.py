"""The runtime image (the last stage of warp s2i): no compiler, no warptasks; stops gracefully, says when it is healthy.

Both images are built once, on a base with Python alone (no compiler, no Apache), so whatever the runtime image
holds beyond the base came from the runtime stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.cases import Exe, write_tree
from tests.container.image_helpers import TAG, build_options, get, remove_image, serving
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.build import build_app_image

pytestmark = pytest.mark.container

SLOW_APP = (
    "import time\n\n"
    "def application(environ, start_response):\n"
    "    if environ.get('PATH_INFO') == '/slow':\n"
    "        time.sleep(3)\n"
    "        body = b'SLOW-DONE'\n"
    "    else:\n"
    "        body = b'FAST'\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n"
    "    return [body]\n"
)
# Ready while /tmp/broken is absent: the test breaks the app by creating it.
READY_HOOK = "#!/bin/sh\ntest ! -e /tmp/broken\n"
WORKER = "import time\nprint('worker up', flush=True)\nwhile True:\n    time.sleep(1)\n"


def _project(root: Path) -> Path:
    return write_tree(
        root,
        {
            "wsgi.py": SLOW_APP,
            "requirements.txt": "six\n",
            ".s2i/action_hooks/ready": Exe(READY_HOOK),
            "worker.py": WORKER,
            "Procfile": "worker: python worker.py\n",
        },
    )


@pytest.fixture(scope="module")
def images(
    docker_client: docker.DockerClient, python_image: str, index_access: IndexAccess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A mod_wsgi and a gunicorn runtime image of the same project, on the Python-only base."""
    built = {}
    for server in ("mod_wsgi", "gunicorn"):
        root = _project(tmp_path_factory.mktemp(server))
        tag = f"warp-test-runtime-{server.replace('_', '-')}:{TAG}"
        options = build_options(index_access, tag, python_image, server=server)
        build_app_image(detect_app(root, server=server), options, client=docker_client)
        built[server] = tag
    yield built
    for tag in built.values():
        remove_image(docker_client, tag)


def _run(client: docker.DockerClient, image: str, *argv: str) -> tuple[int, str]:
    container = client.containers.run(image, list(argv), detach=True, network_mode="none", labels={"warptasks-test": "image"})
    try:
        code = container.wait(timeout=60)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn"])
def test_a_runtime_image_has_no_compiler_and_no_warptasks_sdks(
    docker_client: docker.DockerClient, images: dict[str, str], server: str
) -> None:
    image = images[server]
    code, found = _run(docker_client, image, "sh", "-c", "command -v cc || command -v gcc || command -v apxs")
    assert code != 0 and found == "", found
    env_python = f"{img.PROJECT}/.warp/current/bin/python"
    for module in ("docker", "fabric", "paramiko", "cryptography", "invoke", "warptasks", "uv", "virtualenv"):
        code, output = _run(docker_client, image, env_python, "-c", f"import {module}")
        assert code == 1 and "ModuleNotFoundError" in output, (module, output)
    assert _run(docker_client, image, "sh", "-c", "command -v uv || ls /opt/warptasks/bin/python")[0] != 0
    config = docker_client.images.get(image).attrs["Config"]
    assert config["StopSignal"] == ("SIGWINCH" if server == "mod_wsgi" else "SIGTERM")
    labels = config["Labels"]
    for name in ("title", "created", "version"):
        assert labels[f"org.opencontainers.image.{name}"], name
    assert labels[img.WRITABLE_LABEL] == " ".join(img.WRITABLE_PATHS)
    assert labels["io.openshift.s2i.scripts-url"] == img.SCRIPTS_URL


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn"])
def test_docker_stop_during_a_3_s_request_lets_it_finish(
    docker_client: docker.DockerClient, images: dict[str, str], server: str
) -> None:
    with serving(docker_client, images[server]) as app:
        answer: dict[str, Any] = {}

        def slow() -> None:
            try:
                answer["result"] = get(app.url + "/slow", timeout=15)
            except OSError as error:
                answer["error"] = error

        request = threading.Thread(target=slow)
        request.start()
        time.sleep(1)  # the request is in the app's sleep
        seconds = app.stop_seconds()
        request.join(timeout=20)
        logs = app.container.logs().decode(errors="replace")[-2000:]
    assert answer.get("result") == (200, b"SLOW-DONE"), (answer, logs)
    print(f"{server}: docker stop took {seconds:.1f} s")
    assert seconds < 9, "docker stop waited for the kill: the server did not stop on its signal"


def _health(container: Any, wanted: str, within: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == wanted:
            return seen
        time.sleep(1)
    raise AssertionError(f"health never became {wanted} within {within:.0f} s: {seen}; {container.attrs['State'].get('Health')}")


def test_the_healthcheck_turns_healthy_then_unhealthy_when_the_ready_hook_fails(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    with serving(docker_client, images["mod_wsgi"]) as app:
        _health(app.container, "healthy", 60)
        app.exec("touch", "/tmp/broken")
        _health(app.container, "unhealthy", 75)
        assert get(app.url + "/") == (200, b"FAST")  # the hook decides, not the port


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn"])
def test_a_read_only_root_with_the_declared_tmpfs_serves(
    docker_client: docker.DockerClient, images: dict[str, str], server: str
) -> None:
    image = images[server]
    declared = docker_client.images.get(image).labels[img.WRITABLE_LABEL].split()
    tmpfs = dict(path.partition(":")[::2] for path in declared)
    with serving(docker_client, image, read_only=True, tmpfs=tmpfs) as app:
        assert get(app.url + "/") == (200, b"FAST")
        assert "Read-only file system" in app.container.exec_run(["touch", f"{img.PROJECT}/x"]).output.decode()


def test_a_procfile_process_type_runs_in_the_runtime_image(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    container = docker_client.containers.run(
        images["gunicorn"], ["warp", "start", "worker"], detach=True, network_mode="none", labels={"warptasks-test": "image"}
    )
    try:
        deadline = time.monotonic() + 30
        while b"worker up" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert b"worker up" in container.logs(), container.logs().decode(errors="replace")
        code, output = _run(docker_client, images["gunicorn"], "warp", "start", "nosuch")
        assert code == 2 and "no process type 'nosuch'" in output and "worker" in output
    finally:
        container.remove(force=True)
