"""Real projects built and served by every server, pages and static files over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import get, serving, startproject, warp, write

SIMPLE_WSGI = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from wsgi.py " + environ["wsgi.url_scheme"].encode()]
"""


@pytest.mark.parametrize("server", ["auto", "gunicorn", "uwsgi", "waitress"])
def test_django_startproject_serves_pages_and_static_files(project_dir: Path, server: str) -> None:
    startproject(project_dir)
    args = () if server == "auto" else ("--server", server)
    built = warp(project_dir, "build", *args)
    assert "collectstatic" in built.stdout
    with serving(project_dir, path="/admin/login/") as site:
        page = get(site.url + "/admin/login/")
        assert page.status == 200 and "csrfmiddlewaretoken" in page.text
        css = get(site.url + "/static/admin/css/base.css")
        assert css.status == 200 and b"{" in css.body
        assert get(site.url + "/static/admin/css/no-such-file.css").status == 404
        if server == "auto":
            assert "mod_wsgi" in site.output()


def test_plain_wsgi_py_with_static_folder_on_mod_wsgi(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": SIMPLE_WSGI, "static/site.css": "body { color: red }\n"})
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "hello from wsgi.py http"
        assert get(site.url + "/static/site.css").text == "body { color: red }\n"


def test_paste_ini_app_on_mod_wsgi_and_gunicorn(project_dir: Path) -> None:
    write(
        project_dir,
        {
            "requirements.txt": "PasteDeploy\n",
            "pasteapp.py": (
                "def make_app(global_config, **settings):\n"
                "    greeting = settings.get('greeting', 'none').encode()\n"
                "    def app(environ, start_response):\n"
                "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                "        return [greeting]\n"
                "    return app\n"
            ),
            "production.ini": "[app:main]\npaste.app_factory = pasteapp:make_app\ngreeting = hello from paste\n",
        },
    )
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "hello from paste"
    warp(project_dir, "build", "--server", "gunicorn")
    with serving(project_dir, "--server", "gunicorn") as site:
        assert get(site.url + "/").text == "hello from paste"


APP_PY = """
import os
from wsgiref.simple_server import make_server

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("app.py on %s" % os.environ["PORT"]).encode()]

make_server(os.environ["HOST"], int(os.environ["PORT"]), app).serve_forever()
"""


def test_app_py_runs_its_own_server_with_host_and_port(project_dir: Path) -> None:
    write(project_dir, {"app.py": APP_PY, "wsgi.py": SIMPLE_WSGI})
    plan = json.loads(warp(project_dir, "plan", "--json").stdout)
    assert plan["app"]["kind"] == "script"
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == f"app.py on {site.url.rsplit(':', 1)[1]}"


def test_app_sh_is_run_with_bash_and_execs_the_server(project_dir: Path) -> None:
    write(project_dir, {"app.sh": "exec python server.py\n", "server.py": APP_PY})
    (project_dir / "app.sh").chmod(0o644)  # not executable: still run, with bash
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text.startswith("app.py on ")


ASGI = """
async def application(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from asgi"})
"""


def test_asgi_app_is_served_by_an_asgi_server_with_static_files(project_dir: Path) -> None:
    write(project_dir, {"asgi.py": ASGI, "static/app.js": "console.log(1)\n"})
    plan = warp(project_dir, "plan")
    assert "uvicorn" in plan.stdout
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "hello from asgi"
        assert get(site.url + "/static/app.js").text == "console.log(1)\n"


ODD_NAME = "my app $HOME 'q' \"d\"; `touch x` &"


def test_project_path_with_shell_metacharacters_builds_and_serves(project_dir: Path) -> None:
    odd = project_dir / ODD_NAME
    odd.mkdir()
    write(odd, {"wsgi.py": SIMPLE_WSGI, "static/a b.css": "x{}\n"})
    warp(odd, "build", "--server", "gunicorn")
    with serving(odd, "--server", "gunicorn") as site:
        assert get(site.url + "/").text == "hello from wsgi.py http"
        assert get(site.url + "/static/a%20b.css").text == "x{}\n"
    assert not (project_dir / "x").exists()


def test_mod_wsgi_refuses_a_path_apache_would_misread_and_builds_nothing(project_dir: Path) -> None:
    odd = project_dir / ODD_NAME
    odd.mkdir()
    write(odd, {"wsgi.py": SIMPLE_WSGI})
    result = warp(odd, "build", check=False)
    assert result.returncode != 0
    assert "mod_wsgi-express cannot serve from" in result.stderr and "--server gunicorn" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (odd / ".warp").exists()
    assert not (odd / "x").exists() and not (project_dir / "x").exists()


def test_procfile_web_line_runs_with_port_set(project_dir: Path) -> None:
    write(
        project_dir,
        {"Procfile": "web: python server.py --port $PORT\nworker: python -c 'raise SystemExit(1)'\n", "server.py": APP_PY},
    )
    plan = json.loads(warp(project_dir, "plan", "--json").stdout)
    assert plan["app"]["kind"] == "procfile"
    warp(project_dir, "build")
    with serving(project_dir) as site:
        assert get(site.url + "/").text.startswith("app.py on ")
