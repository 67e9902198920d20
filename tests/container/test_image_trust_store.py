"""uv in an image trusts the image's own trust store: an index whose CA only the base image trusts works.

The base image's system store (update-ca-certificates) gets a test CA that uv's bundled roots do not hold,
plus this machine's own bundle (its route to the package index may be a TLS-inspecting proxy); nothing is
given to the build on the command line (no --ca-bundle, no SSL_CERT_FILE). Before warptasks told uv to use
the system store, this build failed with "invalid peer certificate: UnknownIssuer".
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from tests.cases import write_tree
from tests.container.image_helpers import TAG, get, remove_image, server_base, serving
from tests.container.test_image_cli import CA_VARIABLES, warp
from tests.harness.images import IndexAccess, host_ca_bundle
from tests.harness.package_index import PackageIndex, https_index
from warptasks.detect import detect_app
from warptasks.image.build import build_builder_image
from warptasks.image.engine import ImageOptions
from warptasks.image.s2i import s2i_build

pytestmark = pytest.mark.container

APP = (
    "import warptestpkg\n\n"
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [warptestpkg.VALUE.encode()]\n"
)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    with https_index(tmp_path) as served:
        yield served


def trusting_image(client: docker.DockerClient, base: str, certificates: dict[str, bytes], tag: str) -> str:
    """``base`` with ``certificates`` added to its system trust store, the Debian way."""
    files = {
        **{f"{name}.crt": pem for name, pem in certificates.items()},
        "Dockerfile": (
            f"FROM {base}\nCOPY *.crt /usr/local/share/ca-certificates/\nRUN update-ca-certificates >/dev/null\n"
        ).encode(),
    }
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True, forcerm=True)
    return tag


def trusted_store(client: docker.DockerClient, base: str, index: PackageIndex) -> str:
    bundle = host_ca_bundle()
    certificates = {"warp-test-index": index.ca.ca.read_bytes(), **({"this-machine": bundle.read_bytes()} if bundle else {})}
    return trusting_image(client, base, certificates, f"warptasks-test/trusting-{abs(hash(base)) % 10**6}:{TAG}")


def write_project(root: Path, index: PackageIndex) -> None:
    write_tree(
        root,
        {
            "wsgi.py": APP,
            "requirements.txt": f"--index-url {index.url}\n{index.package}=={index.version}\n",
            ".s2i/environment": "WARP_SERVER=gunicorn\n",
        },
    )


def without_ca_settings(index_access: IndexAccess) -> dict[str, str]:
    """How this machine reaches the package index, minus any CA setting: the image's own store must do."""
    return {name: value for name, value in index_access.environment.items() if name not in CA_VARIABLES}


def test_uv_in_the_image_trusts_a_ca_that_only_the_base_images_store_holds(
    docker_client: docker.DockerClient, python_image: str, index_access: IndexAccess, index: PackageIndex, project_dir: Path
) -> None:
    base = trusted_store(docker_client, python_image, index)
    tag = f"warp-test-trust:{TAG}"
    write_project(project_dir, index)
    settings = [f"{name}={value}" for name, value in sorted(without_ca_settings(index_access).items())]
    try:
        done = warp(
            "s2i",
            "--tag",
            tag,
            "--base-image",
            base,
            "--no-pull",
            "--installer",
            "uv",
            "--network",
            "host",
            *[arg for setting in settings for arg in ("--build-env", setting)],
            cwd=project_dir,
        )
        assert "UnknownIssuer" not in done.stdout + done.stderr
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
        assert "[deps 2/" in done.stdout and "virtualenv" in done.stdout
        with serving(docker_client, tag) as app:
            assert get(app.url + "/") == (200, b"from the test index")
    finally:
        remove_image(docker_client, tag)
        remove_image(docker_client, base)


def test_the_builders_assemble_trusts_the_builder_images_store(
    docker_client: docker.DockerClient, index_access: IndexAccess, index: PackageIndex, project_dir: Path
) -> None:
    base = trusted_store(docker_client, server_base(docker_client), index)
    builder, tag = f"warp-test-trust-builder:{TAG}", f"warp-test-trust-s2i:{TAG}"
    write_project(project_dir, index)
    spec = detect_app(project_dir)
    options = ImageOptions(base_image=base, network="host", build_env=without_ca_settings(index_access), pull=False, quiet=True)
    try:
        build_builder_image(spec, replace(options, tag=builder), client=docker_client)
        result = s2i_build(spec, replace(options, tag=tag), builder, client=docker_client)
        assert "UnknownIssuer" not in result.log and "virtualenv" in result.log
        with serving(docker_client, tag) as app:
            assert get(app.url + "/") == (200, b"from the test index")
    finally:
        for name in (tag, builder, base):
            remove_image(docker_client, name)
