"""warp s2i --push against a real registry (Debian's docker-registry on 127.0.0.1): push, remove, pull, run, serve."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from tests.cases import as_git_repo, write_tree
from tests.container.image_helpers import TAG, WSGI, get, remove_image, server_base, serving
from tests.container.test_image_cli import index_arguments, warp
from tests.harness.images import IndexAccess
from tests.harness.registry import Registry, engine_trusts, free_port, registry_container

pytestmark = pytest.mark.container


def s2i_push(
    client: docker.DockerClient, index: IndexAccess, project: Path, *tags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [arg for tag in tags for arg in ("--tag", tag)]
    base = ["--base-image", server_base(client), "--no-pull", "--quiet", *index_arguments(index)]
    return warp("s2i", "--push", *args, *base, cwd=project, env=env)


def git_project(project: Path) -> Path:
    return as_git_repo(write_tree(project, {"wsgi.py": WSGI, "requirements.txt": "six\n", ".gitignore": ".warp/\n"}))


def remove_all(client: docker.DockerClient, repository: str) -> None:
    for image in client.images.list(name=repository):
        for name in image.tags:
            remove_image(client, name)


def test_a_pushed_image_is_pulled_back_and_serves(
    docker_client: docker.DockerClient, index_access: IndexAccess, image_registry: Registry, project_dir: Path, tmp_path: Path
) -> None:
    repository = f"{image_registry.address}/warp-test/site-{TAG}"
    done = s2i_push(docker_client, index_access, git_project(project_dir), f"{repository}:1.0", f"{repository}:latest")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    commit = next(line.split()[2].rstrip(":") for line in done.stdout.splitlines() if line.startswith("also tagged "))
    assert image_registry.tags(repository.split("/", 1)[1]) == sorted(["1.0", "latest", commit])
    assert f"pushed {repository}:1.0 (sha256:" in done.stdout

    remove_all(docker_client, repository)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"{repository}:{commit}")
    docker_client.images.pull(repository, tag=commit)
    try:
        with serving(docker_client, f"{repository}:{commit}") as app:
            assert get(app.url + "/") == (200, b"VERSION-1")
    finally:
        remove_all(docker_client, repository)


def test_push_to_a_registry_needing_a_login_uses_the_docker_config_and_never_shows_the_password(
    docker_client: docker.DockerClient, index_access: IndexAccess, auth_registry: Registry, project_dir: Path, tmp_path: Path
) -> None:
    ((user, password),) = auth_registry.users.items()
    repository = f"{auth_registry.address}/warp-test/private-{TAG}"
    project = git_project(project_dir)
    try:
        anonymous = s2i_push(
            docker_client, index_access, project, f"{repository}:1.0", env={"DOCKER_CONFIG": str(tmp_path / "none")}
        )
        assert anonymous.returncode != 0
        assert f"could not push {repository}:1.0: the registry refused the credentials" in anonymous.stderr
        assert f"docker login {auth_registry.address}" in anonymous.stderr and "Traceback" not in anonymous.stderr

        wrong = auth_registry.docker_config(tmp_path / "wrong", user, "not-the-password")
        refused = s2i_push(docker_client, index_access, project, f"{repository}:1.0", env={"DOCKER_CONFIG": str(wrong)})
        assert refused.returncode != 0 and "the registry refused the credentials" in refused.stderr
        assert auth_registry.tags(repository.split("/", 1)[1]) == []

        login = auth_registry.docker_config(tmp_path / "login", user, password)
        done = s2i_push(docker_client, index_access, project, f"{repository}:1.0", env={"DOCKER_CONFIG": str(login)})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "1.0" in auth_registry.tags(repository.split("/", 1)[1])

        # A credential helper named by the Docker config (credHelpers) is run as docker runs it.
        config, helpers = auth_registry.credential_helper(tmp_path / "helper", user, password)
        path = f"{helpers}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        helped = s2i_push(
            docker_client, index_access, project, f"{repository}:2.0", env={"DOCKER_CONFIG": str(config), "PATH": path}
        )
        assert helped.returncode == 0, helped.stdout[-3000:] + helped.stderr[-3000:]
        assert "2.0" in auth_registry.tags(repository.split("/", 1)[1])
        for output in (anonymous, refused, done, helped):
            assert password not in output.stdout + output.stderr
    finally:
        remove_all(docker_client, repository)


def test_a_registry_that_does_not_answer_fails_the_push_saying_so(
    docker_client: docker.DockerClient, index_access: IndexAccess, project_dir: Path
) -> None:
    repository = f"127.0.0.1:{free_port()}/warp-test/nowhere-{TAG}"
    try:
        done = s2i_push(docker_client, index_access, git_project(project_dir), f"{repository}:1.0")
        assert done.returncode != 0
        assert f"could not push {repository}:1.0: the engine could not reach the registry" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        remove_all(docker_client, repository)


def test_push_without_a_registry_in_the_name_is_refused_before_building(project_dir: Path) -> None:
    write_tree(project_dir, {"wsgi.py": WSGI})
    done = warp("s2i", "--push", "--project", str(project_dir), "--no-pull")
    assert done.returncode != 0
    assert "--push needs a name in a registry" in done.stderr and "Step 1/" not in done.stdout


def test_a_registry_off_loopback_needs_tls_the_engine_trusts_and_the_error_says_how(
    docker_client: docker.DockerClient, index_access: IndexAccess, python_image: str, project_dir: Path, tmp_path: Path
) -> None:
    project = git_project(project_dir)
    with registry_container(docker_client, tmp_path / "plain", python_image, tls=False) as plain:
        repository = f"{plain.address}/warp-test/plain-{TAG}"
        try:
            done = s2i_push(docker_client, index_access, project, f"{repository}:1.0")
            assert done.returncode != 0 and "Traceback" not in done.stderr
            assert "the registry speaks plain HTTP and the engine only allows HTTPS for it" in done.stderr
            assert f'"insecure-registries": ["{plain.address}"]' in done.stderr
        finally:
            remove_all(docker_client, repository)

    with registry_container(docker_client, tmp_path / "tls", python_image, tls=True) as secure:
        repository = f"{secure.address}/warp-test/tls-{TAG}"
        try:
            untrusted = s2i_push(docker_client, index_access, project, f"{repository}:1.0")
            assert untrusted.returncode != 0
            assert "the engine does not trust the registry's TLS certificate" in untrusted.stderr
            assert f"/etc/docker/certs.d/{secure.address}/ca.crt" in untrusted.stderr

            with engine_trusts(secure):
                done = s2i_push(docker_client, index_access, project, f"{repository}:1.0")
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
                assert "1.0" in secure.tags(repository.split("/", 1)[1])
                remove_all(docker_client, repository)
                docker_client.images.pull(repository, tag="1.0")
            with serving(docker_client, f"{repository}:1.0") as app:
                assert get(app.url + "/") == (200, b"VERSION-1")
        finally:
            remove_all(docker_client, repository)


def test_warp_builder_pushes_the_builder_image(
    docker_client: docker.DockerClient, index_access: IndexAccess, image_registry: Registry, project_dir: Path
) -> None:
    repository = f"{image_registry.address}/warp-test/builder-{TAG}"
    base = ["--base-image", server_base(docker_client), "--no-pull", "--quiet", *index_arguments(index_access)]
    try:
        done = warp("builder", "--push", "--tag", f"{repository}:1", *base, cwd=project_dir)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert image_registry.tags(repository.split("/", 1)[1]) == ["1"]
    finally:
        remove_all(docker_client, repository)
