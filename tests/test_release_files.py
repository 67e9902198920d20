"""What a release and an image context hold: gitignore semantics, git's view, and secrets kept out (pure tier)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.cases import as_git_repo, write_tree
from tests.harness.system import require_command
from warptasks.errors import ConfigError
from warptasks.image import dockerfile as img
from warptasks.remote.upload import archive, source_files

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
RSA_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----\n"


def shipped(root: Path) -> list[str]:
    return source_files(root).files


# Each row: a tree, and what a release of it holds. In git the tree is committed with `git add -A` (git applies
# the .gitignore files), outside git warptasks applies them itself: both must ship the same files.
TABLE = {
    "nested .gitignore applies below its own folder": (
        {
            "wsgi.py": "",
            "a.tmp": "",
            "local.cfg": "",
            "sub/.gitignore": "*.tmp\n/local.cfg\n",
            "sub/a.tmp": "",
            "sub/deep/b.tmp": "",
            "sub/local.cfg": "",
            "sub/deep/local.cfg": "",
        },
        ["a.tmp", "local.cfg", "sub/.gitignore", "sub/deep/local.cfg", "wsgi.py"],
    ),
    "** patterns match at any depth": (
        {
            "wsgi.py": "",
            ".gitignore": "**/build/\n**/logs/*.log\n",
            "build/x.py": "",
            "pkg/build/y.py": "",
            "pkg/logs/a.log": "",
            "logs/b.log": "",
            "pkg/logs/keep.txt": "",
        },
        [".gitignore", "pkg/logs/keep.txt", "wsgi.py"],
    ),
    "a negation brings a file back, but not from an ignored folder": (
        {
            "wsgi.py": "",
            ".gitignore": "*.log\n!important.log\nmedia/\n!media/keep.png\n",
            "debug.log": "",
            "important.log": "",
            "sub/important.log": "",
            "media/keep.png": "",
            "media/up.png": "",
        },
        [".gitignore", "important.log", "sub/important.log", "wsgi.py"],
    ),
    "an anchored pattern matches at its folder only": (
        {"wsgi.py": "", ".gitignore": "/config.py\n", "config.py": "", "pkg/config.py": ""},
        [".gitignore", "pkg/config.py", "wsgi.py"],
    ),
    "a deeper .gitignore wins over its parent's": (
        {"wsgi.py": "", ".gitignore": "*.log\n", "sub/.gitignore": "!keep.log\n", "sub/keep.log": "", "sub/x.log": ""},
        [".gitignore", "sub/.gitignore", "sub/keep.log", "wsgi.py"],
    ),
    "secrets stay home, public halves and certificates travel": (
        {
            "wsgi.py": "",
            "id_rsa": KEY,
            "id_rsa.pub": "ssh-ed25519 AAAA",
            "deploy/id_ed25519": KEY,
            "deploy/id_ecdsa_ci": KEY,
            "id_dsa": KEY,
            ".env": "S=1",
            "config/.env.production": "S=1",
            ".envrc": "export S=1",
            ".netrc": "machine x",
            ".pypirc": "[pypi]",
            ".pgpass": "*:*:*:*:pw",
            ".git-credentials": "https://u:p@x",
            ".aws/credentials": "[default]",
            ".aws/config": "[default]",
            ".ssh/config": "Host x",
            ".docker/config.json": "{}",
            "tls/site.key": RSA_KEY,
            "tls/site.pem": CERT,
            "tls/site.crt": CERT,
            "keys/deploy": RSA_KEY,
            "docs/keys.md": "never paste a -----BEGIN RSA PRIVATE KEY----- here",
        },
        ["docs/keys.md", "id_rsa.pub", "tls/site.crt", "wsgi.py"],
    ),
    ".warpignore excludes, and its negation ships a secret on purpose": (
        {
            "wsgi.py": "",
            ".warpignore": "docs/\n!certs/ca.pem\n",
            "docs/index.md": "",
            "certs/ca.pem": CERT,
            "certs/other.pem": CERT,
        },
        [".warpignore", "certs/ca.pem", "wsgi.py"],
    ),
    "environments, caches and VCS data never travel": (
        {"wsgi.py": "", "pkg/__pycache__/a.cpython-311.pyc": "", "pkg/b.pyc": "", ".venv/bin/python": "", ".warp/x": ""},
        ["wsgi.py"],
    ),
}


@pytest.mark.parametrize("in_git", [False, True], ids=["folder", "git"])
@pytest.mark.parametrize(("tree", "expected"), TABLE.values(), ids=TABLE.keys())
def test_a_release_holds_what_the_ignore_rules_and_the_secret_list_leave(
    tmp_path: Path, tree: dict[str, str], expected: list[str], in_git: bool
) -> None:
    write_tree(tmp_path, tree)
    if in_git:
        as_git_repo(tmp_path)
    assert shipped(tmp_path) == expected


def test_in_git_only_tracked_files_travel_even_ignored_ones_that_git_tracks(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "untracked.py": "", ".gitignore": "*.cfg\n", "forced.cfg": "", "other.cfg": ""})
    as_git_repo(tmp_path, add=("-f", "wsgi.py", ".gitignore", "forced.cfg"))
    assert shipped(tmp_path) == [".gitignore", "forced.cfg", "wsgi.py"]


def test_a_tracked_secret_is_named_with_how_to_ship_it(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "deploy/id_rsa": KEY, "keys/server": RSA_KEY})
    as_git_repo(tmp_path)
    selection = source_files(tmp_path)
    assert selection.files == ["wsgi.py"]
    assert len(selection.withheld) == 2
    named = dict(note.split(" ", 1) for note in selection.withheld)
    assert "looks like a secret" in named["deploy/id_rsa"] and "!deploy/id_rsa line in .warpignore" in named["deploy/id_rsa"]
    assert "private key" in named["keys/server"]


def test_a_repository_another_account_owns_is_an_error_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "untracked.py": ""})
    as_git_repo(tmp_path, add=("wsgi.py",))
    # git's own test switch: it treats the repository as another account's (what a root deploy of a user's clone meets).
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    with pytest.raises(ConfigError, match="dubious ownership") as raised:
        source_files(tmp_path)
    assert "safe.directory" in raised.value.hint and "owner" in raised.value.hint


def test_a_damaged_repository_is_an_error_not_a_walk_of_the_folder(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "untracked.py": ""})
    as_git_repo(tmp_path, add=("wsgi.py",))
    (tmp_path / ".git" / "HEAD").write_text("garbage\n")
    with pytest.raises(ConfigError, match="git cannot list its files") as raised:
        source_files(tmp_path)
    assert "repair" in raised.value.hint


def test_a_project_git_tracks_nothing_of_is_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "site/wsgi.py": ""})
    as_git_repo(tmp_path, add=("wsgi.py",))
    with pytest.raises(ConfigError, match="tracks no file"):
        source_files(tmp_path / "site")


def test_the_archive_never_widens_modes_nor_lets_group_or_others_write(tmp_path: Path) -> None:
    write_tree(tmp_path, {"open.py": "", "private.py": "", "shared.py": "", "run.sh": "", "setuid": "", "pkg/a.py": ""})
    for name, mode in {"open.py": 0o644, "private.py": 0o600, "shared.py": 0o666, "run.sh": 0o775, "setuid": 0o4755}.items():
        (tmp_path / name).chmod(mode)
    (tmp_path / "pkg").chmod(0o770)
    files = ["open.py", "pkg/a.py", "private.py", "run.sh", "setuid", "shared.py"]
    with tarfile.open(fileobj=io.BytesIO(archive(tmp_path, files))) as tar:
        modes = {m.name: (oct(m.mode), m.uid) for m in tar.getmembers()}
    assert modes == {
        "open.py": ("0o644", 0),
        "pkg": ("0o750", 0),
        "pkg/a.py": ("0o644", 0),
        "private.py": ("0o600", 0),
        "run.sh": ("0o755", 0),
        "setuid": ("0o755", 0),
        "shared.py": ("0o644", 0),
    }


@pytest.mark.integration  # a real rsync, installed by the test setup when missing
def test_rsync_keeps_modes_without_widening_them(tmp_path: Path) -> None:
    from warptasks.remote.upload import rsync_step

    require_command("rsync", "rsync")
    source, target = tmp_path / "src", tmp_path / "dst"
    write_tree(source, {"private.py": "", "shared.py": "", "pkg/a.py": ""})
    (source / "private.py").chmod(0o600)
    (source / "shared.py").chmod(0o666)
    (source / "pkg").chmod(0o777)
    (tmp_path / "list").write_bytes(b"pkg/a.py\0private.py\0shared.py\0")
    step = rsync_step(str(source), str(tmp_path / "list"), "unused", "unused", "ssh", None)
    argv = [*step.argv[:-2], f"{source}/", f"{target}/"]
    subprocess.run([a for a in argv if a not in ("-e", "ssh")], check=True)
    modes = {p.relative_to(target).as_posix(): oct(p.stat().st_mode & 0o7777) for p in target.rglob("*")}
    assert modes == {"pkg": "0o755", "pkg/a.py": "0o644", "private.py": "0o600", "shared.py": "0o644"}


def test_images_use_the_same_secret_list(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "wsgi.py": "",
            ".git-credentials": "x",
            ".pgpass": "x",
            ".docker/config.json": "{}",
            ".docker/Dockerfile.dev": "FROM x",
            "keys/deploy": KEY,
            "id_ed25519.pub": "ssh-ed25519 AAAA",
            "certs/ca.pem": CERT,
            ".dockerignore": "!certs/ca.pem\n",
        },
    )
    assert img.context_files(tmp_path) == [".docker/Dockerfile.dev", "certs/ca.pem", "id_ed25519.pub", "wsgi.py"]
