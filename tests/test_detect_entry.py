"""Entry points as people write them: app.py/main.py apps read by AST, setup.py names, gunicorn configurations.

Tables of source trees -> what detection and the server choice make of them; nothing is imported or run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cases import WSGI, django_tree, write_tree
from tests.test_plan_start import ENV, PROJECT, built
from warptasks.detect import detect_app
from warptasks.detect.app import SETUP_NAME
from warptasks.errors import ConfigError, NoAppFound
from warptasks.plan import StartOptions, StartPlan, plan_start
from warptasks.servers import resolve_server

FLASK = "from flask import Flask\n\napp = Flask(__name__)\n\n\n@app.route('/')\ndef index():\n    return 'hi'\n"
FLASK_MAIN = FLASK + "\n\nif __name__ == '__main__':\n    app.run(host='0.0.0.0', port=5000, debug=True)\n"
FASTAPI = "from fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get('/')\ndef root():\n    return {'a': 1}\n"
FASTAPI_UVICORN = (
    FASTAPI + "\n\nif __name__ == '__main__':\n    import uvicorn\n\n    uvicorn.run(app, host='0.0.0.0', port=8000)\n"
)
WSGIREF_SERVES = (
    "import os\nfrom wsgiref.simple_server import make_server\n\n\ndef app(environ, start_response):\n"
    "    start_response('200 OK', [])\n    return [b'x']\n\n\n"
    "make_server('', int(os.environ['PORT']), app).serve_forever()\n"
)
# The S2I builder's standalone-test-app: a server started under __main__, no app object.
STANDALONE = (
    "from gunicorn.app.base import BaseApplication\n\n\ndef wsgi_handler(environ, start_response):\n    pass\n\n\n"
    "class StandaloneApplication(BaseApplication):\n    pass\n\n\n"
    "if __name__ == '__main__':\n    StandaloneApplication(wsgi_handler, {'bind': ':8080'}).run()\n"
)
SETUP_PY = "from setuptools import setup, find_packages\n\nsetup(\n    name='testapp',\n    version='0.1',\n)\n"

# files -> (kind, target, a phrase of the reason)
CASES = [
    # app.py and main.py read by AST
    pytest.param({"app.py": FLASK}, ("wsgi", "app:app", "app = Flask(...)"), id="flask-app.py"),
    pytest.param({"app.py": FLASK_MAIN}, ("wsgi", "app:app", "app.run() (line 12) under __main__"), id="flask-run-under-main"),
    pytest.param(
        {"app.py": "import flask\napplication = flask.Flask(__name__)\n"},
        ("wsgi", "app:application", "application = flask.Flask(...)"),
        id="flask-module-attribute-application",
    ),
    pytest.param(
        {"app.py": "from flask import Flask as F\nserver = F(__name__)\n"},
        ("wsgi", "app:server", "server = F(...)"),
        id="flask-aliased-other-name",
    ),
    pytest.param(
        {"app.py": "from flask import Flask\nfrom x import Wrap\napi = Flask(__name__)\napplication = Wrap(api)\n"},
        ("wsgi", "app:application", "wrapped as application"),
        id="wrapped-application-wins",
    ),
    pytest.param({"app.py": FASTAPI}, ("asgi", "app:app", "ASGI app"), id="fastapi-app.py"),
    pytest.param(
        {"app.py": "import fastapi\napp = fastapi.FastAPI()\n"}, ("asgi", "app:app", "fastapi.FastAPI"), id="import-fastapi"
    ),
    pytest.param(
        {"app.py": "from quart import Quart\napp = Quart(__name__)\n"}, ("asgi", "app:app", "Quart"), id="quart-is-asgi"
    ),
    pytest.param(
        {"app.py": "from starlette.applications import Starlette\napp = Starlette()\n"},
        ("asgi", "app:app", "Starlette"),
        id="starlette",
    ),
    pytest.param(
        {"app.py": "from litestar import Litestar\napp = Litestar([])\n"}, ("asgi", "app:app", "Litestar"), id="litestar"
    ),
    pytest.param({"app.py": "import falcon\napp = falcon.App()\n"}, ("wsgi", "app:app", "falcon.App"), id="falcon"),
    pytest.param(
        {"app.py": "from fastapi import FastAPI\napp: FastAPI = FastAPI()\n"}, ("asgi", "app:app", "FastAPI"), id="annotated"
    ),
    pytest.param({"app.py": WSGI}, ("wsgi", "app:application", "a WSGI function"), id="s2i-wsgi-function"),
    pytest.param(
        {"app.py": "async def app(scope, receive, send):\n    pass\n"},
        ("asgi", "app:app", "an ASGI function"),
        id="asgi-function",
    ),
    pytest.param(
        {
            "app.py": (
                "from flask import Flask\n\n\ndef create_app():\n    a = Flask(__name__)\n    return a\n\n\napp = create_app()\n"
            )
        },
        ("wsgi", "app:app", "app = create_app(...)"),
        id="factory-in-the-file",
    ),
    pytest.param(
        {
            "app.py": "from myproject.factory import make\n\napp = make()\n",
            "myproject/__init__.py": "",
            "myproject/factory.py": "import fastapi\n\n\ndef make():\n    return fastapi.FastAPI()\n",
        },
        ("asgi", "app:app", "app = make(...)"),
        id="factory-in-a-project-module",
    ),
    pytest.param(
        {"app.py": "from somewhere import create_app\n\napp = create_app()\n"},
        ("script", "app.py", "create_app() (line 3) at import, which may"),
        id="factory-not-in-the-tree-is-run-as-before",
    ),
    pytest.param({"app.py": WSGIREF_SERVES}, ("script", "app.py", "serve_forever()"), id="serves-at-import"),
    pytest.param(
        {"app.py": FLASK + "app.run(port=8080)\n"}, ("script", "app.py", "app.run() (line 9)"), id="flask-run-at-module-level"
    ),
    pytest.param(
        {"app.py": FLASK + "def main():\n    app.run()\n\n\nmain()\n"},
        ("script", "app.py", "main() (line 13), which calls app.run()"),
        id="serves-through-own-function",
    ),
    pytest.param({"app.py": STANDALONE}, ("script", "app.py", "starts its own server"), id="s2i-standalone-under-main"),
    pytest.param(
        {"app.py": "from mypkg.server import start\n\nstart()\n"},
        ("script", "app.py", "start() (line 3) at import, which may"),
        id="opaque-call",
    ),
    pytest.param(
        {"app.py": "import os\n\nos.execvp('gunicorn', ['gunicorn', 'wsgi'])\n"},
        ("script", "app.py", "os.execvp() (line 3) at import, which may"),
        id="execs-another-program",
    ),
    pytest.param(
        {"app.py": "from subprocess import call\n\ncall(['uwsgi', 'x.ini'])\n"},
        ("script", "app.py", "call() (line 3) at import, which may"),
        id="runs-another-program",
    ),
    pytest.param({"app.py": "def broken(:\n"}, ("script", "app.py", "cannot parse"), id="syntax-error-still-a-script"),
    pytest.param(
        {"app.py": FLASK + "import subprocess\nsubprocess.run(['true'])\n"},
        ("wsgi", "app:app", "app = Flask"),
        id="subprocess-run-is-not-a-server",
    ),
    # order: app.py before manage.py as before; one that is neither is no entry point, the next rule is
    pytest.param({"app.py": FLASK, **django_tree()}, ("wsgi", "app:app", "Flask"), id="flask-app.py-before-django"),
    pytest.param({"app.py": "import os\n", "wsgi.py": WSGI}, ("wsgi", "wsgi:application", "wsgi.py"), id="helper-app.py-skipped"),
    # main.py only when nothing else matched
    pytest.param(
        {"main.py": FASTAPI_UVICORN}, ("asgi", "main:app", "uvicorn.run() (line 14) under __main__"), id="fastapi-main.py"
    ),
    pytest.param({"main.py": FASTAPI, "wsgi.py": WSGI}, ("wsgi", "wsgi:application", "wsgi.py"), id="wsgi.py-before-main.py"),
    pytest.param({"main.py": FASTAPI, "Procfile": "web: x\n"}, ("procfile", "x", "Procfile"), id="procfile-before-main.py"),
    pytest.param({"main.py": FASTAPI, "app.py": FLASK}, ("wsgi", "app:app", "app.py"), id="app.py-before-main.py"),
    pytest.param({"main.py": WSGIREF_SERVES}, ("script", "main.py", "serve_forever()"), id="main.py-serving-itself"),
    # explicit settings win
    pytest.param(
        {"app.py": FLASK, ".s2i/environment": "APP_FILE=app.py\n"},
        ("script", "app.py", "APP_FILE"),
        id="APP_FILE-runs-the-script",
    ),
    pytest.param(
        {"app.py": FLASK, ".s2i/environment": "APP_MODULE=app:app\n"}, ("wsgi", "app:app", "APP_MODULE"), id="APP_MODULE"
    ),
    # setup.py's name (S2I), with the module in the tree before main.py, without after it
    pytest.param(
        {"setup.py": SETUP_PY, "testapp.py": WSGI, "requirements.txt": "gunicorn\n"},
        ("wsgi", "testapp:application", "setup.py names the project 'testapp'"),
        id="s2i-setup-test-app",
    ),
    pytest.param(
        {"setup.py": "from setuptools import setup\nNAME = 'my-app'\nsetup(name=NAME)\n", "my_app/__init__.py": WSGI},
        ("wsgi", "my_app:application", "'my-app'"),
        id="setup-name-constant-dash-normalised",
    ),
    pytest.param(
        {"setup.py": "import setuptools\nsetuptools.setup()\n", "setup.cfg": "[metadata]\nname = cfgapp\n", "cfgapp.py": WSGI},
        ("wsgi", "cfgapp:application", "setup.cfg [metadata] name"),
        id="setup.cfg-name",
    ),
    pytest.param(
        {"setup.py": SETUP_PY, "testapp/__init__.py": FASTAPI},
        ("asgi", "testapp:app", "whose module defines app = FastAPI(...)"),
        id="setup-module-defining-another-app-object",
    ),
    pytest.param(
        {"setup.py": SETUP_PY, "src/testapp/__init__.py": "from .web import application\n"},
        ("wsgi", "testapp:application", "setup.py names the project 'testapp'"),
        id="setup-module-in-src",
    ),
    pytest.param(
        {"setup.py": SETUP_PY, "testapp.py": WSGI, "main.py": FASTAPI},
        ("wsgi", "testapp:application", "setup.py"),
        id="setup-module-in-tree-before-main.py",
    ),
    pytest.param(
        {"setup.py": "from setuptools import setup\nsetup(name='elsewhere')\n", "main.py": FASTAPI},
        ("asgi", "main:app", "main.py"),
        id="main.py-before-setup-module-not-in-tree",
    ),
    pytest.param(
        {"setup.py": "from setuptools import setup\nsetup(name='elsewhere')\n"},
        ("wsgi", "elsewhere:application", "setup.py"),
        id="setup-module-not-in-tree-last",
    ),
    pytest.param(
        {"setup.py": "from setuptools import setup\nsetup(name=open('NAME').read())\n", "x.py": ""},
        ("wsgi", f"{SETUP_NAME}:application", "running setup.py --name"),
        id="setup-name-not-literal",
    ),
    pytest.param(
        {
            "setup.py": SETUP_PY,
            "testapp.py": WSGI,
            "Pipfile": "",
            "Pipfile.lock": "{}",
            ".s2i/environment": "ENABLE_PIPENV=true\n",
        },
        ("wsgi", "testapp:application", "setup.py"),
        id="s2i-pipenv-test-app",
    ),
    pytest.param(
        {"pyproject.toml": "[project]\nname = 'pyapp'\n", "pyapp.py": WSGI, "main.py": FASTAPI},
        ("asgi", "main:app", "main.py"),
        id="pyproject-name-is-not-an-entry",
    ),
    # a gunicorn configuration with wsgi_app comes first (S2I), after explicit settings
    pytest.param(
        {"gunicorn.conf.py": "wsgi_app = 'app:application'\n", "app.py": WSGI, "app.sh": "exec x\n"},
        ("wsgi", "app:application", "wsgi_app in gunicorn.conf.py"),
        id="gunicorn-conf-first",
    ),
    # gunicorn's application factory form: planned as wsgi_app = "mod:app" is, the loader calls it
    pytest.param(
        {"gunicorn.conf.py": "wsgi_app = 'app:create_app()'\n", "app.py": WSGI},
        ("wsgi", "app:create_app()", "wsgi_app in gunicorn.conf.py"),
        id="gunicorn-conf-factory",
    ),
    pytest.param(
        {"gunicorn.conf.py": "wsgi_app = 'site.web:make(\"prod\", debug=False)'\n", "app.py": WSGI},
        ("wsgi", 'site.web:make("prod", debug=False)', "wsgi_app in gunicorn.conf.py"),
        id="gunicorn-conf-factory-literal-arguments",
    ),
]


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_entry_point(tmp_path: Path, files: dict[str, str], expected: tuple[str, str, str]) -> None:
    spec = detect_app(write_tree(tmp_path, files))
    kind, target, reason = expected
    assert (spec.kind, spec.target) == (kind, target), spec.why
    assert reason in spec.why


@pytest.mark.parametrize(
    ("files", "phrases"),
    [
        pytest.param(
            {"app.py": "import os\nprint('hello')\n"}, ["app.py neither starts a server nor defines"], id="app.py-neither"
        ),
        pytest.param({"main.py": "x = 1\n"}, ["main.py neither"], id="main.py-neither"),
        pytest.param(
            {"app.py": "import os\nimport logging\nlogging.basicConfig()\nprint(os.getpid())\n"},
            ["app.py neither"],
            id="standard-library-calls-start-no-server",
        ),
        pytest.param({"app.py": "def helper():\n    pass\n", "main.py": ""}, ["app.py neither", "main.py neither"], id="both"),
        pytest.param({}, [], id="empty"),
    ],
)
def test_no_app_found_says_what_it_found_and_names_app_module_and_app_file(
    tmp_path: Path, files: dict[str, str], phrases: list[str]
) -> None:
    with pytest.raises(NoAppFound) as error:
        detect_app(write_tree(tmp_path, files))
    assert "no application found" in error.value.message
    for phrase in phrases:
        assert phrase in error.value.message
    assert "APP_MODULE=module:callable" in error.value.hint and "APP_FILE" in error.value.hint


# files, --server -> (server chosen, phrase of why, the config gunicorn is given or "")
SERVER_CASES = [
    pytest.param(
        {"gunicorn.conf.py": "workers = 3\nwsgi_app = 'app:application'\n", "app.py": WSGI},
        None,
        ("gunicorn", "gunicorn.conf.py sets wsgi_app", "gunicorn.conf.py"),
        id="wsgi_app-means-gunicorn",
    ),
    pytest.param(
        {
            ".s2i/environment": "APP_MODULE=app:application\nAPP_CONFIG=./gunicorn.conf.py\n",
            "gunicorn.conf.py": "bind = ':8085'\n",
        },
        None,
        ("gunicorn", "APP_CONFIG names a gunicorn configuration", "gunicorn.conf.py"),
        id="s2i-APP_CONFIG-means-gunicorn",
    ),
    pytest.param(
        {"gunicorn.conf.py": "workers = 3\n", "wsgi.py": WSGI},
        None,
        ("mod_wsgi", "default", "gunicorn.conf.py"),
        id="config-without-wsgi_app-keeps-the-default",
    ),
    pytest.param(
        {"gunicorn.conf.py": "wsgi_app = 'app:application'\n", "app.py": WSGI},
        "mod_wsgi",
        ("mod_wsgi", "--server", "gunicorn.conf.py"),
        id="explicit-server-wins",
    ),
    pytest.param(
        {
            "gunicorn.conf.py": "wsgi_app = 'app:application'\n",
            "app.py": WSGI,
            ".s2i/environment": "WARPDRIVE_SERVER_TYPE=waitress\n",
        },
        None,
        ("waitress", "WARPDRIVE_SERVER_TYPE", "gunicorn.conf.py"),
        id="server-setting-wins",
    ),
    pytest.param(
        {"gunicorn.conf.py": "wsgi_app = 'app:application'\n", ".s2i/environment": "APP_FILE=serve.py\n"},
        None,
        ("shell", "serve.py", "gunicorn.conf.py"),
        id="APP_FILE-wins",
    ),
    pytest.param(
        {
            ".s2i/environment": "APP_CONFIG=conf/g.py\n",
            "conf/g.py": "workers = 2\n",
            "asgi.py": "async def application(s, r, x):\n  pass\n",
        },
        None,
        ("uvicorn", "ASGI", "conf/g.py"),
        id="asgi-app-is-not-given-to-gunicorn",
    ),
    pytest.param({"app.py": FLASK}, None, ("mod_wsgi", "WSGI app", ""), id="flask-on-mod_wsgi"),
    pytest.param({"app.py": FASTAPI}, None, ("uvicorn", "ASGI app", ""), id="fastapi-on-uvicorn"),
]


@pytest.mark.parametrize(("files", "server", "expected"), SERVER_CASES)
def test_server_choice(tmp_path: Path, files: dict[str, str], server: str | None, expected: tuple[str, str, str]) -> None:
    spec = detect_app(write_tree(tmp_path, files), server=server)
    name, why = resolve_server(spec)
    chosen, phrase, config = expected
    assert name == chosen and phrase in why
    assert spec.gunicorn_config == config


def test_app_config_naming_no_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="APP_CONFIG='nope.py'"):
        detect_app(write_tree(tmp_path, {".s2i/environment": "APP_CONFIG=nope.py\n", "wsgi.py": WSGI}))


def _start(tmp_path: Path, files: dict[str, str], **options: Any) -> StartPlan:
    spec = detect_app(write_tree(tmp_path, files))
    return plan_start(spec, built(resolve_server(spec)[0]), StartOptions(project=PROJECT, **options))


def test_gunicorn_with_the_apps_config_keeps_its_settings_and_binds_our_port(tmp_path: Path) -> None:
    files = {"gunicorn.conf.py": "import multiprocessing\nbind = '0.0.0.0:8085'\nworkers = 3\nwsgi_app = 'app:application'\n"}
    plan = _start(tmp_path, {**files, "app.py": WSGI}, port=9123)
    argv = plan.server.argv
    assert argv[0] == f"{ENV}/bin/gunicorn" and argv[-1] == "warp_app:application"
    # Only what must win is on the command line: the bind; our sizing goes to our config, under the app's.
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:9123"
    assert "--workers" not in argv and "--threads" not in argv
    assert argv[argv.index("--config") + 1] == f"{ENV}/warp/gunicorn_conf.py"
    env = plan.server.env
    assert env["WARP_GUNICORN_CONFIG"] == f"{PROJECT}/gunicorn.conf.py"
    assert env["WARP_APP_TARGET"] == "app:application"
    assert {"WARP_GUNICORN_WORKERS", "WARP_GUNICORN_THREADS", "WARP_GUNICORN_CHDIR"} <= set(env)
    notes = "\n".join(plan.notes)
    assert "its settings kept: workers, wsgi_app" in notes and "replaced: bind (by --port" in notes
    assert "gunicorn's workers are what gunicorn.conf.py sets" in notes
    assert "warptasks' defaults where it is silent: threads, worker_class, chdir, access log" in notes


def test_gunicorn_without_the_apps_config_is_as_before(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": WSGI}), server="gunicorn")
    plan = plan_start(spec, built("gunicorn"), StartOptions(project=PROJECT))
    assert "--workers" in plan.server.argv and "WARP_GUNICORN_CONFIG" not in plan.server.env


def test_setup_name_not_literal_is_read_at_start_with_the_apps_python(tmp_path: Path) -> None:
    plan = _start(tmp_path, {"setup.py": "from setuptools import setup\nsetup(name=open('NAME').read())\n"})
    argv = plan.server.argv
    assert argv[:2] == (f"{ENV}/bin/python", "-I") and argv[4] == SETUP_NAME and argv[5] == "--"
    assert "mod_wsgi-express" in " ".join(argv[6:]) and SETUP_NAME in argv[6:]
    assert any("setup.py --name" in note for note in plan.notes)


def test_a_served_app_py_gets_the_port_check_and_a_script_its_wrapper(tmp_path: Path) -> None:
    flask = _start(tmp_path / "flask", {"app.py": FLASK})
    assert "mod_wsgi-express" in " ".join(flask.server.argv) and any(c.name == "port" for c in flask.checks)
    script = _start(tmp_path / "script", {"app.py": WSGIREF_SERVES})
    assert script.server.argv[1] == "-c" and script.server.argv[-1] == "app.py"


def test_setup_name_as_root_runs_setup_py_as_the_workers_account(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"setup.py": "from setuptools import setup\nsetup(name=open('NAME').read())\n"}))
    plan = plan_start(spec, built("mod_wsgi", euid=0), StartOptions(project=PROJECT))
    argv = plan.server.argv
    assert argv[4:9] == ("--as", "www-data", "www-data", SETUP_NAME, "--")
    gunicorn = detect_app(
        write_tree(tmp_path / "g", {"setup.py": "import setuptools\nsetuptools.setup(name=f())\n"}), server="gunicorn"
    )
    wrapped = plan_start(gunicorn, built("gunicorn", euid=0), StartOptions(project=PROJECT)).server.argv
    # run_as.py drops to the account first; setup_name.py then has nothing to drop.
    assert "run_as" in wrapped[3] and "--as" not in wrapped and SETUP_NAME in wrapped


def test_a_gunicorn_config_another_server_ignores_is_said_to_be_ignored(tmp_path: Path) -> None:
    plan = _start(tmp_path, {"gunicorn.conf.py": "workers = 3\n", "wsgi.py": WSGI})
    assert "gunicorn config: gunicorn.conf.py is read by gunicorn only (--server gunicorn), not by mod_wsgi" in plan.notes
    assert not any("gunicorn config" in note for note in _start(tmp_path / "plain", {"wsgi.py": WSGI}).notes)
