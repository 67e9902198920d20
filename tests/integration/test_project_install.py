"""A lock-file project that is itself a package (src layout, a [build-system]) is installed after its locked
dependencies, as the S2I builder does, and served: never a 500 "No module named ...".

The lock stays the one authority (the project goes in with --no-deps): each project here declares a dependency
its lock lacks, which must not be installed. The project goes in non-editable, so a code change must reach the
environment on the next build, and a build with nothing changed must skip it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import WARP, free_port, get, serving, stop, wait_for, warp, write
from .test_dependencies import POETRY_LOCK

# The app reads its own package's module and the locked six: the body says which code and which six served it.
APP = """\
import six

from {pkg}.words import WORD


def application(environ, start_response):
    body = "{{}} six {{}}".format(WORD, six.__version__).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

POETRY_PYPROJECT = """\
[tool.poetry]
name = "poetrysrc"
version = "0.1.0"
description = ""
authors = []
packages = [{ include = "poetrysrc", from = "src" }]

[tool.poetry.dependencies]
python = ">=3.9"
six = "*"
idna = "*"

[build-system]
requires = ["poetry-core>=1.0"]
build-backend = "poetry.core.masonry.api"
"""

# POETRY_LOCK holds six only: idna, which pyproject.toml also asks for, is not locked (a lock older than its pyproject).

UV_PYPROJECT = """\
[project]
name = "uvsrc"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = [{deps}]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
"""

NOT_LOCKED = "import importlib.util, sys; sys.exit(importlib.util.find_spec('idna') is not None)"


def _poetry_project(root: Path) -> None:
    write(
        root,
        {
            ".s2i/environment": 'APP_MODULE="poetrysrc:application"\n',
            "pyproject.toml": POETRY_PYPROJECT,
            "poetry.lock": POETRY_LOCK,
            "src/poetrysrc/__init__.py": APP.format(pkg="poetrysrc"),
            "src/poetrysrc/words.py": 'WORD = "poetry src v1"\n',
        },
    )


def _uv_project(root: Path) -> None:
    write(
        root,
        {
            ".s2i/environment": 'APP_MODULE="uvsrc:application"\n',
            "pyproject.toml": UV_PYPROJECT.format(deps='"six==1.16.0"'),
            "src/uvsrc/__init__.py": APP.format(pkg="uvsrc"),
            "src/uvsrc/words.py": 'WORD = "uv src v1"\n',
        },
    )
    from uv import find_uv_bin

    subprocess.run([find_uv_bin(), "lock", "--python", sys.executable], cwd=root, check=True, capture_output=True, timeout=300)
    assert "six" in (root / "uv.lock").read_text()
    # Asked for after the lock was made: uv sync --frozen and the --no-deps install must both leave it out.
    (root / "pyproject.toml").write_text(UV_PYPROJECT.format(deps='"six==1.16.0", "idna"'))


def _served(project: Path, server: str) -> str:
    with serving(project, "--server", server) as site:
        response = get(site.url + "/")
        assert response.status == 200, (response.text, site.output())
        return response.text


