"""The manifests ``warp kube`` writes, as plain dicts: data in (the AppSpec, options), data out.

What the image is and does is read from :mod:`warptasks.image.dockerfile` (its entry point, user, port, writable
paths) and the sizing from :mod:`warptasks.plan.resources`, so a pod runs the image the way ``docker run`` of
``warp s2i`` does:

- the container's command is the image's entry point (dumb-init, PID 1) running ``warp start [TYPE]``;
- resources: a CPU limit of N runs N server processes (:func:`~warptasks.plan.resources.worker_capacity`), so the
  memory limit is at least N times :data:`~warptasks.plan.resources.MEMORY_PER_PROCESS`, plus headroom;
- probes: an exec of ``warp health ready|alive`` when the app has that hook, else an HTTP GET of the port;
- the root filesystem read-only, with an emptyDir for each path the image's writable-paths label names;
- no fixed uid (OpenShift's restricted SCC picks one, in group 0, which the image's files allow).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..detect import AppSpec
from ..detect.conventions import ENV_FILES
from ..errors import ConfigError
from ..image import dockerfile as img
from ..plan.resources import MEMORY_PER_PROCESS, MiB, Resources, worker_capacity
from ..servers import resolve_server, server

WARP = f"{img.WARP_HOME}/bin/warp"
ENTRY_POINT = [f"{img.WARP_HOME}/bin/dumb-init", "--"]
# Headroom above the workers' memory: the server's master process, the entry point, page cache of the app.
MEMORY_HEADROOM = 128 * MiB
# The image's HEALTHCHECK timeout: its entry point gives a hook 6 s, then says unhealthy.
PROBE_TIMEOUT = 8
PART_OF = "app.kubernetes.io/part-of"
LABEL = 63  # a DNS-1123 label's limit: a container's name, a label value
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # a Secret's name
# The migration Job's component label. Every selector (each Deployment's, the Service's, the budget's) requires the
# component of a process type: "web" or a Procfile type, which must match _NAME. This value cannot (it holds a dot),
# so no selector ever takes the Job's pods as its own, whatever the Procfile names its types (migrate, job...).
JOB_COMPONENT = "migrate.job"
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")


@dataclass(frozen=True)
class KubeOptions:
    """What ``warp kube`` was asked for; every default gives a manifest set that applies as it is."""

    image: str  # with builder: "" means the ImageStream's latest build (NAME:latest)
    name: str = ""  # default: from the project folder
    domain: str | None = None
    tls_secret: str | None = None  # an existing TLS secret; without it, cert-manager's issuer annotation
    cluster_issuer: str = "letsencrypt"
    ingress_class: str | None = None
    openshift: bool = False
    builder: str | None = None  # the warp builder image (ImageStreamTag name or image) for a BuildConfig
    git: str | None = None
    git_ref: str | None = None
    git_secret: str | None = None  # the BuildConfig's source clone secret (credentials never go into --git)
    replicas: int = 2
    autoscale: tuple[int, int] | None = None  # (min, max) replicas
    cpu: str = "1"
    memory: str | None = None  # default: what the CPU's processes need
    env_file_values: dict[str, str] = field(default_factory=dict)  # the --env-file's values: only ever in a Secret
    config: dict[str, str] = field(default_factory=dict)  # non-secret settings for the ConfigMap
    health_path: str = "/"
    # The port the server listens on in the pod (PORT in the ConfigMap; the image's entry point reads it). None: the
    # port the image built from the same tree serves on (see pod_port).
    port: int | None = None


@dataclass(frozen=True)
class Manifest:
    filename: str
    body: dict[str, Any]


def pod_port(spec: AppSpec, options: KubeOptions) -> tuple[int, str]:
    """The pod's port and why: ``--port``, else the port ``warp s2i`` builds the image of this tree to serve on (the
    project's ``PORT`` in its environment file, else 8080), so the pod, the image's EXPOSE and its label agree. Never
    the shell's ``PORT``: the image does not see it either."""
    if options.port is not None:
        return options.port, "--port"
    port, where = img.app_port_why(spec)
    if str(spec.environment.get("PORT") or "").strip():
        return port, f"{where}: the port the image warp s2i builds from this tree serves on"
    return port, f"the image's default: no PORT in {' or '.join(ENV_FILES)}; --port sets another"


