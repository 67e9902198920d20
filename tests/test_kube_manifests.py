"""warp kube's manifests, for a table of projects, validated offline against the Kubernetes OpenAPI schemas.

kubernetes-validate bundles the JSON schemas of each Kubernetes version (no network): every manifest is checked,
strictly (no field the schema lacks), against the oldest and newest versions it has that we support. OpenShift's
Route, ImageStream and BuildConfig have no schema on PyPI: they get a strict check of the fields we emit against
the OpenShift API reference (route.openshift.io/v1, image.openshift.io/v1, build.openshift.io/v1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.cases import ASGI, FLASK_APP, WSGI, Exe, django_tree, write_tree
from warptasks.detect import detect_app
from warptasks.errors import ConfigError
from warptasks.image import dockerfile as img
from warptasks.kube import KubeOptions, plan_manifests, to_files, to_yaml
from warptasks.kube.manifests import _NAME, MEMORY_PER_PROCESS, WARP, MiB

KUBE_VERSIONS = ("1.29.0", "1.37.0")
IMAGE = "registry.example.com/shop/web:1.4"

PROJECTS: dict[str, dict[str, Any]] = {
    "django": django_tree("STATIC_URL = '/static/'\n") | {"requirements.txt": "django\n"},
    "flask-wsgi": {"wsgi.py": FLASK_APP.replace("app = ", "application = "), "requirements.txt": "flask\n"},
    "asgi": {"asgi.py": ASGI, "requirements.txt": "uvicorn\n"},
    "wsgi-hooks": {
        "wsgi.py": WSGI,
        "requirements.txt": "six\n",
        ".s2i/action_hooks/ready": Exe("#!/bin/sh\nexit 0\n"),
        ".s2i/action_hooks/alive": Exe("#!/bin/sh\nexit 0\n"),
        ".s2i/action_hooks/migrate": Exe("#!/bin/sh\nexit 0\n"),
    },
    "procfile-workers": {
        "wsgi.py": WSGI,
        "requirements.txt": "six\n",
        "Procfile": "worker: python worker.py\nclock: python clock.py\nrelease: python migrate.py\n",
    },
}
OPTIONS = {
    "plain": KubeOptions(image=IMAGE),
    "everything": KubeOptions(
        image=IMAGE,
        domain="shop.example.com",
        autoscale=(2, 10),
        cpu="2",
        env_file_values={"SECRET_KEY": "s3cr3t-value", "DATABASE_URL": "postgres://u:p@db/shop"},
        config={"DJANGO_DEBUG": "0"},
        ingress_class="nginx",
    ),
    "tls-secret": KubeOptions(image=IMAGE, domain="shop.example.com", tls_secret="shop-tls", cpu="500m", memory="1Gi"),
    "openshift": KubeOptions(
        image=IMAGE,
        domain="shop.example.com",
        openshift=True,
        builder="warp-builder",
        git="https://git.example.com/shop.git",
        git_ref="main",
        git_secret="shop-git",
    ),
}
OPENSHIFT_KINDS = {"Route", "ImageStream", "BuildConfig"}


def _manifests(tmp_path: Path, project: str, options: KubeOptions) -> list[dict[str, Any]]:
    root = write_tree(tmp_path / project, PROJECTS[project])
    return [m.body for m in plan_manifests(detect_app(str(root)), options)]


def _by_kind(bodies: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [b for b in bodies if b["kind"] == kind]


def _strict(value: Any, allowed: Any, where: str) -> None:
    """``value`` has only the fields ``allowed`` names, of its types: the structural check for OpenShift's kinds."""
    if isinstance(allowed, dict):
        assert isinstance(value, dict), f"{where}: not an object"
        unknown = set(value) - set(allowed)
        assert not unknown, f"{where}: fields not in the API reference: {sorted(unknown)}"
        for key, item in value.items():
            _strict(item, allowed[key], f"{where}.{key}")
    elif isinstance(allowed, list):
        assert isinstance(value, list), f"{where}: not a list"
        for number, item in enumerate(value):
            _strict(item, allowed[0], f"{where}[{number}]")
    elif isinstance(allowed, set):
        assert value in allowed, f"{where}: {value!r} is not one of {sorted(allowed)}"
    else:
        assert isinstance(value, allowed), f"{where}: {value!r} is not {allowed.__name__}"


