"""warptasks as users install it: a wheel built from this checkout, installed without extras into a new environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import warptasks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and what the build printed (verbosely, so a backend warning would show)."""
    # From a copy: an in-tree build leaves build/ and an egg-info in the checkout.
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "warptasks", source / "warptasks", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = out.glob("warptasks-*.whl")
    return found, built.stdout + built.stderr


def test_the_wheel_builds_without_deprecation_warnings_and_says_its_license(wheel: tuple[Path, str]) -> None:
    path, log = wheel
    assert "deprecat" not in log.lower(), [line for line in log.splitlines() if "eprecat" in line]
    assert path.name == f"warptasks-{warptasks.__version__}-py3-none-any.whl"  # the version, written once
    with zipfile.ZipFile(path) as whl:
        info = f"warptasks-{warptasks.__version__}.dist-info"
        metadata = whl.read(f"{info}/METADATA").decode()
        assert "Apache License" in whl.read(f"{info}/licenses/LICENSE").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Project-URL: Homepage, https://github.com/warptasks/warptasks" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in requires if "extra ==" not in line]
    assert not [line for line in base if any(name in line.lower() for name in ("docker", "fabric", "pyyaml", "pathspec"))]
    for extra in ("image", "deploy", "kube", "all"):
        assert f"Provides-Extra: {extra}" in metadata


def test_a_base_install_runs_the_local_tasks_and_names_the_extra_the_others_need(wheel: tuple[Path, str], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the new environment has

    def run(*argv: str, cwd: Path = tmp_path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    installed = run(str(venv / "bin" / "pip"), "install", "-q", str(wheel[0]), timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    names = run(str(venv / "bin" / "pip"), "list").stdout.lower()
    assert "invoke" in names and "virtualenv" in names
    assert not [name for name in ("docker", "fabric", "paramiko", "pathspec") if f"\n{name} " in names]
    app = tmp_path / "app"
    app.mkdir()
    (app / "wsgi.py").write_text("def application(environ, start_response):\n    pass\n")
    warp = str(venv / "bin" / "warp")
    assert run(warp, "--help", cwd=app).returncode == 0
    planned = run(warp, "plan", cwd=app)
    assert planned.returncode == 0 and "wsgi.py" in planned.stdout, planned.stdout + planned.stderr
    for args, extra in ((["s2i"], "image"), (["deploy", "--host", "127.0.0.1"], "deploy")):
        done = run(warp, *args, cwd=app)
        assert done.returncode != 0 and f"pip install 'warptasks[{extra}]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