def cpu_count(text: str) -> float:
    if not _CPU.match(text):
        raise ConfigError(f"--cpu {text!r} is not a CPU quantity", "write whole or fractional CPUs (1, 0.5) or millicores (500m)")
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(text: str) -> int:
    match = re.match(r"^(\d+)(Mi|Gi)$", text)
    if not match:
        raise ConfigError(f"--memory {text!r} is not a memory quantity", "write it in Mi or Gi, e.g. 512Mi or 1Gi")
    return int(match.group(1)) * (MiB if match.group(2) == "Mi" else 1024 * MiB)


def app_name(spec: AppSpec, name: str) -> str:
    chosen = name or re.sub(r"[^a-z0-9-]+", "-", Path(spec.root).name.lower()).strip("-")
    if not _NAME.match(chosen) or len(chosen) > 40:
        raise ConfigError(
            f"{chosen!r} cannot name Kubernetes objects", "pass --name with lowercase letters, digits and '-' (40 at most)"
        )
    return chosen


def image_suffix(image: str, room: int = 29) -> str:
    """A short, stable name part for ``image``, ``room`` characters at most (at least 8): the migration Job is one per
    image, so re-applying it is a no-op."""
    tag = image.rsplit("@", 1)[-1] if "@" in image else image.rsplit("/", 1)[-1].partition(":")[2]
    readable = re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-")[: min(20, room - 9)].strip("-")
    digest = hashlib.sha256(image.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def _writable_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An emptyDir per path of the image's writable-paths label (``:exec`` is docker's tmpfs option; emptyDir allows exec)."""
    volumes, mounts = [], []
    for number, entry in enumerate(img.WRITABLE_PATHS):
        path = entry.split(":", 1)[0]
        volumes.append({"name": f"writable-{number}", "emptyDir": {}})
        mounts.append({"name": f"writable-{number}", "mountPath": path})
    return volumes, mounts


def sizing(spec: AppSpec, options: KubeOptions) -> tuple[dict[str, Any], str]:
    """Requests and limits, and the processes x threads the image's entry point will start under them."""
    cpus = cpu_count(options.cpu)
    name, _why = resolve_server(spec)
    chosen = server(name)
    processes = max(1, math.ceil(cpus))
    memory = memory_bytes(options.memory) if options.memory else processes * MEMORY_PER_PROCESS + MEMORY_HEADROOM
    capacity = worker_capacity(Resources(cpus=cpus, memory=memory, why=""), chosen)
    quantity = f"{memory // MiB}Mi"
    resources = {"requests": {"cpu": options.cpu, "memory": quantity}, "limits": {"cpu": options.cpu, "memory": quantity}}
    return resources, f"{capacity.processes} process(es) x {capacity.threads} thread(s) of {name}: {capacity.why}"


def _probe(spec: AppSpec, hook: str, options: KubeOptions, **timing: int) -> dict[str, Any]:
    if hook in spec.hooks:
        action: dict[str, Any] = {"exec": {"command": [WARP, "health", hook]}}
    else:
        action = {"httpGet": {"path": options.health_path, "port": "http"}}
        if options.domain:  # the kubelet's Host is the pod's address, which Django's ALLOWED_HOSTS refuses (400: unready)
            action["httpGet"]["httpHeaders"] = [{"name": "Host", "value": options.domain}]
    return {**action, **timing}


def _probes(spec: AppSpec, options: KubeOptions) -> dict[str, Any]:
    """Startup allows a slow first start (migrations in the entry point's deploy hook); liveness restarts, readiness routes."""
    return {
        "startupProbe": _probe(spec, "ready", options, periodSeconds=5, timeoutSeconds=PROBE_TIMEOUT, failureThreshold=60),
        "readinessProbe": _probe(spec, "ready", options, periodSeconds=10, timeoutSeconds=PROBE_TIMEOUT, failureThreshold=3),
        "livenessProbe": _probe(spec, "alive", options, periodSeconds=10, timeoutSeconds=PROBE_TIMEOUT, failureThreshold=3),
    }


