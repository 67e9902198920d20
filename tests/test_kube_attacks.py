"""``warp kube`` against a hostile project, a token in any spelling of --git, and a run cut off while writing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import yaml

from tests.cases import WSGI, write_tree
from warptasks.detect import detect_app
from warptasks.errors import ConfigError
from warptasks.kube import KubeOptions, plan_manifests, to_files
from warptasks.kube import manifests as kube
from warptasks.sourcefiles import image_files

IMAGE = "registry.example.com/shop/web:1.4"
TOKEN = "s3cr3t-token"


def _plan(tmp_path: Path, options: KubeOptions) -> list[kube.Manifest]:
    root = write_tree(tmp_path / "shop", {"wsgi.py": WSGI, "requirements.txt": "six\n"})
    return plan_manifests(detect_app(str(root)), options)


def _openshift(git: str, **more: str) -> KubeOptions:
    return KubeOptions(image="", openshift=True, builder="warp-builder", git=git, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        f"git+https://{TOKEN}@git.example.com/shop.git",  # a user in git+https is a token as much as in https
        f"GIT+HTTP://{TOKEN}@git.example.com/shop.git",
        f"ftp://{TOKEN}@git.example.com/shop.git",
        f"git://{TOKEN}@git.example.com/shop.git",
        f"ssh://git%3A{TOKEN}@git.example.com/shop.git",  # a percent-encoded ':' is still a password
        f"git%3A{TOKEN}@git.example.com:shop/shop.git",
    ],
)
def test_a_token_in_any_spelling_of_the_git_url_is_refused_without_showing_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _plan(tmp_path, _openshift(url))
    assert TOKEN not in str(refused.value) + (refused.value.hint or "")


@pytest.mark.parametrize(
    "url",
    [
        f" https://{TOKEN}@git.example.com/shop.git",  # a leading blank made the scheme " https"
        f"\thttps://{TOKEN}@git.example.com/shop.git",
        f"https://git.example.com/shop.git\nhttps://{TOKEN}@git.example.com/shop.git",  # only the first URL was read
        f"https://git.example.com/shop.git {TOKEN}",
        "https://git.example.com/shop.git\r",
        f"https:/{TOKEN}@git.example.com/shop.git",  # one slash: no "://", read as scp-like, yet curl reads a user
    ],
)
def test_a_git_url_that_is_not_one_url_is_refused_without_showing_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _plan(tmp_path, _openshift(url))
    assert TOKEN not in str(refused.value) + (refused.value.hint or "")
    assert "\n" not in refused.value.message and "\r" not in refused.value.message


@pytest.mark.parametrize(
    "url", ["ssh://git@git.example.com/shop.git", "git+ssh://git@[::1]:2222/shop.git", "git@github.com:shop/shop.git"]
)
def test_an_ssh_user_alone_is_still_a_user_name(tmp_path: Path, url: str) -> None:
    (build,) = [m.body for m in _plan(tmp_path, _openshift(url)) if m.body["kind"] == "BuildConfig"]
    assert build["spec"]["source"]["git"]["uri"] == url


def test_a_token_given_as_the_git_secret_is_not_echoed(tmp_path: Path) -> None:
    """--git-secret takes the Secret's name; a user who passes the token there must not see it in a CI log."""
    with pytest.raises(ConfigError) as refused:
        _plan(tmp_path, _openshift("https://git.example.com/shop.git", git_secret="ghp_S3cr3tT0ken"))
    assert "S3cr3t" not in str(refused.value) + (refused.value.hint or "")


def test_the_secret_file_written_in_the_project_never_goes_into_its_image(tmp_path: Path) -> None:
    """warp kube --env-file writes deploy/k8s/secret.yaml in the project; warp s2i of the same tree sent it."""
    options = KubeOptions(image=IMAGE, env_file_values={"SECRET_KEY": TOKEN})
    manifests = _plan(tmp_path, options)
    root = tmp_path / "shop"
    to_files(manifests, root / "deploy" / "k8s")
    selection = image_files(root)
    assert "deploy/k8s/secret.yaml" not in selection.files
    assert any(entry.startswith("deploy/k8s/secret.yaml") for entry in selection.withheld)
    assert "deploy/k8s/configmap.yaml" in selection.files


def test_an_environment_file_linked_out_of_the_project_is_refused_unshown(tmp_path: Path) -> None:
    """A cloned repository's .s2i/environment -> ~/.git-credentials: its first line was echoed in the parse error."""
    outside = tmp_path / "home" / ".git-credentials"
    outside.parent.mkdir()
    outside.write_text(f"https://shop:{TOKEN}@git.example.com\n")
    root = write_tree(tmp_path / "shop", {"wsgi.py": WSGI})
    (root / ".s2i").mkdir()
    (root / ".s2i" / "environment").symlink_to(outside)
    with pytest.raises(ConfigError) as refused:
        detect_app(str(root))
    assert TOKEN not in str(refused.value) + (refused.value.hint or "")
    assert "outside the project" in str(refused.value)


