"""What an image may show of the build machine (pure tier): the source label, LABEL values, the runtime stage's history.

The engine's side of each (a real build): tests/container/test_image_secrets.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cases import WSGI, as_git_repo, write_tree
from tests.test_image_plan import image_build
from warptasks.errors import ConfigError
from warptasks.image import dockerfile as img
from warptasks.image.build import git_source, public_url

SECRET = "s3cr3t-T0KEN"


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        (f"https://user:{SECRET}@github.com/o/r.git", "https://github.com/o/r.git"),
        # The scheme is case-insensitive: git and curl take HTTPS:// as https://.
        (f"HTTPS://user:{SECRET}@github.com/o/r.git", "https://github.com/o/r.git"),
        # A password holding a raw "@": the userinfo ends at the last one.
        (f"https://user:p@{SECRET}@github.com/o/r.git", "https://github.com/o/r.git"),
        (f"https://github.com/o/r.git?access_token={SECRET}", "https://github.com/o/r.git"),
        (f"https://u:{SECRET}@h.example.com?x=1", "https://h.example.com"),
        (f"https://h.example.com/r#{SECRET}", "https://h.example.com/r"),
        (f"ssh://git:{SECRET}@host.example.com:22/r.git", "ssh://host.example.com:22/r.git"),
        (f"git+https://u:{SECRET}@h.example.com/x", "git+https://h.example.com/x"),
        ("git@github.com:o/r.git", "github.com:o/r.git"),
        (f"user:{SECRET}@host.example.com:path/r.git", "host.example.com:path/r.git"),
        ("/srv/git/secret-project.git", None),
        ("../r", None),
        ("file:///srv/git/r.git", None),
    ],
)
def test_the_source_label_never_holds_credentials_tokens_or_local_paths(url: str, public: str | None) -> None:
    assert public_url(url) == public


def test_the_origin_remote_is_read_and_cleaned(tmp_path: Path) -> None:
    root = as_git_repo(write_tree(tmp_path / "site", {"wsgi.py": WSGI}))
    origin = f"HTTPS://ci:{SECRET}@git.example.com/t/site.git"
    subprocess.run(["git", "-C", str(root), "remote", "add", "origin", origin], check=True)
    assert git_source(str(root)) == "https://git.example.com/t/site.git"


def test_label_values_are_literal_in_the_dockerfile() -> None:
    """The engine expands $NAME in a LABEL from the stage's ARGs: a value must never name a --build-env variable."""
    labels = {"org.opencontainers.image.title": "site${PIP_INDEX_URL}", "x": "a\\$b $HOME"}
    dockerfile = img.app_dockerfile(image_build(labels=labels, build_args=("PIP_INDEX_URL",)))
    line = next(line for line in dockerfile.splitlines() if line.startswith("LABEL "))
    assert 'org.opencontainers.image.title="site\\${PIP_INDEX_URL}"' in line
    assert 'x="a\\\\\\$b \\$HOME"' in line
    assert "$" not in line.replace("\\$", "")


@pytest.mark.parametrize("packages", [(), ("apache2-bin", "media-types")])
def test_the_runtime_stage_declares_no_build_argument(packages: tuple[str, ...]) -> None:
    """Every RUN after an ARG records the value in the history of the image that is pushed."""
    build = image_build(build_args=("PIP_INDEX_URL", "http_proxy"), runtime_packages=packages, extra_files=("/etc/x.pem",))
    dockerfile = img.app_dockerfile(build)
    runtime = dockerfile[dockerfile.rindex("\nFROM ") :]
    assert "ARG " not in runtime
    assert "warp/files" not in runtime  # the build's CA bundle (--ca-bundle) stays in the build stages
    assert "ARG PIP_INDEX_URL" in dockerfile[: dockerfile.rindex("\nFROM ")]  # the build stages still get them


@pytest.mark.parametrize("name", ["site:1\n", "team/site\n", "team/site:é"])
def test_a_name_with_a_trailing_newline_or_non_ascii_tag_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid image name"):
        img.parse_image_name(name)