def probe_note(spec: AppSpec, options: KubeOptions) -> str | None:
    """One line when the checkout's ready/alive hooks decide the probes (None when no hook does): they are read here,
    not from the image, which has the same hooks only when it was built from the same tree."""
    if not any(hook in spec.hooks for hook in ("ready", "alive")):
        return None
    chosen = ", ".join(
        f"{hook}: warp health {hook} ({spec.hooks[hook]})" if hook in spec.hooks else f"{hook}: HTTP GET {options.health_path}"
        for hook in ("ready", "alive")
    )
    return (
        f"probes: {chosen}, from this checkout's hooks: the image must have the same ones "
        "(it has when warp s2i built it from this tree)"
    )


def _env_from(name: str, options: KubeOptions) -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = [{"configMapRef": {"name": f"{name}-config"}}]
    if options.env_file_values:
        sources.append({"secretRef": {"name": f"{name}-env"}})
    return sources


def security_context() -> dict[str, Any]:
    """No fixed uid: any uid in group 0 runs the image (its files are group 0 and group-writable), as OpenShift wants."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container(spec: AppSpec, options: KubeOptions, name: str, kind: str, resources: dict[str, Any]) -> dict[str, Any]:
    _volumes, mounts = _writable_volumes()
    body: dict[str, Any] = {
        "name": kind,
        "image": options.image,
        "command": list(ENTRY_POINT),
        "args": [WARP, "start", kind],
        "envFrom": _env_from(name, options),
        "resources": resources,
        "securityContext": security_context(),
        "volumeMounts": mounts,
    }
    if kind == "web":
        body["ports"] = [{"name": "http", "containerPort": options.port, "protocol": "TCP"}]
        body.update(_probes(spec, options))
    return body


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component, PART_OF: name}


def deployment(spec: AppSpec, options: KubeOptions, name: str, kind: str) -> dict[str, Any]:
    resources, workers = sizing(spec, options)
    volumes, _mounts = _writable_volumes()
    server_name, _why = resolve_server(spec)
    grace = math.ceil(server(server_name).stop_timeout) + 5  # the server's own graceful stop, then the entry point's exit
    selector = labels(name, kind)
    # Under an autoscaler the Deployment leaves replicas to it: re-applying must not undo its scaling.
    replicas = None if kind == "web" and options.autoscale else options.replicas if kind == "web" else 1
    annotations = {"warptasks.io/workers": workers}
    template: dict[str, Any] = {"labels": selector}
    if options.builder:
        # OpenShift rolls the Deployment out when a build pushes a new image to the ImageStreamTag, and resolves the
        # container's image through the ImageStream (its lookupPolicy is local).
        trigger = {
            "from": {"kind": "ImageStreamTag", "name": f"{name}:latest"},
            "fieldPath": f'spec.template.spec.containers[?(@.name=="{kind}")].image',
        }
        annotations["image.openshift.io/triggers"] = json.dumps([trigger])
        template["annotations"] = {"alpha.image.policy.openshift.io/resolve-names": "*"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-{kind}", "labels": selector, "annotations": annotations},
        "spec": {
            **({"replicas": replicas} if replicas is not None else {}),
            "selector": {"matchLabels": selector},
            # A worker type (a clock) must never run twice: replaced, not rolled.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
            if kind == "web"
            else {"type": "Recreate"},
            "template": {
                "metadata": template,
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [container(spec, options, name, kind, resources)],
                    "volumes": volumes,
                },
            },
        },
    }


def migrate_job(spec: AppSpec, options: KubeOptions, name: str) -> dict[str, Any] | None:
    """The migrate step (hook, or Django's migrate), then the Procfile's release: line, once per image: named by the
    image, so re-applying it is a no-op."""
    if "migrate" not in spec.hooks and not spec.django and spec.release_command is None:
        return None
    resources, _workers = sizing(spec, options)
    volumes, mounts = _writable_volumes()
    selector = labels(name, JOB_COMPONENT)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # The Job's name is its pods' job-name label: 63 characters at most, or the API refuses the Job.
        "metadata": {"name": f"{name}-migrate-{image_suffix(options.image, LABEL - len(name) - 9)}", "labels": selector},
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [
                        {
                            "name": "migrate",
                            "image": options.image,
                            "command": list(ENTRY_POINT),
                            "args": [WARP, "migrate"],
                            "envFrom": _env_from(name, options),
                            "resources": resources,
                            "securityContext": security_context(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(name, "web")},
        "spec": {
            "selector": labels(name, "web"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def ingress(options: KubeOptions, name: str) -> dict[str, Any]:
    assert options.domain
    annotations = {} if options.tls_secret else {"cert-manager.io/cluster-issuer": options.cluster_issuer}
    spec: dict[str, Any] = {
        "tls": [{"hosts": [options.domain], "secretName": options.tls_secret or f"{name}-tls"}],
        "rules": [
            {
                "host": options.domain,
                "http": {
                    "paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": name, "port": {"name": "http"}}}}
                    ]
                },
            }
        ],
    }
    if options.ingress_class:
        spec["ingressClassName"] = options.ingress_class
    metadata: dict[str, Any] = {"name": name, "labels": labels(name, "web")}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def route(options: KubeOptions, name: str) -> dict[str, Any]:
    """OpenShift's Route: edge TLS by the router's certificate (or cert-manager's, by annotation), HTTP redirected."""
    assert options.domain
    return {
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": {"name": name, "labels": labels(name, "web")},
        "spec": {
            "host": options.domain,
            "to": {"kind": "Service", "name": name, "weight": 100},
            "port": {"targetPort": "http"},
            "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
            "wildcardPolicy": "None",
        },
    }


def config_map(options: KubeOptions, name: str) -> dict[str, Any]:
    data = {**options.config, "PORT": str(options.port)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "labels": labels(name, "config")},
        "data": data,
    }


def secret(options: KubeOptions, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-env", "labels": labels(name, "config")},
        "type": "Opaque",
        "stringData": dict(options.env_file_values),
    }


def disruption_budget(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{name}-web", "labels": labels(name, "web")},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(name, "web")}},
    }


def autoscaler(options: KubeOptions, name: str) -> dict[str, Any]:
    assert options.autoscale
    low, high = options.autoscale
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{name}-web", "labels": labels(name, "web")},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-web"},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
            ],
        },
    }