META = {
    "name": str,
    "labels": {"app.kubernetes.io/name": str, "app.kubernetes.io/component": str, "app.kubernetes.io/part-of": str},
}
# The fields of route.openshift.io/v1 Route, image.openshift.io/v1 ImageStream and build.openshift.io/v1 BuildConfig
# that warp kube may emit, with their types and enumerations, from OpenShift's API reference.
OPENSHIFT_FIELDS: dict[str, Any] = {
    "Route": {
        "apiVersion": {"route.openshift.io/v1"},
        "kind": {"Route"},
        "metadata": META,
        "spec": {
            "host": str,
            "to": {"kind": {"Service"}, "name": str, "weight": int},
            "port": {"targetPort": str},
            "tls": {
                "termination": {"edge", "passthrough", "reencrypt"},
                "insecureEdgeTerminationPolicy": {"Allow", "None", "Redirect"},
            },
            "wildcardPolicy": {"None", "Subdomain"},
        },
    },
    "ImageStream": {
        "apiVersion": {"image.openshift.io/v1"},
        "kind": {"ImageStream"},
        "metadata": META,
        "spec": {"lookupPolicy": {"local": bool}},
    },
    "BuildConfig": {
        "apiVersion": {"build.openshift.io/v1"},
        "kind": {"BuildConfig"},
        "metadata": META,
        "spec": {
            "source": {"type": {"Git"}, "git": {"uri": str, "ref": str}, "sourceSecret": {"name": str}},
            "strategy": {
                "type": {"Source"},
                "sourceStrategy": {"from": {"kind": {"ImageStreamTag", "DockerImage"}, "name": str}},
            },
            "output": {"to": {"kind": {"ImageStreamTag"}, "name": str}},
            "triggers": [
                {
                    "type": {"ConfigChange", "ImageChange", "GitHub", "GitLab", "Generic", "Bitbucket"},
                    "imageChange": {},
                    "github": {"secretReference": {"name": str}},
                    "gitlab": {"secretReference": {"name": str}},
                }
            ],
        },
    },
}


@pytest.mark.parametrize("options_name", sorted(OPTIONS))
@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_every_manifest_is_valid_for_two_kubernetes_versions(tmp_path: Path, project: str, options_name: str) -> None:
    bodies = _manifests(tmp_path, project, OPTIONS[options_name])
    for body in bodies:
        if body["kind"] in OPENSHIFT_KINDS:
            _strict(body, OPENSHIFT_FIELDS[body["kind"]], body["kind"])
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(body, version, strict=True)


