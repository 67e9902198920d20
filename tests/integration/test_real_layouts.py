"""Project layouts as people write them (and as the S2I Python builder's example apps are), built and served over HTTP.

Each is a real build (a virtualenv, real installs from the package index) and a real ``warp start`` answering on
the port it was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import WARP, free_port, get, serving, warp, write

# sclorg/s2i-python-container examples/gunicorn-python-configfile-different-port-test-app, with workers fixed to 3.
GUNICORN_CONF = """import multiprocessing

bind = "0.0.0.0:8085"
workers = 3

wsgi_app = "app:application"
"""
S2I_APP = """
def application(environ, start_response):
    start_response('200 OK', [('Content-Type','text/plain')])
    return [b"Hello from gunicorn WSGI application!"]
"""

FLASK_APP = """from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "hello from flask"
"""

FLASK_RUN_UNDER_MAIN = (
    FLASK_APP
    + """

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000, debug=True)
"""
)

FASTAPI_MAIN = """from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def root():
    return {"hello": "fastapi"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=8000)
"""


def _plan(project: Path) -> dict:
    return json.loads(warp(project, "plan", "--json").stdout)


def _children(pid: int) -> dict[int, list[int]]:
    """Every process's children, read from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _gunicorn_workers(pid: int) -> int:
    """The worker processes of the gunicorn master that ``pid`` is (or started)."""
    tree = _children(pid)
    todo, found = [pid], []
    while todo:
        current = todo.pop()
        cmdline = Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"gunicorn" in cmdline:
            found.append(current)
        todo += tree.get(current, [])
    masters = [p for p in found if not any(p in tree.get(q, []) for q in found)]
    assert len(masters) == 1, found
    return len([p for p in tree.get(masters[0], []) if p in found])


@pytest.mark.parametrize("requirements", [{"requirements.txt": "gunicorn>=20.1.0\n"}, {}], ids=["s2i-requirements", "none"])
def test_gunicorn_conf_with_wsgi_app_is_served_by_gunicorn_with_its_workers_on_our_port(
    project_dir: Path, requirements: dict[str, str]
) -> None:
    # The S2I example lists gunicorn in its requirements; without them the build installs gunicorn all the same.
    write(project_dir, {"gunicorn.conf.py": GUNICORN_CONF, "app.py": S2I_APP, **requirements})
    plan = _plan(project_dir)
    assert plan["build"]["notes"] and any("gunicorn.conf.py sets wsgi_app" in n for n in plan["build"]["notes"])
    warp(project_dir, "build")
    shown = warp(project_dir, "plan").stdout
    assert "its settings kept: workers, wsgi_app" in shown and "replaced: bind" in shown
    port = free_port()
    with serving(project_dir, port=port) as site:
        assert get(site.url + "/").text == "Hello from gunicorn WSGI application!"
        # gunicorn forks its workers one after the other, the first answering before the last exists.
        deadline = time.monotonic() + 15
        while _gunicorn_workers(site.process.pid) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        assert _gunicorn_workers(site.process.pid) == 3
        assert "gunicorn" in site.output() and "8085" not in site.output()


def test_gunicorn_conf_with_a_factory_wsgi_app_is_served_by_calling_it(project_dir: Path) -> None:
    """gunicorn's ``module:factory(...)`` form: planned as ``module:app`` is, the factory called with its arguments."""
    factory = (
        "def create_app(greeting='hello'):\n"
        "    def application(environ, start_response):\n"
        "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "        return [greeting.encode() + b' from a factory']\n"
        "    return application\n"
    )
    write(project_dir, {"gunicorn.conf.py": "workers = 1\nwsgi_app = \"app:create_app('hi')\"\n", "app.py": factory})
    plan = _plan(project_dir)
    assert (plan["app"]["kind"], plan["app"]["target"]) == ("wsgi", "app:create_app('hi')")
    assert any("gunicorn.conf.py sets wsgi_app" in n for n in plan["build"]["notes"])
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "hi from a factory"
        assert "gunicorn" in site.output()


def test_s2i_setup_py_only_project_serves_the_module_setup_py_names(project_dir: Path) -> None:
    # sclorg/s2i-python-container examples/setup-test-app, without its requirements.txt (gunicorn, setuptools):
    # nothing but setup.py says how to serve it.
    setup_py = (
        'from setuptools import setup, find_packages\n\n\nsetup (\n    name             = "testapp",\n'
        '    version          = "0.1",\n    packages         = find_packages(),\n)\n'
    )
    write(project_dir, {"setup.py": setup_py, "testapp.py": S2I_APP})
    plan = _plan(project_dir)
    assert (plan["app"]["kind"], plan["app"]["target"]) == ("wsgi", "testapp:application")
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "Hello from gunicorn WSGI application!"