def image_stream(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": name, "labels": labels(name, "build")},
        "spec": {"lookupPolicy": {"local": True}},
    }


# A URL's scheme (RFC 3986); the schemes whose user alone is a login name, never a secret (ssh's git@host).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
# What no repository URL holds, but a pasted one may: a blank, a newline, a second URL after it, a control character.
_NOT_ONE_URL = re.compile(r"[\s\x00-\x1f\x7f]")


def git_url_problem(url: str) -> str | None:
    """Why ``url`` is not one repository URL read the same way by every client, or None: whitespace or a control
    character (``" https://..."`` hid its scheme, a newline a second URL), or ``http(s):`` without ``//`` (curl still
    reads a user in ``https:/token@host``)."""
    if _NOT_ONE_URL.search(url):
        return "it holds whitespace or a control character"
    if re.match(r"(?i)^(git\+)?https?:(?!//)", url):
        return "its scheme is not followed by //"
    return None


def git_credentials(url: str) -> str | None:
    """What in ``url`` is (or may be) a credential, or None: a password (``https://user:token@host``, also ssh's and
    scp-like ``user:pass@host:path``, percent-encoded or not), any user in a URL whose scheme is not ssh's (a token is
    often the user: ``https://ghp_...@``, ``git+https://ghp_...@``), a query string (``?private_token=...``). ssh's
    ``git@host`` alone is a user name, not a secret."""
    from urllib.parse import unquote

    match = _SCHEME.match(url)
    if match:
        scheme, rest = match.group(1).lower(), url[match.end() :]
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        userinfo, at, _host = authority.rpartition("@")  # a password may hold "@": the userinfo ends at the last one
        if at and ":" in unquote(userinfo):
            return "a password or token after the user name"
        if at and scheme not in _SSH_SCHEMES:
            return "a user name, which is often a token"
        if "?" in rest[len(authority) :].split("#", 1)[0]:
            return "a query string, which may hold a token"
        return None
    head = url.split("/", 1)[0]  # scp-like [user@]host:path
    userinfo, at, _host = head.rpartition("@")
    return "a password or token after the user name" if at and ":" in unquote(userinfo) else None