def test_the_validator_refuses_a_wrong_manifest() -> None:
    """The check can fail: an unknown field and a wrong type are caught, offline."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two", "selector": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[0], strict=True)
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "x"}, "spec": {"hosts": "a"}}
    with pytest.raises(AssertionError):
        _strict(route, OPENSHIFT_FIELDS["Route"], "Route")


def test_the_web_container_runs_the_images_entry_point(tmp_path: Path) -> None:
    (web,) = _by_kind(_manifests(tmp_path, "django", OPTIONS["plain"]), "Deployment")
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [f"{img.WARP_HOME}/bin/dumb-init", "--"]
    assert container["args"] == [WARP, "start", "web"]
    assert container["ports"][0]["containerPort"] == img.PORT
    assert "runAsUser" not in pod["securityContext"] and "runAsUser" not in container["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounted == {entry.split(":")[0] for entry in img.WRITABLE_PATHS}
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_workers_get_their_own_deployment_that_never_runs_twice(tmp_path: Path) -> None:
    bodies = _manifests(tmp_path, "procfile-workers", OPTIONS["plain"])
    names = {d["metadata"]["name"]: d for d in _by_kind(bodies, "Deployment")}
    assert set(names) == {"procfile-workers-web", "procfile-workers-worker", "procfile-workers-clock"}
    clock = names["procfile-workers-clock"]
    assert clock["spec"]["replicas"] == 1 and clock["spec"]["strategy"] == {"type": "Recreate"}
    assert clock["spec"]["template"]["spec"]["containers"][0]["args"] == [WARP, "start", "clock"]
    assert "livenessProbe" not in clock["spec"]["template"]["spec"]["containers"][0]


def test_hooks_become_exec_probes_and_without_them_http(tmp_path: Path) -> None:
    hooked = _by_kind(_manifests(tmp_path, "wsgi-hooks", OPTIONS["plain"]), "Deployment")[0]
    container = hooked["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"] == [WARP, "health", "ready"]
    assert container["livenessProbe"]["exec"]["command"] == [WARP, "health", "alive"]
    plain = _by_kind(_manifests(tmp_path, "flask-wsgi", OPTIONS["plain"]), "Deployment")[0]
    probe = plain["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"] == {"path": "/", "port": "http"}


def test_memory_fits_the_processes_the_cpu_limit_starts(tmp_path: Path) -> None:
    web = _by_kind(_manifests(tmp_path, "django", OPTIONS["everything"]), "Deployment")[0]
    limits = web["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == "2"
    assert int(limits["memory"].removesuffix("Mi")) * MiB >= 2 * MEMORY_PER_PROCESS
    assert web["metadata"]["annotations"]["warptasks.io/workers"].startswith("2 process(es)")


def test_secret_values_never_reach_the_configmap_and_the_secret_file_is_private(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "p", PROJECTS["django"])
    manifests = plan_manifests(detect_app(str(root)), OPTIONS["everything"])
    (config,) = [m.body for m in manifests if m.body["kind"] == "ConfigMap"]
    assert "s3cr3t-value" not in yaml.safe_dump(config) and "SECRET_KEY" not in config["data"]
    written = to_files(manifests, tmp_path / "out")
    secret = tmp_path / "out" / "secret.yaml"
    assert secret.stat().st_mode & 0o077 == 0
    assert (tmp_path / "out" / "configmap.yaml").stat().st_mode & 0o077 == 0o044
    kustomization = yaml.safe_load((tmp_path / "out" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in written if p.name != "kustomization.yaml")


def test_the_migrate_job_is_named_by_the_image(tmp_path: Path) -> None:
    first = _by_kind(_manifests(tmp_path / "a", "django", KubeOptions(image=IMAGE)), "Job")[0]
    again = _by_kind(_manifests(tmp_path / "b", "django", KubeOptions(image=IMAGE)), "Job")[0]
    other = _by_kind(_manifests(tmp_path / "c", "django", KubeOptions(image=IMAGE.replace("1.4", "1.5"))), "Job")[0]
    assert first["metadata"]["name"] == again["metadata"]["name"] != other["metadata"]["name"]
    assert first["metadata"]["name"].startswith("django-migrate-1-4-")
    assert first["spec"]["template"]["spec"]["containers"][0]["args"] == [WARP, "migrate"]
    assert not _by_kind(_manifests(tmp_path / "d", "flask-wsgi", KubeOptions(image=IMAGE)), "Job")


def test_tls_by_cert_manager_or_an_existing_secret(tmp_path: Path) -> None:
    managed = _by_kind(_manifests(tmp_path / "a", "django", OPTIONS["everything"]), "Ingress")[0]
    assert managed["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    given = _by_kind(_manifests(tmp_path / "b", "django", OPTIONS["tls-secret"]), "Ingress")[0]
    assert "annotations" not in given["metadata"] and given["spec"]["tls"][0]["secretName"] == "shop-tls"
    openshift = _manifests(tmp_path / "c", "django", OPTIONS["openshift"])
    assert not _by_kind(openshift, "Ingress") and _by_kind(openshift, "Route")
    build = _by_kind(openshift, "BuildConfig")[0]
    assert build["spec"]["strategy"]["sourceStrategy"]["from"] == {"kind": "ImageStreamTag", "name": "warp-builder:latest"}


@pytest.mark.parametrize(
    "options",
    [
        KubeOptions(image=IMAGE, cpu="lots"),
        KubeOptions(image=IMAGE, memory="1GB"),
        KubeOptions(image=IMAGE, autoscale=(5, 2)),
        KubeOptions(image=IMAGE, builder="warp-builder"),
        KubeOptions(image=IMAGE, name="Not_A_Name"),
    ],
)
def test_wrong_options_are_refused_with_what_to_do(tmp_path: Path, options: KubeOptions) -> None:
    root = write_tree(tmp_path / "p", PROJECTS["flask-wsgi"])
    with pytest.raises(ConfigError) as refused:
        plan_manifests(detect_app(str(root)), options)
    assert refused.value.hint


def test_the_port_is_the_same_in_the_configmap_the_container_and_the_probes(tmp_path: Path) -> None:
    bodies = _manifests(tmp_path, "flask-wsgi", KubeOptions(image=IMAGE, port=9000))
    (config,) = _by_kind(bodies, "ConfigMap")
    container = _by_kind(bodies, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert config["data"]["PORT"] == "9000"
    assert container["ports"][0] == {"name": "http", "containerPort": 9000, "protocol": "TCP"}
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    with pytest.raises(ConfigError):
        _manifests(tmp_path / "b", "flask-wsgi", KubeOptions(image=IMAGE, config={"PORT": "1"}))


def test_the_openshift_build_flow_runs_the_image_stream_s_latest_build(tmp_path: Path) -> None:
    options = KubeOptions(image="", openshift=True, builder="warp-builder", git="https://git.example.com/shop.git")
    bodies = _manifests(tmp_path, "django", options)
    web = _by_kind(bodies, "Deployment")[0]
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "django:latest"
    (trigger,) = json.loads(web["metadata"]["annotations"]["image.openshift.io/triggers"])
    assert trigger["from"] == {"kind": "ImageStreamTag", "name": "django:latest"}
    assert _by_kind(bodies, "BuildConfig")[0]["spec"]["output"]["to"]["name"] == "django:latest"
    for body in bodies:
        if body["kind"] not in OPENSHIFT_KINDS:
            kubernetes_validate.validate(body, KUBE_VERSIONS[-1], strict=True)
    with pytest.raises(ConfigError):
        _manifests(tmp_path / "b", "django", KubeOptions(image=""))


def test_the_yaml_has_no_aliases_and_reads_back_as_the_manifest(tmp_path: Path) -> None:
    for body in _manifests(tmp_path, "procfile-workers", OPTIONS["everything"]):
        text = to_yaml(body)
        assert "&id" not in text and "*id" not in text
        assert yaml.safe_load(text) == body


def test_an_autoscaled_deployment_leaves_its_replicas_to_the_autoscaler(tmp_path: Path) -> None:
    bodies = _manifests(tmp_path, "django", OPTIONS["everything"])
    web = next(d for d in _by_kind(bodies, "Deployment") if d["metadata"]["name"] == "django-web")
    assert "replicas" not in web["spec"]
    (hpa,) = _by_kind(bodies, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)


def test_http_probes_ask_for_the_domain_so_allowed_hosts_lets_them_in(tmp_path: Path) -> None:
    web = _by_kind(_manifests(tmp_path, "django", OPTIONS["everything"]), "Deployment")[0]
    probe = web["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["httpHeaders"] == [{"name": "Host", "value": "shop.example.com"}]


@pytest.mark.parametrize("kind", ["Worker", "high_priority", "-x", "x-", "a" * 59])
def test_a_process_type_that_cannot_name_a_container_is_refused(tmp_path: Path, kind: str) -> None:
    """Procfile types allow A-Z, _ and leading '-', and any length: the manifests were written, and the API refused them."""
    root = write_tree(tmp_path / "shop", {"wsgi.py": WSGI, "requirements.txt": "six\n", "Procfile": f"{kind}: python w.py\n"})
    with pytest.raises(ConfigError, match="cannot name a Kubernetes container") as refused:
        plan_manifests(detect_app(str(root)), KubeOptions(image=IMAGE))
    assert "58 characters at most" in (refused.value.hint or "")


def test_the_longest_process_type_that_fits_is_taken(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "shop", {"wsgi.py": WSGI, "requirements.txt": "six\n", "Procfile": f"{'a' * 58}: python w.py\n"})
    names = [m.body["metadata"]["name"] for m in plan_manifests(detect_app(str(root)), KubeOptions(image=IMAGE))]
    assert f"shop-{'a' * 58}" in names


def test_the_migration_job_name_fits_a_label_value_with_the_longest_app_name(tmp_path: Path) -> None:
    """A Job's name is its pods' job-name label (63 at most): a 40-character --name and a long tag made 78."""
    root = write_tree(tmp_path / "shop", PROJECTS["django"])
    image = "registry.example.com/shop/web:release-2026-12-01-long-tag"
    for name in ("a" * 40, "shop"):
        jobs = [
            m.body for m in plan_manifests(detect_app(str(root)), KubeOptions(image=image, name=name)) if m.body["kind"] == "Job"
        ]
        job_name = jobs[0]["metadata"]["name"]
        assert len(job_name) <= 63 and job_name.startswith(f"{name}-migrate-"), job_name
        assert not job_name.endswith("-") and "--" not in job_name
    assert job_name.startswith("shop-migrate-release-2026-12-01-l-"), job_name  # short names: as before


def test_a_procfile_release_line_alone_gets_the_migration_job(tmp_path: Path) -> None:
    """The release: line runs once per deploy on hosts; warp kube wrote no Job for it and never ran it."""
    files = {"wsgi.py": WSGI, "requirements.txt": "six\n", "Procfile": "release: alembic upgrade head\n"}
    root = write_tree(tmp_path / "shop", files)
    jobs = [m.body for m in plan_manifests(detect_app(str(root)), KubeOptions(image=IMAGE)) if m.body["kind"] == "Job"]
    assert len(jobs) == 1 and jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"] == [WARP, "migrate"]


def _named(port: int | str, container: dict[str, Any]) -> int:
    """A probe's or Service's port as the kubelet resolves it: a name is the container's port of that name."""
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == port))


