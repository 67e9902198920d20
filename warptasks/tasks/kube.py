"""``warp kube``: Kubernetes (or OpenShift) manifests for the app, from the same detection build and start use.

Thin: parses options, calls :mod:`warptasks.kube`, prints what it wrote and the order to apply it in.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..errors import ConfigError
from ..run import local as actions
from ..settings import Settings
from .flags import warp_task
from .report import OPTION_HELP, reported

KUBE_HELP = {
    "project": OPTION_HELP["project"],
    "server": OPTION_HELP["server"],
    "image": "the image the pods run, as pushed by warp s2i --push (registry.example.com/shop/web:1.4); required "
    "unless --builder makes OpenShift build it (then: the ImageStream's latest build)",
    "out": "the folder to write the manifests and kustomization.yaml into (default deploy/k8s)",
    "name": "the name of the objects (default: the project folder's name)",
    "domain": "serve the app at this host name: an Ingress (a Route with --openshift) with TLS",
    "tls-secret": "an existing TLS secret for --domain (default: cert-manager makes one, see --cluster-issuer)",
    "cluster-issuer": "cert-manager's ClusterIssuer for --domain's certificate (default letsencrypt)",
    "ingress-class": "the Ingress's ingressClassName (default: the cluster's default class)",
    "openshift": "an OpenShift Route instead of an Ingress; with --builder and --git, an ImageStream and BuildConfig",
    "builder": "with --openshift: the warp builder image (an ImageStreamTag name, or an image) the BuildConfig builds with",
    "git": "with --openshift --builder: the repository the BuildConfig builds",
    "git-secret": "with --git: the source clone secret (basic-auth or ssh-auth) the BuildConfig clones with; a --git "
    "URL carrying a password or token is refused",
    "git-ref": "the branch or tag of --git (default: the repository's default branch)",
    "replicas": "web pods (default 2; workers run one pod each)",
    "autoscale": "MIN:MAX web pods for a HorizontalPodAutoscaler on CPU, e.g. 2:10",
    "cpu": "each pod's CPU request and limit (default 1): the server runs one process per CPU",
    "memory": "each pod's memory request and limit, e.g. 512Mi (default: 128Mi per process plus 128Mi)",
    "env-file": "an environment file (NAME=VALUE lines) made into a Secret the pods read; its values never go "
    "into the ConfigMap; the Secret's file is written 0600: keep it out of version control",
    "config": "NAME=VALUE for the ConfigMap (non-secret settings); repeatable",
    "port": "the port the server listens on in the pod (default: the image's, as warp s2i builds it from this tree: "
    "PORT in .s2i/environment, else 8080)",
    "health-path": "the path HTTP probes GET when the app has no ready/alive hook (default /)",
}


def _pairs(values: list[str] | None) -> dict[str, str]:
    found = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--config {item!r} is not NAME=VALUE", "write it as --config DJANGO_DEBUG=0")
        # A ConfigMap key the API refuses ("A B", "x: y"), or that envFrom skips: an environment name, as env files take.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(
                f"--config {name!r} is not an environment variable name", "use letters, digits and _, not first a digit"
            )
        found[name] = value
    return found


def _autoscale(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit():
        raise ConfigError(f"--autoscale {text!r} is not MIN:MAX", "e.g. --autoscale 2:10")
    return int(low), int(high)


def _env_file(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    from ..scripts import envfile

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --env-file {path}: {exc.strerror}", "give the path of a NAME=VALUE file") from None
    try:
        return dict(envfile.parse(text, path))
    except envfile.EnvFileError as exc:
        # The line is not quoted (as warp deploy's --env-file): "SECRET_KEY s3cr3t", a typo, holds the secret.
        raise ConfigError(
            f"--env-file {path}, line {exc.number} is not NAME=VALUE", "each line is NAME=VALUE, or a # comment"
        ) from None


@warp_task(help=KUBE_HELP, iterable=["config"])
def kube(
    c,
    image=None,
    project=None,
    server=None,
    out="deploy/k8s",
    name="",
    domain=None,
    tls_secret=None,
    cluster_issuer="letsencrypt",
    ingress_class=None,
    openshift=False,
    builder=None,
    git=None,
    git_ref=None,
    git_secret=None,
    replicas=2,
    autoscale=None,
    cpu="1",
    memory=None,
    env_file=None,
    config=None,
    health_path="/",
    port=None,
):
    """Write Kubernetes manifests (OpenShift's with --openshift) that run the image warp s2i built, as warp start would."""
    with reported():
        from ..kube import KubeOptions, plan_manifests, to_files
        from ..kube.manifests import pod_port, probe_note

        opts = Settings.resolve(c.config, project=project, server=server)
        spec = actions.detect(opts)
        options = KubeOptions(
            image=image or "",
            name=name,
            domain=domain,
            tls_secret=tls_secret,
            cluster_issuer=cluster_issuer,
            ingress_class=ingress_class,
            openshift=openshift,
            builder=builder,
            git=git,
            git_ref=git_ref,
            git_secret=git_secret,
            replicas=int(replicas),
            autoscale=_autoscale(autoscale),
            cpu=str(cpu),
            memory=memory,
            env_file_values=_env_file(env_file),
            config=_pairs(config),
            health_path=health_path,
            port=None if port is None else int(port),
        )
        manifests = plan_manifests(spec, options)
        for path in to_files(manifests, Path(out)):
            print(f"wrote {path}")
        print("port: {} ({})".format(*pod_port(spec, options)))
        note = probe_note(spec, options)
        if note:
            print(note)
        tool = "oc" if openshift else "kubectl"
        if options.env_file_values:
            secret = Path(out) / "secret.yaml"
            print(f"note: {secret} holds the environment file's values (mode 0600): keep it out of version control")
            print(
                f"note: apply server-side, as below: a client-side {tool} apply copies the Secret's values, in clear, "
                "into its kubectl.kubernetes.io/last-applied-configuration annotation"
            )
            # The API server keeps that annotation up to date on a server-side apply when the object has it already.
            env_secret = next(m.body["metadata"]["name"] for m in manifests if m.body["kind"] == "Secret")
            print(
                f"note: if secret/{env_secret} was ever applied client-side (without --server-side, as warp kube said to "
                "before), a server-side apply keeps its values in that annotation: remove it once with "
                f"{tool} annotate secret {env_secret} kubectl.kubernetes.io/last-applied-configuration-"
            )
        # Server-side apply keeps no last-applied copy of an object (the Secret's values were in its annotation). The
        # folder is quoted: the line is meant to be pasted into a shell.
        apply = f"{tool} apply --server-side -k {shlex.quote(str(out))}"
        if any(m.body["kind"] == "Job" for m in manifests):
            job = next(m.body["metadata"]["name"] for m in manifests if m.body["kind"] == "Job")
            print(
                f"apply: {apply}; the migration Job runs once per image: "
                f"{tool} wait --for=condition=complete job/{job} --timeout=10m, "
                "then the new Deployments roll out (their pods become ready only once the app answers)"
            )
        else:
            print(f"apply: {apply}")