def _step_line(out: str, name: str) -> str:
    lines = [line for line in out.splitlines() if name in line]
    assert lines, out
    return lines[0]


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_poetry_lock_src_layout_package_is_installed_and_served(project_dir: Path, installer: str) -> None:
    _poetry_project(project_dir)
    plan = warp(project_dir, "plan", "--installer", installer).stdout
    assert "project: a package (pyproject.toml has a [build-system])" in plan, plan
    assert "warning" not in plan, plan

    warp(project_dir, "build", "--server", "waitress", "--installer", installer)
    assert _served(project_dir, "waitress") == "poetry src v1 six 1.16.0"
    assert warp(project_dir, "exec", "--", "python", "-c", NOT_LOCKED, check=False).returncode == 0, "idna installed"

    # A code change whose build fails after the project's install (its build hook exits 3): what is served, by the
    # running server's next worker or a fresh start, is still v1 (the install went beside the live environment).
    (project_dir / "src/poetrysrc/words.py").write_text('WORD = "poetry src v2"\n')
    write(project_dir, {".s2i/action_hooks/build": "#!/bin/sh\nexit 3\n"})
    (project_dir / ".s2i/action_hooks/build").chmod(0o755)
    failed = warp(project_dir, "build", "--server", "waitress", "--installer", installer, check=False)
    assert failed.returncode != 0 and "install project: done" in failed.stdout, failed.stdout + failed.stderr
    assert _served(project_dir, "waitress") == "poetry src v1 six 1.16.0"
    (project_dir / ".s2i/action_hooks/build").unlink()

    # Code only: the same lock names the same environment; the new code is installed in its twin (built in full the
    # first time), then the twins take turns and only the project is installed again.
    rebuilt = warp(project_dir, "build", "--server", "waitress", "--installer", installer).stdout
    assert "skip" not in _step_line(rebuilt, "install project"), rebuilt
    assert _served(project_dir, "waitress") == "poetry src v2 six 1.16.0"
    (project_dir / "src/poetrysrc/words.py").write_text('WORD = "poetry src v3"\n')
    rebuilt = warp(project_dir, "build", "--server", "waitress", "--installer", installer).stdout
    assert "skip" in _step_line(rebuilt, "install lock file"), rebuilt
    assert "skip" not in _step_line(rebuilt, "install project"), rebuilt
    assert _served(project_dir, "waitress") == "poetry src v3 six 1.16.0"

    # Nothing changed: nothing is installed again, the project included.
    again = warp(project_dir, "build", "--server", "waitress", "--installer", installer).stdout
    assert "nothing to do" in again, again
    assert "install project" not in again.replace("project: a package", ""), again


def test_uv_lock_src_layout_package_is_installed_and_served(project_dir: Path) -> None:
    _uv_project(project_dir)
    built = warp(project_dir, "build", "--server", "gunicorn").stdout
    assert "install project" in built, built
    assert _served(project_dir, "gunicorn") == "uv src v1 six 1.16.0"
    assert warp(project_dir, "exec", "--", "python", "-c", NOT_LOCKED, check=False).returncode == 0, "idna installed"
    # Not editable: the environment holds the code (an image's has no tree to point to), not a path into the tree.
    where = warp(project_dir, "exec", "--", "sh", "-c", "cd / && python -c 'import uvsrc; print(uvsrc.__file__)'")
    assert "/site-packages/uvsrc/" in where.stdout, where.stdout

    (project_dir / "src/uvsrc/words.py").write_text('WORD = "uv src v2"\n')
    warp(project_dir, "build", "--server", "gunicorn")
    assert _served(project_dir, "gunicorn") == "uv src v2 six 1.16.0"


SRC_ONLY = {
    ".s2i/environment": 'APP_MODULE="srcapp:application"\n',
    "src/srcapp/__init__.py": "def application(environ, start_response):\n"
    "    start_response('200 OK', [])\n    return [b'src app']\n",
}


def test_src_layout_without_a_build_system_is_warned_of_in_warp_plan(project_dir: Path) -> None:
    write(project_dir, {**SRC_ONLY, "pyproject.toml": '[project]\nname = "srcapp"\nversion = "1"\ndependencies = []\n'})
    plan = warp(project_dir, "plan").stdout
    warning = _step_line(plan, "warning: src/ layout")
    assert "[build-system]" in warning and "PYTHONPATH=src" in warning, warning
    assert "install project" not in plan, plan


