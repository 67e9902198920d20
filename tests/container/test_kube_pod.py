"""warp kube's pod spec matches the image: the Django example, run on the engine exactly as the manifests say.

No cluster runs here (none can be installed on this machine): this is the next best proof. The container gets the
Deployment's command and args, the environment the ConfigMap and Secret give, a random uid in group 0 (as OpenShift's
restricted SCC assigns), a read-only root with a tmpfs for each emptyDir the spec mounts, and the CPU and memory
limits; then the probes are performed as the kubelet performs them (HTTP GET of the path and port within the
timeout, success below 400; exec probes by docker exec, success on exit 0). They pass; with the app broken, they fail.
The migration Job's command, run the same way, migrates.
"""

from __future__ import annotations

import random
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.cases import Exe, write_tree
from tests.container.image_helpers import TAG, build_options, free_port, remove_image, server_base
from tests.harness.images import IndexAccess
from warptasks.detect import detect_app
from warptasks.image.build import build_app_image
from warptasks.kube import KubeOptions, plan_manifests

pytestmark = pytest.mark.container

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mysite"
# The example keeps SQLite beside the code; a read-only root needs it elsewhere: the pod's writable /tmp.
SQLITE_FROM_ENV = "\nDATABASES['default']['NAME'] = os.environ.get('SQLITE_PATH', DATABASES['default']['NAME'])\n"
# Alive while /tmp/broken is absent: the test breaks the app by creating it.
ALIVE_HOOK = "#!/bin/sh\ntest ! -e /tmp/broken\n"
SECRET = "kube-test-secret-value"


@pytest.fixture(scope="module")
def django_image(
    docker_client: docker.DockerClient, index_access: IndexAccess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("kube") / "mysite"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("db.sqlite3", "__pycache__", ".warp"))
    root.chmod(0o755)
    settings = root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + SQLITE_FROM_ENV)
    write_tree(root, {".s2i/action_hooks/alive": Exe(ALIVE_HOOK)})
    tag = f"warp-test-kube-django:{TAG}"
    build_app_image(detect_app(root), build_options(index_access, tag, server_base(docker_client)), client=docker_client)
    yield tag, root
    remove_image(docker_client, tag)


def _manifests(root: Path, image: str, port: int) -> dict[str, dict[str, Any]]:
    options = KubeOptions(
        image=image,
        port=port,
        cpu="1",
        config={"SQLITE_PATH": "/tmp/db.sqlite3"},
        env_file_values={"DJANGO_SECRET_KEY": SECRET},
    )
    return {m.body["kind"] + ("" if m.body["kind"] != "Deployment" else "/" + m.body["metadata"]["name"]): m.body
            for m in plan_manifests(detect_app(root), options)}  # fmt: skip


def _cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _bytes(quantity: str) -> int:
    return int(quantity.removesuffix("Mi")) * 1024 * 1024


