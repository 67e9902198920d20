"""``warp kube`` as a user runs it: the command writes the manifests and says how to apply them, or refuses clearly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke import Context
from invoke.exceptions import Exit

from tests.cases import WSGI, Exe, django_tree, write_tree
from warptasks import tasks
from warptasks.cli import program


def _warp(*argv: str) -> None:
    program.run(["warp", *argv], exit=False)


def test_warp_kube_writes_the_manifests_and_the_order_to_apply_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_tree(tmp_path / "shop", django_tree() | {"requirements.txt": "django\n"})
    env_file = tmp_path / "prod.env"
    env_file.write_text("DJANGO_SECRET_KEY='not-in-any-configmap'\n")
    out = tmp_path / "k8s"
    _warp("kube", "--project", str(project), "--image", "registry.example.com/shop/web:1.4", "--domain", "shop.example.com",
          "--out", str(out), "--env-file", str(env_file), "--autoscale", "2:10", "--config", "DJANGO_DEBUG=0")  # fmt: skip
    printed = capsys.readouterr().out
    # Server-side: a client-side apply copies the Secret's values into its last-applied-configuration annotation.
    assert f"apply: kubectl apply --server-side -k {out}; " in printed and "apply -k" not in printed
    assert "last-applied-configuration" in printed
    assert "kubectl wait --for=condition=complete job/shop-migrate-1-4-" in printed
    assert "not-in-any-configmap" not in printed
    files = {p.name for p in out.iterdir()}
    assert {"kustomization.yaml", "configmap.yaml", "secret.yaml", "migrate-job.yaml", "ingress.yaml", "hpa.yaml"} <= files
    assert yaml.safe_load((out / "secret.yaml").read_text())["stringData"] == {"DJANGO_SECRET_KEY": "not-in-any-configmap"}
    assert yaml.safe_load((out / "configmap.yaml").read_text())["data"] == {"DJANGO_DEBUG": "0", "PORT": "8080"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "needs the image"),
        (("--image", "x:1", "--autoscale", "ten"), "is not MIN:MAX"),
        (("--image", "x:1", "--env-file", "/nonexistent/prod.env"), "cannot read --env-file"),
        (("--image", "x:1", "--config", "NOEQUALS"), "is not NAME=VALUE"),
        (("--image", "x:1", "--config", "A B=1"), "is not an environment variable name"),
        (("--image", "x:1", "--config", "x: y=1"), "is not an environment variable name"),
        (("--image", "x:1", "--config", "<<=1"), "is not an environment variable name"),
        (("--image", "x:1", "--builder", "warp-builder"), "needs --openshift, --builder and --git"),
    ],
)
def test_warp_kube_refuses_with_what_to_do(tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    project = write_tree(tmp_path / "app", {"wsgi.py": WSGI})
    with pytest.raises(Exit) as exited:
        options: dict[str, Any] = dict(zip([a.lstrip("-").replace("-", "_") for a in argv[::2]], argv[1::2], strict=True))
        if "config" in options:
            options["config"] = [options["config"]]  # repeatable: a list, as invoke passes it
        tasks.ns["kube"](Context(), project=str(project), out=str(tmp_path / "out"), **options)
    assert exited.value.code == 1 and message in str(exited.value.message)
    assert not (tmp_path / "out").exists()


def test_warp_kube_help_has_long_options_only(capsys: pytest.CaptureFixture[str]) -> None:
    _warp("kube", "--help")
    shown = capsys.readouterr().out
    assert "--git-ref=STRING" in shown and "--=" not in shown and "--openshift" in shown


def _secret_project(tmp_path: Path, values: str) -> tuple[Path, Path]:
    project = write_tree(tmp_path / "app", {"wsgi.py": WSGI})
    env_file = tmp_path / "prod.env"
    env_file.write_text(values)
    return project, env_file


def test_warp_kube_never_writes_the_secret_through_a_planted_temporary_file(tmp_path: Path) -> None:
    """A repo shipping deploy/k8s/secret.yaml.tmp -> a public file got the secret written there, 0644, and linked."""
    project, env_file = _secret_project(tmp_path, "SECRET=topsecret\n")
    out = tmp_path / "k8s"
    out.mkdir()
    public = tmp_path / "public.txt"
    public.write_text("public\n")
    public.chmod(0o644)
    (out / "secret.yaml.tmp").symlink_to(public)
    (out / "configmap.yaml.tmp").write_text("left over\n")
    _warp("kube", "--project", str(project), "--image", "r/x:1", "--out", str(out), "--env-file", str(env_file))
    assert public.read_text() == "public\n"
    secret = out / "secret.yaml"
    assert not secret.is_symlink() and secret.stat().st_mode & 0o777 == 0o600
    assert "topsecret" in secret.read_text()
    assert (out / "configmap.yaml").stat().st_mode & 0o777 == 0o644


def test_warp_kube_secret_file_is_0600_even_over_a_left_over_0644_temporary(tmp_path: Path) -> None:
    project, env_file = _secret_project(tmp_path, "SECRET=topsecret\n")
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "secret.yaml.tmp").write_text("")
    (out / "secret.yaml.tmp").chmod(0o644)
    _warp("kube", "--project", str(project), "--image", "r/x:1", "--out", str(out), "--env-file", str(env_file))
    assert (out / "secret.yaml").stat().st_mode & 0o777 == 0o600
    assert not list(out.glob("*.tmp*")) or all("topsecret" not in p.read_text() for p in out.glob("*.tmp*"))


class _KubectlLoader(yaml.SafeLoader):
    """kubectl apply -f reads YAML 1.1 as go-yaml v2 does: y/n are booleans, and 1e3 (no dot) is a number."""

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


_KubectlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
_KubectlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"), list("-+.0123456789")
)


def test_warp_kube_secret_and_config_values_stay_strings_for_kubectl(tmp_path: Path) -> None:
    """`kubectl label --local -f secret.yaml` showed A: true, C: false, B: 1000 for the values y, n, 1e3 (kustomize: 1000)."""
    values = {"A": "y", "B": "1e3", "C": "n", "D": "0777", "E": "*ref", "F": "a: b", "G": "yes", "H": ".5", "I": "1E5"}
    values |= {"J": "-2e-3", "L": "~", "M": "Null", "N": "&anchor", "O": "!tag", "P": ""}
    project, env_file = _secret_project(tmp_path, "".join(f"{k}={v!r}\n" for k, v in values.items()))
    out = tmp_path / "k8s"
    _warp("kube", "--project", str(project), "--image", "r/x:1", "--out", str(out), "--env-file", str(env_file),
          "--config", "FLAG=y", "--config", "RATE=1e3")  # fmt: skip
    assert yaml.load((out / "secret.yaml").read_text(), Loader=_KubectlLoader)["stringData"] == values
    assert yaml.load((out / "configmap.yaml").read_text(), Loader=_KubectlLoader)["data"] == {
        "FLAG": "y",
        "RATE": "1e3",
        "PORT": "8080",
    }


@pytest.mark.parametrize("line", ["SECRET_KEY s3cr3t-value", "1SECRET=s3cr3t-value", "SE-CRET=s3cr3t-value"])
def test_warp_kube_env_file_errors_never_show_the_line(tmp_path: Path, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The error quoted the whole line, value and all, on stderr (CI logs): as warp deploy does, only its number."""
    project, env_file = _secret_project(tmp_path, f"OK=1\n{line}\n")
    _warp("kube", "--project", str(project), "--image", "r/x:1", "--out", str(tmp_path / "k8s"), "--env-file", str(env_file))
    printed = capsys.readouterr()
    assert "line 2 is not NAME=VALUE" in printed.err
    assert "s3cr3t" not in printed.out + printed.err
    assert not (tmp_path / "k8s").exists()