def test_s2i_pipenv_project_serves_the_module_setup_py_names(project_dir: Path) -> None:
    # sclorg/s2i-python-container examples/pipenv-test-app: ENABLE_PIPENV, the lock installed, setup.py not processed.
    lock = {
        "_meta": {"sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}], "requires": {}},
        "default": {"six": {"version": "==1.16.0"}},
        "develop": {},
    }
    setup_py = 'from setuptools import setup, find_packages\n\nsetup(name="testapp", version="0.1", packages=find_packages())\n'
    write(
        project_dir,
        {
            ".s2i/environment": "ENABLE_PIPENV=true\nDISABLE_SETUP_PY_PROCESSING=true\n",
            "Pipfile": '[packages]\nsix = "==1.16.0"\n',
            "Pipfile.lock": json.dumps(lock),
            "setup.py": setup_py,
            "testapp.py": S2I_APP,
        },
    )
    plan = _plan(project_dir)
    assert plan["app"]["target"] == "testapp:application" and "ENABLE_PIPENV" in plan["app"]["dependencies"]["why"]
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "Hello from gunicorn WSGI application!"


def test_setup_py_whose_name_is_computed_is_asked_with_the_apps_python_at_start(project_dir: Path) -> None:
    setup_py = "from setuptools import setup\n\nsetup(name=open('NAME').read().strip(), version='0.1', py_modules=['computed'])\n"
    write(project_dir, {"setup.py": setup_py, "NAME": "computed\n", "computed.py": S2I_APP, "requirements.txt": "setuptools\n"})
    plan = _plan(project_dir)
    assert plan["app"]["target"] == "__warp_setup_name__:application" and "setup.py --name" in plan["app"]["why"]
    warp(project_dir, "build")
    with serving(project_dir) as site:
        # Only the module setup.py --name printed answers this (Apache rewrites the log, so that line is not checked).
        assert get(site.url + "/").text == "Hello from gunicorn WSGI application!"


def test_flask_app_py_is_served_by_mod_wsgi_not_run_as_a_script(project_dir: Path) -> None:
    write(project_dir, {"app.py": FLASK_APP, "requirements.txt": "flask\n"})
    assert (_plan(project_dir)["app"]["kind"], _plan(project_dir)["app"]["target"]) == ("wsgi", "app:app")
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "hello from flask"
        assert "mod_wsgi" in site.output()


def test_flask_app_run_under_main_is_served_on_our_port_not_its_own(project_dir: Path) -> None:
    write(project_dir, {"app.py": FLASK_RUN_UNDER_MAIN, "requirements.txt": "flask\n"})
    assert "is for development" in _plan(project_dir)["app"]["why"]
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "hello from flask"


def test_fastapi_main_py_is_served_by_uvicorn(project_dir: Path) -> None:
    write(project_dir, {"main.py": FASTAPI_MAIN, "requirements.txt": "fastapi\n"})
    plan = _plan(project_dir)
    assert (plan["app"]["kind"], plan["app"]["target"]) == ("asgi", "main:app")
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert json.loads(get(site.url + "/").body) == {"hello": "fastapi"}
        assert "uvicorn" in site.output().lower()


def test_a_script_that_neither_serves_nor_defines_an_app_is_an_error_before_any_build(project_dir: Path) -> None:
    write(project_dir, {"app.py": "import os\n\nprint('hello', os.getpid())\n"})
    result = warp(project_dir, "build", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert "app.py neither starts a server nor defines an app object" in output
    assert "APP_MODULE=module:callable" in output and "APP_FILE" in output
    assert not (project_dir / ".warp").exists()


def test_a_script_app_that_ends_at_once_is_a_failed_start_not_exit_0(project_dir: Path) -> None:
    # It calls code detection cannot see into, so it is run as a script; it ends without serving anything.
    write(project_dir, {"app.py": "import helper\n\nhelper.main()\n", "helper.py": "def main():\n    print('done')\n"})
    assert _plan(project_dir)["app"]["kind"] == "script"
    warp(project_dir, "build")
    result = subprocess.run(
        [*WARP, "start", "--port", str(free_port())], cwd=project_dir, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "app.py ended (exit status 0) without listening on any port" in output and "APP_MODULE" in output