def _old_set(out: Path) -> dict[str, str]:
    out.mkdir(parents=True)
    old = {name: f"old: {name}\n" for name in ("configmap.yaml", "deployment-web.yaml", "kustomization.yaml")}
    for name, text in old.items():
        (out / name).write_text(text)
    return old


@pytest.mark.parametrize("stop", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_run_cut_off_while_writing_leaves_the_old_set_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: BaseException
) -> None:
    """Each file was replaced as soon as written: cut off at the third, the folder held a new ConfigMap (a new PORT)
    beside the old Deployment, which kubectl apply -k applies as one set."""
    manifests = _plan(tmp_path, KubeOptions(image=IMAGE, env_file_values={"SECRET_KEY": TOKEN}))
    out = tmp_path / "k8s"
    old = _old_set(out)
    real, calls = kube.to_yaml, []

    def failing(body: dict[str, object]) -> str:
        calls.append(body["kind"])
        if len(calls) == 3:
            raise stop
        return real(body)

    monkeypatch.setattr(kube, "to_yaml", failing)
    with pytest.raises(type(stop)):
        to_files(manifests, out)
    assert {p.name: p.read_text() for p in out.iterdir()} == old  # no new file, no temporary file, nothing replaced


def test_each_file_is_on_disk_before_it_replaces_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename without fsync can leave an empty file after a crash (the rename reaches the disk before the data)."""
    manifests = _plan(tmp_path, KubeOptions(image=IMAGE, env_file_values={"SECRET_KEY": TOKEN}))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    written = to_files(manifests, tmp_path / "k8s")
    assert len(synced) >= len(written)


def test_a_secret_file_is_never_readable_by_others_even_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = _plan(tmp_path, KubeOptions(image=IMAGE, env_file_values={"SECRET_KEY": TOKEN}))
    out = tmp_path / "k8s"
    modes: list[int] = []
    real = kube.to_yaml

    def looking(body: dict[str, object]) -> str:
        if body["kind"] == "Secret":
            modes.extend(p.stat().st_mode & 0o777 for p in out.glob(".secret.yaml.*"))
        return real(body)

    monkeypatch.setattr(kube, "to_yaml", looking)
    to_files(manifests, out)
    assert modes and all(mode == 0o600 for mode in modes)
    assert (out / "secret.yaml").stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load((out / "secret.yaml").read_text())["stringData"] == {"SECRET_KEY": TOKEN}


def test_warp_kube_says_how_to_drop_a_secret_s_old_client_side_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Secret once applied client-side keeps its last-applied-configuration annotation, and the API server keeps
    updating it on every server-side apply: the values stayed in clear there unless the annotation is removed."""
    from warptasks.cli import program

    project = write_tree(tmp_path / "shop", {"wsgi.py": WSGI, "requirements.txt": "six\n"})
    env_file = tmp_path / "prod.env"
    env_file.write_text(f"SECRET_KEY={TOKEN}\n")
    out = tmp_path / "k8s $(touch pwned)"
    program.run(["warp", "kube", "--project", str(project), "--image", IMAGE, "--out", str(out), "--env-file", str(env_file)],
                exit=False)  # fmt: skip
    printed = capsys.readouterr().out
    assert "kubectl annotate secret shop-env kubectl.kubernetes.io/last-applied-configuration-" in printed
    # The apply line is pasted into a shell: the folder is one quoted word, never a command.
    assert f"apply: kubectl apply --server-side -k '{out}'" in printed
    assert TOKEN not in printed


def test_a_repository_s_link_never_takes_the_default_out_folder_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone holding deploy -> ../other/deploy: warp kube, run in it, replaced the other app's manifests there and
    left its Secret's file beside them."""
    manifests = _plan(tmp_path, KubeOptions(image=IMAGE, env_file_values={"SECRET_KEY": TOKEN}))
    other = tmp_path / "other" / "deploy" / "k8s"
    other.mkdir(parents=True)
    (other / "kustomization.yaml").write_text("the other app's\n")
    (tmp_path / "shop" / "deploy").symlink_to("../other/deploy")
    monkeypatch.chdir(tmp_path / "shop")
    with pytest.raises(ConfigError, match="is a link") as refused:
        to_files(manifests, Path("deploy/k8s"))
    assert "absolute --out" in (refused.value.hint or "")
    assert [p.name for p in other.iterdir()] == ["kustomization.yaml"]
    assert (other / "kustomization.yaml").read_text() == "the other app's\n"
    # The folder itself, absolute, is the user's to choose.
    assert to_files(manifests, other) and (other / "secret.yaml").stat().st_mode & 0o777 == 0o600
