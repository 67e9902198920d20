"""``--wheels`` never runs the project's build backend on the operator's machine (pure tier; pip runs, offline).

``pip download`` of the project's folder prepares its metadata: it runs the project's build backend here, and a
project's ``pyproject.toml`` names that backend (``backend-path = ["."]``: a file of the project). The wheelhouse
is made from what the project declares instead: its build requirements and its static ``[project].dependencies``.
The project itself travels as source and is built on the host, as without ``--wheels``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cases import write_tree
from warptasks.detect import detect_app
from warptasks.remote.wheels import download_steps, unread_dependencies, wheel_requirements

BACKEND = """import os
def _ran(*_, **__):
    with open({marker!r}, "a") as handle:
        handle.write("build backend ran here\\n")
    raise SystemExit("stop")
get_requires_for_build_wheel = prepare_metadata_for_build_wheel = build_wheel = build_sdist = _ran
get_requires_for_build_editable = prepare_metadata_for_build_editable = build_editable = _ran
"""
PYPROJECT = """[build-system]
requires = {requires}
build-backend = "backend"
backend-path = ["."]

[project]
name = "hostile"
version = "0"
{dependencies}
"""


def _hostile(root: Path, marker: Path, app: str, requires: str = "[]", dependencies: str = "dependencies = []") -> Path:
    """A project whose build backend is its own backend.py, which leaves ``marker`` wherever it runs."""
    files = {
        app: "#!/bin/sh\nexec sleep 1\n" if app == "app.sh" else "def application(e, s):\n    pass\n",
        "backend.py": BACKEND.format(marker=str(marker)),
        "pyproject.toml": PYPROJECT.format(requires=requires, dependencies=dependencies),
    }
    return write_tree(root, files)


def test_the_project_folder_is_never_given_to_pip_download(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    root = _hostile(tmp_path / "site", marker, "wsgi.py", '["flit_core>=3.4"]', 'dependencies = ["requests>=2", "idna"]')
    spec = detect_app(str(root), server="gunicorn")
    args, _ = wheel_requirements(spec)
    assert args[:4] == ("requests>=2", "idna", "flit_core>=3.4", "gunicorn")
    for step in download_steps(spec, str(tmp_path / "wheels"), {"python": "3.11"}):
        assert not any(str(root) in word for word in step.argv), step.argv
    assert unread_dependencies(spec) is None


def test_pip_download_of_the_wheels_runs_nothing_of_the_project(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # The app's own server: no server package to download, only what the project declares.
    spec = detect_app(str(_hostile(tmp_path / "site", marker, "app.sh")), server="shell")
    for step in download_steps(spec, str(tmp_path / "wheels"), {"python": "3.11"}):
        # Offline: nothing can be downloaded, but pip would still prepare a local project's metadata.
        subprocess.run([*step.argv, "--no-index"], capture_output=True, timeout=120, check=False)
    assert not marker.exists(), marker.read_text()


@pytest.mark.parametrize(
    ("files", "said"),
    [
        pytest.param(
            {"setup.py": "from setuptools import setup\nsetup()\n", "requirements.txt": "idna\n"},
            ("setup.py declares them", "list them in requirements.txt"),
            id="setup.py",
        ),
        pytest.param(
            {"pyproject.toml": PYPROJECT.format(requires='["flit_core"]', dependencies='dynamic = ["dependencies"]')},
            ("dynamic in pyproject.toml", "[project].dependencies"),
            id="dynamic-dependencies",
        ),
    ],
)
def test_dependencies_only_a_build_would_tell_are_named_not_guessed(
    tmp_path: Path, files: dict[str, str], said: tuple[str, str]
) -> None:
    spec = detect_app(str(write_tree(tmp_path, {"wsgi.py": "", **files})), server="gunicorn")
    assert spec.dependencies.install_project
    args, _ = wheel_requirements(spec)
    assert str(tmp_path) not in args and ("setuptools" in args or "flit_core" in args)
    note = unread_dependencies(spec)
    assert note and all(part in note for part in said), note
