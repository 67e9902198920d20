"""Every dependency source installs for real, with uv and with pip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import warp, write

CHECK = "import six; print('six', six.__version__)"
WSGI = "def application(e, s):\n    s('200 OK', [])\n    return [b'ok']\n"

PIPFILE_LOCK = {
    "_meta": {
        "hash": {"sha256": "0" * 64},
        "pipfile-spec": 6,
        "requires": {},
        "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}],
    },
    "default": {"six": {"version": "==1.16.0"}},
    "develop": {"idna": {"version": "==3.7"}},
}

POETRY_PYPROJECT = """
[tool.poetry]
name = "poetryapp"
version = "0.1.0"
description = ""
authors = []
package-mode = false

[tool.poetry.dependencies]
python = ">=3.9"
six = "1.16.0"
"""

POETRY_LOCK = """
[[package]]
name = "six"
version = "1.16.0"
description = "Python 2 and 3 compatibility utilities"
optional = false
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*"
files = []

[metadata]
lock-version = "2.0"
python-versions = ">=3.9"
content-hash = "0000000000000000000000000000000000000000000000000000000000000000"
"""


def _six_version(project: Path) -> str:
    return warp(project, "exec", "--", "python", "-c", CHECK).stdout.strip()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_requirements_with_nested_includes(project_dir: Path, installer: str) -> None:
    write(
        project_dir,
        {
            "wsgi.py": WSGI,
            "requirements.txt": "-r requirements/base.txt\n",
            "requirements/base.txt": "-c ../constraints.txt\nsix\n",
            "constraints.txt": "six==1.16.0\n",
        },
    )
    warp(project_dir, "build", "--server", "waitress", "--installer", installer)
    assert _six_version(project_dir) == "six 1.16.0"
    (project_dir / "constraints.txt").write_text("six==1.15.0\n")
    rebuilt = warp(project_dir, "build", "--server", "waitress", "--installer", installer)
    assert "install requirements" in rebuilt.stdout  # an included file changed: new environment
    assert _six_version(project_dir) == "six 1.15.0"


def test_pyproject_without_build_system_installs_its_dependencies(project_dir: Path) -> None:
    write(
        project_dir,
        {"wsgi.py": WSGI, "pyproject.toml": '[project]\nname = "app"\nversion = "1"\ndependencies = ["six==1.16.0"]\n'},
    )
    warp(project_dir, "build", "--server", "waitress")
    assert _six_version(project_dir) == "six 1.16.0"


def test_pyproject_package_is_installed_and_its_code_reaches_the_environment_on_the_next_build(project_dir: Path) -> None:
    """Installed as the S2I builder does (pip install ., not editable): an image's environment holds the code itself.
    A code change reaches the environment with the next build: the same pyproject.toml names the same environment,
    whose twin gets the new code (in full the first time, then only the project), never the live one."""
    write(
        project_dir,
        {
            "pyproject.toml": (
                '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
                '[project]\nname = "mypkg"\nversion = "1"\ndependencies = ["six==1.16.0"]\n'
                '[tool.setuptools]\npackages = ["mypkg"]\n'
            ),
            "mypkg/__init__.py": "VALUE = 1\n",
            "wsgi.py": WSGI,
        },
    )
    warp(project_dir, "build", "--server", "waitress")
    assert _six_version(project_dir) == "six 1.16.0"
    value = ("exec", "--", "sh", "-c", "cd / && python -c 'import mypkg; print(mypkg.VALUE)'")
    assert warp(project_dir, *value).stdout.strip() == "1"
    for number in (2, 3):
        (project_dir / "mypkg/__init__.py").write_text(f"VALUE = {number}\n")
        rebuilt = warp(project_dir, "build", "--server", "waitress").stdout
        assert warp(project_dir, *value).stdout.strip() == str(number)
    assert "skip install dependencies" in rebuilt, rebuilt  # the twin has them: only the project is installed


def test_pipfile_lock_installs_default_packages_only(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": WSGI, "Pipfile.lock": json.dumps(PIPFILE_LOCK)})
    built = warp(project_dir, "build", "--server", "waitress")
    assert "micropipenv" in built.stdout
    assert _six_version(project_dir) == "six 1.16.0"
    dev = warp(project_dir, "exec", "--", "python", "-c", "import idna", check=False)
    assert dev.returncode != 0


def test_poetry_lock_installs(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": WSGI, "pyproject.toml": POETRY_PYPROJECT, "poetry.lock": POETRY_LOCK})
    warp(project_dir, "build", "--server", "waitress")
    assert _six_version(project_dir) == "six 1.16.0"


def test_uv_lock_installs_with_uv_sync(project_dir: Path) -> None:
    write(
        project_dir,
        {
            "wsgi.py": WSGI,
            "pyproject.toml": (
                '[project]\nname = "app"\nversion = "1"\nrequires-python = ">=3.10"\ndependencies = ["six==1.16.0"]\n'
            ),
        },
    )
    from uv import find_uv_bin

    subprocess.run([find_uv_bin(), "lock", "--python", sys.executable], cwd=project_dir, check=True, capture_output=True)
    assert (project_dir / "uv.lock").exists()
    built = warp(project_dir, "build", "--server", "waitress")
    assert "uv.lock" in built.stdout
    assert _six_version(project_dir) == "six 1.16.0"