def _run_as_pod(client: docker.DockerClient, manifests: dict[str, dict[str, Any]], pod: dict[str, Any]) -> Any:
    """``pod``'s one container on the engine as the kubelet would start it (host network: the pod's own port)."""
    (container,) = pod["containers"]
    environment: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            environment.update(manifests["ConfigMap"]["data"])
        else:
            environment.update(manifests["Secret"]["stringData"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} == set(mounts) and all("emptyDir" in v for v in pod["volumes"])
    security = container["securityContext"]
    assert security["runAsNonRoot"] and "runAsUser" not in security and "runAsUser" not in pod["securityContext"]
    limits = container["resources"]["limits"]
    uid = random.randint(1_000_000_000, 1_999_999_999)  # an OpenShift-style uid the image never heard of
    return client.containers.run(
        container["image"],
        container["args"],
        entrypoint=container["command"],
        detach=True,
        network_mode="host",
        environment=environment,
        user=f"{uid}:0",
        read_only=security["readOnlyRootFilesystem"],
        tmpfs={path: "exec,mode=1777" for path in mounts.values()},  # emptyDir: writable by any uid, exec allowed
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        nano_cpus=int(_cpus(limits["cpu"]) * 1e9),
        mem_limit=_bytes(limits["memory"]),
        labels={"warptasks-test": "image"},
    )


def _probe(container: Any, probe: dict[str, Any], port_names: dict[str, int]) -> bool:
    """One probe, as the kubelet performs it."""
    if "exec" in probe:
        code, _output = container.exec_run(probe["exec"]["command"])
        return bool(code == 0)
    get = probe["httpGet"]
    port = port_names.get(get["port"], get["port"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{get['path']}", headers=headers)
    try:
        with opener.open(request, timeout=probe["timeoutSeconds"]) as response:
            return bool(200 <= response.status < 400)
    except urllib.error.HTTPError as error:
        return 200 <= error.code < 400
    except OSError:
        return False


def _passes_within(container: Any, probe: dict[str, Any], ports: dict[str, int], tries: int) -> bool:
    for _ in range(tries):
        if _probe(container, probe, ports):
            return True
        container.reload()
        if container.status == "exited":
            return False
        time.sleep(1)
    return False


def test_the_django_pod_spec_runs_the_image_and_its_probes_pass_then_fail_when_broken(
    docker_client: docker.DockerClient, django_image: tuple[str, Path]
) -> None:
    image, root = django_image
    port = free_port()
    manifests = _manifests(root, image, port)
    web = manifests["Deployment/mysite-web"]["spec"]["template"]["spec"]
    container_spec = web["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container_spec["ports"]}
    assert "httpGet" in container_spec["readinessProbe"] and "exec" in container_spec["livenessProbe"]
    container = _run_as_pod(docker_client, manifests, web)
    try:
        startup = container_spec["startupProbe"]
        started = _passes_within(container, startup, ports, min(startup["failureThreshold"], 90))
        assert started, container.logs().decode(errors="replace")[-3000:]
        assert _probe(container, container_spec["readinessProbe"], ports)
        assert _probe(container, container_spec["livenessProbe"], ports)
        # The pod is what the spec says: the random uid in group 0, the limits' workers, the Secret's value.
        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert int(uid) >= 1_000_000_000 and container.exec_run(["id", "-g"]).output.decode().strip() == "0"
        assert container.exec_run(["touch", "/opt/app-root/src/x"]).exit_code != 0  # the root is read-only
        assert SECRET.encode() in container.exec_run(["cat", "/proc/1/environ"]).output
        logs = container.logs().decode(errors="replace")
        assert "1 process(es)" in logs or "workers:" in logs, logs[-2000:]

        container.exec_run(["touch", "/tmp/broken"])  # the alive hook says the app is dead
        assert not _probe(container, container_spec["livenessProbe"], ports)
        container.exec_run(["rm", "/tmp/broken"])
        assert _probe(container, container_spec["livenessProbe"], ports)
        container.pause()  # a hung app: the GET gets no answer within the probe's timeout
        try:
            began = time.monotonic()
            assert not _probe(container, container_spec["readinessProbe"], ports)
            assert time.monotonic() - began <= container_spec["readinessProbe"]["timeoutSeconds"] + 2
        finally:
            container.unpause()
        assert _passes_within(container, container_spec["readinessProbe"], ports, 10)

        began = time.monotonic()
        container.stop(timeout=web["terminationGracePeriodSeconds"])
        assert time.monotonic() - began < web["terminationGracePeriodSeconds"], "the server did not stop within the grace period"
    finally:
        container.remove(force=True)


def test_the_migrate_jobs_command_migrates_in_the_image(
    docker_client: docker.DockerClient, django_image: tuple[str, Path]
) -> None:
    image, root = django_image
    manifests = _manifests(root, image, free_port())
    job = manifests["Job"]
    assert job["metadata"]["name"].startswith("mysite-migrate-")
    container = _run_as_pod(docker_client, manifests, job["spec"]["template"]["spec"])
    try:
        code = container.wait(timeout=120)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, logs[-3000:]
    assert "Applying auth.0001_initial... OK" in logs, logs[-3000:]