def _public_git(url: str) -> str:
    """``url`` without its user, password and query, for an error message (``https://host/path``)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        path = re.split(r"[?#]", rest[len(authority) :], maxsplit=1)[0]
        return f"{scheme}://{authority.rpartition('@')[2]}{path}"
    head, slash, path = url.partition("/")
    return head.rpartition("@")[2] + slash + path


def build_config(options: KubeOptions, name: str) -> dict[str, Any]:
    """The seed's ``oc new-app builder~repo``: a Source (S2I) build with the warp builder, on a git push or ``oc start-build``."""
    assert options.builder and options.git
    source: dict[str, Any] = {"type": "Git", "git": {"uri": options.git}}
    if options.git_ref:
        source["git"]["ref"] = options.git_ref
    if options.git_secret:
        source["sourceSecret"] = {"name": options.git_secret}
    builder = options.builder
    from_ref = (
        {"kind": "ImageStreamTag", "name": builder if ":" in builder else f"{builder}:latest"}
        if "/" not in builder
        else {"kind": "DockerImage", "name": builder}
    )
    return {
        "apiVersion": "build.openshift.io/v1",
        "kind": "BuildConfig",
        "metadata": {"name": name, "labels": labels(name, "build")},
        "spec": {
            "source": source,
            "strategy": {"type": "Source", "sourceStrategy": {"from": from_ref}},
            "output": {"to": {"kind": "ImageStreamTag", "name": f"{name}:latest"}},
            "triggers": [
                {"type": "ConfigChange"},
                {"type": "ImageChange", "imageChange": {}},
                {"type": "GitLab", "gitlab": {"secretReference": {"name": f"{name}-webhook"}}},
                {"type": "GitHub", "github": {"secretReference": {"name": f"{name}-webhook"}}},
            ],
        },
    }


def plan_manifests(spec: AppSpec, options: KubeOptions) -> list[Manifest]:
    """Every manifest for ``spec``, in the order they are applied (configuration, the migration Job, the rest)."""
    name = app_name(spec, options.name)
    if options.port is not None and not 0 < options.port < 65536:
        raise ConfigError(f"--port {options.port} is not a port number", "give a port from 1 to 65535 (default: the image's)")
    options = replace(options, port=pod_port(spec, options)[0])
    if "PORT" in options.config:
        raise ConfigError("--config PORT=... would differ from the container's port", "use --port instead")
    if options.autoscale and not 1 <= options.autoscale[0] <= options.autoscale[1]:
        raise ConfigError(f"--autoscale {options.autoscale[0]}:{options.autoscale[1]} is not MIN:MAX", "e.g. --autoscale 2:10")
    if (options.builder or options.git or options.git_secret) and not (options.openshift and options.builder and options.git):
        raise ConfigError(
            "a BuildConfig needs --openshift, --builder and --git together", "e.g. --openshift --builder warp-builder --git URL"
        )
    problem = git_url_problem(options.git) if options.git else None
    if problem:
        # Not shown: what follows the blank or the newline may be the token.
        raise ConfigError(
            f"--git is not one repository URL ({problem}); it is not shown, as it may hold a token",
            "give one URL, such as https://host/path, ssh://git@host/path or git@host:path",
        )
    credentials = git_credentials(options.git) if options.git else None
    if options.git and credentials:
        # buildconfig.yaml is 0644 and meant for version control, and the BuildConfig is readable by anyone who may
        # read the namespace's builds: the credential would be in both. Never shown here either (CI logs).
        raise ConfigError(
            f"--git {_public_git(options.git)} carries credentials ({credentials}), which would be written into "
            "buildconfig.yaml and the cluster's BuildConfig",
            "give --git without them, and the credentials as a source clone secret in the namespace: --git-secret NAME "
            "(a kubernetes.io/basic-auth secret with username and password, or a kubernetes.io/ssh-auth one)",
        )
    if options.git_secret and (not _SUBDOMAIN.match(options.git_secret) or len(options.git_secret) > 253):
        # Not shown: a user who took --git-secret for the credential itself would see the token in a CI log.
        raise ConfigError(
            "--git-secret cannot name a Secret (it is not shown: it may be the token itself)",
            "give the name of the secret in the namespace that holds the credentials: lowercase letters, digits, '-' and '.'",
        )
    if not options.image:
        if not options.builder:
            raise ConfigError("warp kube needs the image the pods run", "pass --image, e.g. the --tag you gave warp s2i --push")
        options = replace(options, image=f"{name}:latest")
    for kind in spec.process_types:
        # The type names a container (a DNS-1123 label), the Deployment {name}-{kind} and its component label.
        if not _NAME.match(kind) or len(f"{name}-{kind}") > LABEL:
            raise ConfigError(
                f"the Procfile's process type {kind!r} cannot name a Kubernetes container and Deployment",
                f"rename it in the Procfile with lowercase letters, digits and '-', not at either end "
                f"({LABEL - len(name) - 1} characters at most with the name {name!r})",
            )
    found: list[Manifest] = [Manifest("configmap.yaml", config_map(options, name))]
    if options.env_file_values:
        found.append(Manifest("secret.yaml", secret(options, name)))
    job = migrate_job(spec, options, name)
    if job:
        found.append(Manifest("migrate-job.yaml", job))
    for kind in ("web", *spec.process_types):
        found.append(Manifest(f"deployment-{kind}.yaml", deployment(spec, options, name, kind)))
    found += [Manifest("service.yaml", service(name)), Manifest("pdb.yaml", disruption_budget(name))]
    if options.autoscale:
        found.append(Manifest("hpa.yaml", autoscaler(options, name)))
    if options.domain:
        found.append(
            Manifest("route.yaml", route(options, name))
            if options.openshift
            else Manifest("ingress.yaml", ingress(options, name))
        )
    if options.builder:
        found += [Manifest("imagestream.yaml", image_stream(name)), Manifest("buildconfig.yaml", build_config(options, name))]
    return found


