"""As root, a project's ``re.py`` and ``sitecustomize.py`` never run as root: a real build and start.

warptasks' helpers (the probe, the environment switch, the port and read checks, run_as.py) and the tools the
build runs (pip, virtualenv) work in the project's folder, some with ``PYTHONPATH`` naming it; a project's module
named like one of the standard library's, or a ``sitecustomize.py``, would be imported by them as root. Only the
server (the app, as www-data) may import them: that is the app's own code.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import free_port, get, stop, wait_for, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a root build and start can run code as root")

MARK = """import os, sys
try:
    _fd = os.open({marker!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.write(_fd, ("%s uid=%d argv0=%s\\n" % ({name!r}, os.getuid(), (sys.argv or ["?"])[0])).encode())
    os.close(_fd)
except OSError:
    pass
"""
# After its mark, the shadowing re.py hands its importer the real module, so whatever imported it keeps working.
REAL_RE = """
_here = os.path.dirname(os.path.abspath(__file__))
del sys.modules["re"]
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import re as _real
sys.path[:] = _saved
sys.modules["re"] = _real
"""
# warp itself as its console script runs it: not from the project's folder (python -m would put that on sys.path).
WARP = [sys.executable, "-I", "-m", "warptasks"]
APP = """import re


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [re.sub("x", "y", "served by xxx").encode()]
"""


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_as_root_no_helper_nor_build_tool_imports_the_projects_modules(project_dir: Path, installer: str) -> None:
    markers = Path(tempfile.mkdtemp(prefix="warp-isolated-"))
    os.chmod(markers, 0o1777)  # the server, as www-data, marks too
    marker = markers / "imported"
    marker.touch()
    marker.chmod(0o666)
    write(
        project_dir,
        {
            "wsgi.py": APP,
            "re.py": MARK.format(marker=str(marker), name="re.py") + REAL_RE,
            "sitecustomize.py": MARK.format(marker=str(marker), name="sitecustomize.py"),
            "requirements.txt": "",
        },
    )
    build = [*WARP, "build", "--server", "gunicorn", "--installer", installer]
    built = subprocess.run(build, cwd=project_dir, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    port, log = free_port(), markers / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*WARP, "start", "--server", "gunicorn", "--port", str(port)],
            cwd=project_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/", server, log)
        assert get(f"http://127.0.0.1:{port}/").text == "served by yyy"
    finally:
        stop(server)
    lines = marker.read_text().splitlines()
    shutil.rmtree(markers)
    www_data = pwd.getpwnam("www-data").pw_uid
    # The app's server imported them, as www-data: the marks work.
    assert any(f"uid={www_data} " in line and "gunicorn" in line for line in lines), lines
    assert [line for line in lines if " uid=0 " in line] == []
