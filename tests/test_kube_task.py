"""``warp kube`` as a user runs it: the command writes the manifests and says how to apply them, or refuses clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke import Context
from invoke.exceptions import Exit

from tests.cases import WSGI, django_tree, write_tree
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