def kustomization(manifests: Iterable[Manifest]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [m.filename for m in manifests],
    }


# Strings PyYAML writes plain but that kubectl's YAML (1.1 for apply -f: y/n are booleans) or kustomize's (1.2: 1e3
# is a number) reads as something else: a secret "y" would become true, "1e3" the number 1000. Always quoted.
_AMBIGUOUS = re.compile(r"[-+]?[.0-9].*|[yYnN]|~|(?i:yes|no|on|off|true|false|null)", re.DOTALL)


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people to read and diff: a dict used twice (labels, selectors) is written twice, never as an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if _AMBIGUOUS.fullmatch(data) else None)


_Dumper.add_representer(str, _string)


def to_yaml(body: dict[str, Any]) -> str:
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=130)


def _refuse_a_linked_folder(out: Path) -> None:
    """A relative ``--out`` (the default, deploy/k8s) must not pass through a link: a cloned repository that holds
    ``deploy -> ../other-app/deploy`` (or anywhere) would have warp kube replace the files there, and put the Secret's
    file there. An absolute ``--out`` is the user's own path, links and all."""
    if out.is_absolute():
        return
    here = Path()
    for part in out.parts:
        here = here / part
        if part != ".." and here.is_symlink():
            raise ConfigError(
                f"--out {out}: {here} is a link (to {os.readlink(here)}), and warp kube does not write through one",
                f"pass the folder it links to as an absolute --out, or remove the link {here}",
            )


def to_files(manifests: list[Manifest], out: Path) -> list[Path]:
    """Write each manifest and the kustomization.yaml; a Secret's file is 0600 from its creation.

    Every file is first written whole to a new temporary file (``mkstemp``: a fresh name, O_EXCL, 0600, so a planted
    ``secret.yaml.tmp`` symlink or a left-over 0644 file is never written through) and flushed to disk; only when all
    are written are they renamed over the old ones, the kustomization.yaml last. A run cut off while writing (a full
    disk, Ctrl-C) leaves the old set whole, never a new ConfigMap beside an old Deployment, and no temporary file.
    """
    import tempfile

    _refuse_a_linked_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for manifest in [*manifests, Manifest("kustomization.yaml", kustomization(manifests))]:
            fd, temp = tempfile.mkstemp(dir=out, prefix=f".{manifest.filename}.", suffix=".tmp")
            staged.append((temp, out / manifest.filename))
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if manifest.body.get("kind") != "Secret":
                    os.fchmod(handle.fileno(), 0o644)
                handle.write(to_yaml(manifest.body))
                handle.flush()
                os.fsync(handle.fileno())  # on disk before the rename: a crash never leaves an empty manifest
        for temp, path in staged:
            os.replace(temp, path)
    except BaseException:
        for temp, _path in staged:
            Path(temp).unlink(missing_ok=True)
        raise
    return [path for _temp, path in staged]