def test_src_layout_with_a_build_system_is_not_warned_of_and_is_served(project_dir: Path) -> None:
    """The warning's twin: the fix it names (a [build-system]) silences it, and the app serves."""
    pyproject = (
        '[project]\nname = "srcapp"\nversion = "1"\ndependencies = []\n'
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    write(project_dir, {**SRC_ONLY, "pyproject.toml": pyproject})
    plan = warp(project_dir, "plan").stdout
    assert "warning" not in plan, plan
    warp(project_dir, "build", "--server", "waitress")
    assert _served(project_dir, "waitress") == "src app"
    # setuptools leaves build/ and src/srcapp.egg-info in the tree: the build's own output is no change of the source.
    assert "nothing to do" in warp(project_dir, "build", "--server", "waitress").stdout


def test_trees_sharing_an_envs_folder_each_serve_their_own_package(project_dir: Path) -> None:
    """As a host's releases share shared/envs: the second tree's build must not change what the first serves (its
    rollback target). The twin without a shared folder is every other test here."""
    envs = {"INVOKE_WARP_ENVS_DIR": str(project_dir / "shared-envs")}
    one, two = project_dir / "one", project_dir / "two"
    for tree, word in ((one, "v1"), (two, "v2")):
        _poetry_project(tree)
        (tree / "src/poetrysrc/words.py").write_text(f'WORD = "release {word}"\n')
    warp(one, "build", "--server", "waitress", env=envs)
    warp(two, "build", "--server", "waitress", env=envs)
    assert len(list((project_dir / "shared-envs").iterdir())) == 2
    for tree, word in ((one, "v1"), (two, "v2")):
        port = free_port()
        log = project_dir / f"{tree.name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [*WARP, "start", "--server", "waitress", "--port", str(port)],
                cwd=tree,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **envs},
                start_new_session=True,
            )
        try:
            wait_for(f"http://127.0.0.1:{port}/", process, log)
            assert get(f"http://127.0.0.1:{port}/").text == f"release {word} six 1.16.0"
        finally:
            stop(process)


PIPFILE_LOCK = {
    "_meta": {
        "hash": {"sha256": "0" * 64},
        "pipfile-spec": 6,
        "requires": {},
        "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}],
    },
    "default": {"six": {"version": "==1.16.0"}},
    "develop": {},
}

SETUP_PY = """\
from setuptools import find_packages, setup

setup(name="pipsrc", version="1", package_dir={"": "src"}, packages=find_packages("src"), install_requires=["six", "idna"])
"""


def test_pipfile_lock_setup_py_src_layout_package_is_installed_and_served(project_dir: Path) -> None:
    """ENABLE_PIPENV's layout, as the S2I builder's own Pipfile example: the lock, then the project (pip install .)."""
    write(
        project_dir,
        {
            ".s2i/environment": 'ENABLE_PIPENV=true\nAPP_MODULE="pipsrc:application"\n',
            "Pipfile.lock": json.dumps(PIPFILE_LOCK),
            "setup.py": SETUP_PY,
            "src/pipsrc/__init__.py": APP.format(pkg="pipsrc"),
            "src/pipsrc/words.py": 'WORD = "pipfile src"\n',
        },
    )
    warp(project_dir, "build", "--server", "waitress")
    assert _served(project_dir, "waitress") == "pipfile src six 1.16.0"
    # install_requires' idna is not in the lock: the lock decides.
    assert warp(project_dir, "exec", "--", "python", "-c", NOT_LOCKED, check=False).returncode == 0, "idna installed"


def test_reload_serves_edits_under_src_of_an_installed_src_layout(project_dir: Path) -> None:
    """The build installs the package non-editable: --reload puts src/ ahead of the installed copy on the server's import
    path, so an edit there is served (the reloader watches what was imported), with the server detection picks."""
    pyproject = (
        '[project]\nname = "srcapp"\nversion = "1"\ndependencies = []\n'
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    web = (
        "from srcapp import words\n\n\ndef application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [words.WORD.encode()]\n"
    )
    write(
        project_dir,
        {
            ".s2i/environment": 'APP_MODULE="srcapp.web:application"\n',
            "pyproject.toml": pyproject,
            "src/srcapp/__init__.py": "",
            "src/srcapp/web.py": web,
            "src/srcapp/words.py": 'WORD = "before"\n',
        },
    )
    warp(project_dir, "build")
    # The line says so (Apache, opening the terminal again, may truncate a log file's first lines: asked on its own).
    planned = warp(project_dir, "start", "--reload", "--dry-run").stdout
    assert (
        f"reload: {project_dir}/src comes before the installed project on the server's import path and is watched" in planned
    ), planned
    with serving(project_dir, "--reload") as site:
        assert get(site.url + "/").text == "before"
        (project_dir / "src/srcapp/words.py").write_text('WORD = "after"\n')
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and text != "after":
            time.sleep(0.3)
            try:
                text = get(site.url + "/").text
            except OSError:
                continue
        assert text == "after", site.output()
