"""Projects whose port or settings come from where S2I and twelve-factor set-ups put them, built and served for real:
PORT in .s2i/environment, PORT and DJANGO_SETTINGS_MODULE exported in the shell, warp.port in the project's
invoke.yaml, each with no option a user would have to know to pass."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import WARP, Server, free_port, get, startproject, stop, wait_for, warp, write

# The S2I Python builder's own gunicorn-different-port-test-app, as its .s2i/environment has it (PORT=8085 there; a free
# port here).
S2I_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello World from gunicorn WSGI application!"]
"""


@contextmanager
def started(project: Path, port: int, *args: str, env: dict[str, str] | None = None, path: str = "/") -> Iterator[Server]:
    """``warp start`` with no --port unless ``args`` has one; it must answer on ``port``."""
    log = project.parent / f"{project.name}-start-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*WARP, "start", *args],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + path, process, log, 90)
        yield Server(process, url, log)
    finally:
        stop(process)
        assert process.poll() is not None


def _clean_env() -> dict[str, str]:
    """This test's own environment without a PORT or settings module a developer's shell may have exported."""
    return {k: v for k, v in os.environ.items() if k not in ("PORT", "DJANGO_SETTINGS_MODULE", "INVOKE_WARP_PORT")}


def test_port_in_s2i_environment_is_served_on_without_an_option(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, exported, option = free_port(), free_port(), free_port()
    write(
        project_dir,
        {
            "app.py": S2I_APP,
            "requirements.txt": "",
            ".s2i/environment": f"APP_MODULE=app:application\nPORT={port}\n",
        },
    )
    monkeypatch.delenv("PORT", raising=False)  # a PORT of the shell running the tests would be the exported one
    before = warp(project_dir, "plan")  # not built yet: the start cannot be planned, its port is known
    assert f"port: {port} (PORT in .s2i/environment)" in before.stdout, before.stdout
    warp(project_dir, "build")
    planned = warp(project_dir, "plan")
    assert f"port: {port} (PORT in .s2i/environment)" in planned.stdout, planned.stdout
    with started(project_dir, port) as site:
        assert get(site.url + "/").text == "Hello World from gunicorn WSGI application!"
    # Exported in the shell, PORT beats the project's file (as docker run -e beats the image's); --port beats both.
    with started(project_dir, exported, env={"PORT": str(exported)}) as site:
        assert get(site.url + "/").status == 200
    with started(project_dir, option, "--port", str(option), env={"PORT": str(exported)}) as site:
        assert get(site.url + "/").status == 200
    broken = warp(project_dir, "start", "--dry-run", check=False, env={"PORT": "eighty"})
    assert broken.returncode != 0 and "PORT='eighty'" in broken.stderr and "Traceback" not in broken.stderr


PROD_SETTINGS = """
from .settings import *  # noqa: F403

SETTINGS_NAME = "prod"
STATIC_ROOT = BASE_DIR / "prodstatic"  # noqa: F405
"""

NAME_VIEW = """
from django.conf import settings
from django.http import HttpResponse


def name(request):
    return HttpResponse(getattr(settings, "SETTINGS_NAME", "default settings"))
"""


def test_django_settings_module_exported_in_the_shell_wins_over_manage_py(project_dir: Path) -> None:
    startproject(project_dir)
    write(project_dir, {"mysite/prod.py": PROD_SETTINGS, "mysite/views.py": NAME_VIEW})
    urls = project_dir / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + "\nfrom . import views  # noqa: E402\n\nurlpatterns.append(path('name/', views.name))\n")
    env = {"DJANGO_SETTINGS_MODULE": "mysite.prod"}
    # The twin: without the export, manage.py's default.
    default = subprocess.run([*WARP, "plan"], cwd=project_dir, capture_output=True, text=True, timeout=300, env=_clean_env())
    assert "settings mysite.settings (manage.py sets DJANGO_SETTINGS_MODULE)" in default.stdout, default.stdout
    planned = warp(project_dir, "plan", env=env)
    assert "settings mysite.prod (DJANGO_SETTINGS_MODULE exported" in planned.stdout, planned.stdout
    built = warp(project_dir, "build", env=env)
    assert "collectstatic" in built.stdout
    assert (project_dir / "prodstatic" / "admin" / "css" / "base.css").is_file()  # collectstatic ran with prod
    assert not (project_dir / "staticfiles").exists()
    port = free_port()
    with started(project_dir, port, "--port", str(port), env=env, path="/name/") as site:
        assert get(site.url + "/name/").text == "prod"
        css = get(site.url + "/static/admin/css/base.css")
        assert css.status == 200 and b"{" in css.body


def test_warp_start_reads_the_projects_invoke_yaml(project_dir: Path) -> None:
    port = free_port()
    write(
        project_dir,
        {"wsgi.py": S2I_APP, "requirements.txt": "", "invoke.yaml": f"warp:\n  server: waitress\n  port: {port}\n"},
    )
    built = subprocess.run([*WARP, "build"], cwd=project_dir, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert built.returncode == 0, built.stdout + built.stderr
    assert "server: waitress" in built.stdout, built.stdout
    with started(project_dir, port, env={"PORT": str(free_port())}) as site:  # the setting beats an exported PORT
        assert get(site.url + "/").status == 200
        assert "waitress" in site.output()
    other = free_port()
    planned = warp(project_dir, "plan", env={"INVOKE_WARP_PORT": str(other)})
    assert f"port: {other} (--port" in planned.stdout