def test_warp_kube_serves_on_the_projects_port_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image of a project with PORT=9000 exposes and serves 9000: the ConfigMap, containerPort and probes said 8080."""
    project = write_tree(tmp_path / "app", {"wsgi.py": WSGI, ".s2i/environment": "PORT=9000\n"})
    monkeypatch.setenv("PORT", "7000")  # the shell's: the image never sees it, so neither do the pods
    out = tmp_path / "k8s"
    _warp("kube", "--project", str(project), "--image", "r/x:1", "--out", str(out))
    assert (
        "port: 9000 (PORT in .s2i/environment: the port the image warp s2i builds from this tree serves on)\n"
        in capsys.readouterr().out
    )
    assert yaml.safe_load((out / "configmap.yaml").read_text())["data"]["PORT"] == "9000"
    container = yaml.safe_load((out / "deployment-web.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9000
    _warp("kube", "--project", str(project), "--image", "r/x:1", "--out", str(out), "--port", "9100")
    assert "port: 9100 (--port)" in capsys.readouterr().out
    assert yaml.safe_load((out / "configmap.yaml").read_text())["data"]["PORT"] == "9100"


def test_warp_kube_refuses_a_git_url_with_a_token_and_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_tree(tmp_path / "app", {"wsgi.py": WSGI})
    out = tmp_path / "oc"
    base = ("kube", "--project", str(project), "--openshift", "--builder", "warp-builder", "--out", str(out))
    with pytest.raises(SystemExit) as exited:
        program.run(["warp", *base, "--git", "https://deploy:glpat-s3cr3t@git.example.com/shop.git"])
    printed = capsys.readouterr()
    assert exited.value.code == 1 and "--git-secret NAME" in printed.err
    assert "s3cr3t" not in printed.out + printed.err and not out.exists()
    _warp(*base, "--git", "https://git.example.com/shop.git", "--git-secret", "shop-git")
    assert f"apply: oc apply --server-side -k {out}\n" in capsys.readouterr().out
    source = yaml.safe_load((out / "buildconfig.yaml").read_text())["spec"]["source"]
    assert source == {"type": "Git", "git": {"uri": "https://git.example.com/shop.git"}, "sourceSecret": {"name": "shop-git"}}


def test_warp_kube_says_when_the_checkout_s_hooks_decide_the_probes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The probes exec the hooks of the image, chosen from the hooks of the checkout: the output did not say so."""
    hooked = write_tree(tmp_path / "hooked", {"wsgi.py": WSGI, ".s2i/action_hooks/alive": Exe("#!/bin/sh\nexit 0\n")})
    _warp("kube", "--project", str(hooked), "--image", "r/x:1", "--out", str(tmp_path / "a"), "--health-path", "/up")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("probes: ")]
    assert lines == [
        "probes: ready: HTTP GET /up, alive: warp health alive (.s2i/action_hooks/alive), from this checkout's hooks: "
        "the image must have the same ones (it has when warp s2i built it from this tree)"
    ]
    plain = write_tree(tmp_path / "plain", {"wsgi.py": WSGI})
    _warp("kube", "--project", str(plain), "--image", "r/x:1", "--out", str(tmp_path / "b"))
    assert "probes: " not in capsys.readouterr().out