def _served_ports(bodies: list[dict[str, Any]]) -> set[int]:
    """Every port the manifests send the web pods' traffic and probes to, and the PORT the ConfigMap gives them."""
    web = next(d for d in _by_kind(bodies, "Deployment") if d["metadata"]["name"].endswith("-web"))
    container = web["spec"]["template"]["spec"]["containers"][0]
    ports = {p["containerPort"] for p in container["ports"]}
    ports |= {_named(p["targetPort"], container) for p in _by_kind(bodies, "Service")[0]["spec"]["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if "httpGet" in container[probe]:
            ports.add(_named(container[probe]["httpGet"]["port"], container))
    ports.add(int(_by_kind(bodies, "ConfigMap")[0]["data"]["PORT"]))
    return ports


# environment files -> the port the image built from the tree serves on (and so the pods)
PORT_PROJECTS = [
    pytest.param({}, 8080, id="no-environment-file"),
    pytest.param({".s2i/environment": "PORT=9000\n"}, 9000, id="s2i-environment"),
    pytest.param({".warpdrive/environment": "PORT=8123\n"}, 8123, id="warpdrive-environment"),
    pytest.param({".s2i/environment": "PORT=9000\n", ".warpdrive/environment": "PORT=9001\n"}, 9001, id="both-later-wins"),
    pytest.param({".s2i/environment": "PORT=\nOTHER=1\n"}, 8080, id="blank-port"),
    pytest.param({".s2i/environment": "export PORT='9002'\n", "Procfile": "worker: python w.py\n"}, 9002, id="procfile"),
]


@pytest.mark.parametrize(("files", "port"), PORT_PROJECTS)
def test_the_pods_port_is_the_one_the_image_of_the_same_tree_exposes(tmp_path: Path, files: dict[str, str], port: int) -> None:
    """warp kube defaulted to 8080 while warp s2i's image of a project with PORT=9000 exposed and served 9000."""
    root = write_tree(tmp_path / "shop", {"wsgi.py": WSGI, "requirements.txt": "six\n", **files})
    image_spec = detect_app(str(root))  # as warp s2i detects: without the shell's environment
    # The image's port, as warptasks.image.build puts it into the ImageBuild: its EXPOSE and expose-services label.
    build = img.ImageBuild("python:3.11-slim", (), "/usr/local/bin/python3.11", "w.whl", {}, port=img.app_port(image_spec))
    (exposed,) = re.findall(r"^EXPOSE (\d+)$", img.runtime_dockerfile(build), re.MULTILINE)
    label = img.image_labels(image_spec, "mod_wsgi", None, builder=False)["io.openshift.expose-services"]
    assert int(exposed) == port and label == f"{port}:http"
    # A shell that exports PORT changes neither the image nor the pods (warp s2i and warp kube never read it).
    for environ in (None, {"PORT": "7000"}):
        kube_spec = detect_app(str(root), environ=environ)
        assert _served_ports([m.body for m in plan_manifests(kube_spec, KubeOptions(image=IMAGE))]) == {port}
    # --port still wins, everywhere.
    given = [m.body for m in plan_manifests(image_spec, KubeOptions(image=IMAGE, port=9100))]
    assert _served_ports(given) == {9100}


CREDENTIAL_URLS = [
    "https://shop:s3cr3t-token@git.example.com/shop.git",
    "https://s3cr3t-token@git.example.com/shop.git",
    "HTTP://oauth2:s3cr3t-token@git.example.com/shop.git",
    "https://user:p@ss:s3cr3t-token@git.example.com/shop.git",
    "https://git.example.com/shop.git?private_token=s3cr3t-token",
    "ssh://git:s3cr3t-token@git.example.com/shop.git",
    "git:s3cr3t-token@git.example.com:shop/shop.git",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_a_git_url_carrying_credentials_is_refused_without_showing_them(tmp_path: Path, url: str) -> None:
    """buildconfig.yaml (0644, meant for version control) and the cluster's BuildConfig held the token."""
    options = KubeOptions(image="", openshift=True, builder="warp-builder", git=url)
    with pytest.raises(ConfigError, match="carries credentials") as refused:
        _manifests(tmp_path, "django", options)
    assert "s3cr3t" not in str(refused.value) + (refused.value.hint or "")
    assert "git.example.com" in str(refused.value) and "--git-secret NAME" in (refused.value.hint or "")


@pytest.mark.parametrize(
    "url",
    ["https://git.example.com/shop.git", "ssh://git@git.example.com:2222/shop.git", "git@github.com:shop/shop.git"],
)
def test_a_git_url_without_credentials_and_the_clone_secret_make_the_build_config(tmp_path: Path, url: str) -> None:
    options = KubeOptions(image="", openshift=True, builder="warp-builder", git=url, git_secret="shop-git")
    (build,) = _by_kind(_manifests(tmp_path, "django", options), "BuildConfig")
    assert build["spec"]["source"]["git"] == {"uri": url}
    assert build["spec"]["source"]["sourceSecret"] == {"name": "shop-git"}
    _strict(build, OPENSHIFT_FIELDS["BuildConfig"], "BuildConfig")
    without = KubeOptions(image="", openshift=True, builder="warp-builder", git=url)
    assert "sourceSecret" not in _by_kind(_manifests(tmp_path / "b", "django", without), "BuildConfig")[0]["spec"]["source"]


@pytest.mark.parametrize(
    "options",
    [
        KubeOptions(image=IMAGE, git_secret="shop-git"),
        KubeOptions(image="", openshift=True, builder="b", git="https://git.example.com/s.git", git_secret="Shop_Git"),
    ],
)
def test_a_git_secret_needs_the_build_config_and_a_secret_name(tmp_path: Path, options: KubeOptions) -> None:
    with pytest.raises(ConfigError) as refused:
        _manifests(tmp_path, "django", options)
    assert refused.value.hint


def _selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("options_name", ["plain", "everything"])
def test_no_selector_selects_the_migration_job_s_pods_whatever_the_process_types(tmp_path: Path, options_name: str) -> None:
    """A Procfile type named migrate had the Job's labels: its Deployment's selector took the Job's pods as its own."""
    types = ["migrate", "job", "migrate-job", "migration", "config", "build", "worker", "web-migrate"]
    procfile = "web: gunicorn wsgi\n" + "".join(f"{kind}: python {kind}.py\n" for kind in types) + "release: python r.py\n"
    root = write_tree(tmp_path / "shop", PROJECTS["django"] | {"Procfile": procfile})
    bodies = [m.body for m in plan_manifests(detect_app(str(root)), OPTIONS[options_name])]
    (job,) = _by_kind(bodies, "Job")
    job_pods = job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["labels"] == job_pods and not _NAME.match(job_pods["app.kubernetes.io/component"])
    deployments = {d["metadata"]["name"]: d for d in _by_kind(bodies, "Deployment")}
    assert len(deployments) == len(types) + 1
    selectors = {f"Deployment/{n}": d["spec"]["selector"]["matchLabels"] for n, d in deployments.items()}
    selectors |= {f"{b['kind']}/{b['metadata']['name']}": b["spec"]["selector"] for b in _by_kind(bodies, "Service")}
    selectors |= {
        f"PodDisruptionBudget/{b['metadata']['name']}": b["spec"]["selector"]["matchLabels"]
        for b in _by_kind(bodies, "PodDisruptionBudget")
    }
    for hpa in _by_kind(bodies, "HorizontalPodAutoscaler"):  # an autoscaler counts the pods of the Deployment it scales
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        selectors[f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"] = target["spec"]["selector"]["matchLabels"]
    assert len(selectors) == len(deployments) + 2 + (options_name == "everything")
    for where, selector in selectors.items():
        assert selector and not _selects(selector, job_pods), f"{where} selects the migration Job's pods"
    # And each Deployment's pods are its own alone; the Service and the budget take the web pods only.
    for name, deployment in deployments.items():
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        chosen = {where for where, selector in selectors.items() if _selects(selector, pods)}
        web = name == "shop-web"
        expected = {f"Deployment/{name}"} | ({"Service/shop", "PodDisruptionBudget/shop-web"} if web else set())
        assert chosen - {"HorizontalPodAutoscaler/shop-web"} == expected, name
