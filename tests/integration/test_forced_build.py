"""warp build --force: built beside the live environment and switched last, so a failure leaves it serving."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import get, serving, warp, write

HELLO = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"version 1"]
"""

LOCALPKG = "from setuptools import setup\nsetup(name='localpkg', version='1', py_modules=[])\n"


def _current(project: Path) -> str:
    return os.path.realpath(project / ".warp" / "current")


def test_a_forced_rebuild_that_fails_leaves_the_live_environment_current_and_serving(project_dir: Path) -> None:
    # A requirement on a local package: breaking the package leaves requirements.txt, so the environment's key, as it was.
    write(project_dir, {"wsgi.py": HELLO, "requirements.txt": "six\n./localpkg\n", "localpkg/setup.py": LOCALPKG})
    warp(project_dir, "build", "--server", "gunicorn")
    live = _current(project_dir)
    (project_dir / "localpkg" / "setup.py").write_text("raise SystemExit('localpkg is broken')\n")
    result = warp(project_dir, "build", "--server", "gunicorn", "--force", check=False)
    assert result.returncode != 0, result.stdout
    assert "install requirements" in result.stdout + result.stderr
    assert "localpkg is broken" in result.stdout + result.stderr
    assert "last good build is still in place" in result.stderr
    assert os.path.isfile(os.path.join(live, "warp-env.json")), "the live environment was removed"
    assert _current(project_dir) == live
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "version 1"


def test_a_forced_rebuild_switches_to_a_new_folder_and_a_plain_build_then_has_nothing_to_do(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": HELLO, "requirements.txt": "six\n"})
    warp(project_dir, "build", "--server", "gunicorn")
    first = _current(project_dir)
    warp(project_dir, "build", "--server", "gunicorn", "--force")
    second = _current(project_dir)
    assert second != first and os.path.isdir(first), "built beside the old one, which is left in place"
    assert "nothing to do" in warp(project_dir, "build", "--server", "gunicorn").stdout
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "version 1"
    warp(project_dir, "build", "--server", "gunicorn", "--force")
    assert _current(project_dir) == first, "the next forced rebuild goes back to the folder that is not live"
