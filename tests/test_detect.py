"""Detection: which entry point, server and static files a source tree implies."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cases import ASGI, FLASK_APP, MANAGE, WSGI, django_tree, write_tree
from warptasks.detect.app import LOOKED_FOR, SERVER_ALIASES, SERVERS, UNTRACKED_DIRS, detect_app
from warptasks.errors import ConfigError, NoAppFound
from warptasks.scripts.probe import tree_digest

DJANGO = django_tree("STATIC_URL = '/static/'\nSTATIC_ROOT = 'static'\n")

# files in the tree -> (kind, target, a phrase of the reason)
ENTRY_CASES = [
    pytest.param(
        {"app.sh": "exec x", "app.py": "", "wsgi.py": WSGI, **DJANGO},
        ("shell", "app.sh", "app.sh exists"),
        id="app.sh-beats-everything",
    ),
    pytest.param(
        {"app.py": "import server\nserver.main()\n", "wsgi.py": WSGI, **DJANGO},
        ("script", "app.py", "app.py runs server.main()"),
        id="app.py-beats-django",
    ),
    pytest.param(
        {**DJANGO, "wsgi.py": WSGI, "paste.ini": ""},
        ("django", "mysite.wsgi:application", "manage.py: Django"),
        id="django-beats-wsgi.py",
    ),
    pytest.param(
        {"wsgi.py": WSGI, "paste.ini": "", "asgi.py": ASGI, "Procfile": "web: x"},
        ("wsgi", "wsgi:application", "callable 'application'"),
        id="wsgi.py-application",
    ),
    pytest.param({"wsgi.py": FLASK_APP}, ("wsgi", "wsgi:app", "callable 'app'"), id="wsgi.py-app"),
    pytest.param({"wsgi.py": "from mysite import app\n"}, ("wsgi", "wsgi:app", "callable 'app'"), id="wsgi.py-imported-app"),
    pytest.param(
        {"wsgi.py": "app = 1\napplication = 2\n"},
        ("wsgi", "wsgi:application", "'application'"),
        id="wsgi.py-application-preferred-over-app",
    ),
    pytest.param({"wsgi.py": "import os\n"}, ("wsgi", "wsgi:application", "wsgi.py exists"), id="wsgi.py-no-callable-defaults"),
    pytest.param(
        {"wsgi.py": "def broken(:\n"}, ("wsgi", "wsgi:application", "wsgi.py exists"), id="wsgi.py-syntax-error-defaults"
    ),
    pytest.param(
        {"paste.ini": "", "production.ini": "", "asgi.py": ASGI},
        ("paste", "paste.ini", "Paste Deploy"),
        id="paste.ini-beats-production.ini-and-asgi",
    ),
    pytest.param(
        {"production.ini": "", "Procfile": "web: x"}, ("paste", "production.ini", "production.ini exists"), id="production.ini"
    ),
    pytest.param({"asgi.py": ASGI, "Procfile": "web: x"}, ("asgi", "asgi:application", "ASGI app"), id="asgi.py-beats-procfile"),
    pytest.param(
        {"asgi.py": "from fastapi import FastAPI\napp = FastAPI()\n"}, ("asgi", "asgi:app", "callable 'app'"), id="asgi.py-app"
    ),
    pytest.param(
        {"Procfile": "worker: celery\nweb: gunicorn -b :$PORT mysite.wsgi\n"},
        ("procfile", "gunicorn -b :$PORT mysite.wsgi", "Procfile's web: line"),
        id="procfile-web-line",
    ),
    pytest.param({"Procfile": "  web :  python serve.py  \n"}, ("procfile", "python serve.py", "web:"), id="procfile-spacing"),
]


@pytest.mark.parametrize(("files", "expected"), ENTRY_CASES)
def test_entry_point_follows_detection_order(tmp_path: Path, files: dict[str, str], expected: tuple[str, str, str]) -> None:
    spec = detect_app(write_tree(tmp_path, files))
    kind, target, reason = expected
    assert (spec.kind, spec.target) == (kind, target)
    assert reason in spec.why


# S2I builder settings name the entry point and win over files.
S2I_CASES = [
    pytest.param("APP_SCRIPT=run.sh", ("shell", "run.sh", "APP_SCRIPT"), id="APP_SCRIPT"),
    pytest.param("APP_FILE=serve.py", ("script", "serve.py", "APP_FILE"), id="APP_FILE"),
    pytest.param("APP_MODULE=mysite.web", ("wsgi", "mysite.web:application", "APP_MODULE"), id="APP_MODULE-default-callable"),
    pytest.param("APP_MODULE=mysite.web:app", ("wsgi", "mysite.web:app", "APP_MODULE"), id="APP_MODULE-with-callable"),
    pytest.param("APP_SCRIPT=run.sh\nAPP_FILE=serve.py", ("shell", "run.sh", "APP_SCRIPT"), id="APP_SCRIPT-beats-APP_FILE"),
]


@pytest.mark.parametrize("env_dir", [".s2i", ".warpdrive"])
@pytest.mark.parametrize(("environment", "expected"), S2I_CASES)
def test_s2i_settings_name_the_entry_point(
    tmp_path: Path, env_dir: str, environment: str, expected: tuple[str, str, str]
) -> None:
    files = {"app.sh": "", "wsgi.py": WSGI, f"{env_dir}/environment": environment + "\n"}
    spec = detect_app(write_tree(tmp_path, files))
    kind, target, reason = expected
    assert (spec.kind, spec.target) == (kind, target)
    assert reason in spec.why
    assert spec.environment_files == (f"{env_dir}/environment",)


# The app's module and callable reach mod_wsgi-express's generated handler and other servers' arguments:
# only what can be imported (dotted Python names, an optional :callable) is accepted.
GOOD_MODULES = [
    pytest.param("mysite.web:", "mysite.web:application", id="empty-callable-is-application"),
    pytest.param("_a.b2:App_1", "_a.b2:App_1", id="underscores-and-digits"),
]


@pytest.mark.parametrize(("value", "target"), GOOD_MODULES)
def test_app_module_names_a_module_and_callable(tmp_path: Path, value: str, target: str) -> None:
    spec = detect_app(write_tree(tmp_path, {".s2i/environment": f"APP_MODULE={value}\n"}))
    assert (spec.kind, spec.target) == ("wsgi", target)


BAD_MODULES = [
    pytest.param("mysite.web;touch /tmp/x", id="shell"),
    pytest.param("mysite.web:app;import os", id="code-after-callable"),
    pytest.param("mysite.web:create_app()", id="factory-call"),
    pytest.param("mysite.web:app.attr", id="dotted-callable"),
    pytest.param("mysite.web:a:b", id="two-colons"),
    pytest.param("my-site.web", id="dash"),
    pytest.param("mysite..web", id="empty-module-part"),
    pytest.param(".mysite", id="relative"),
    pytest.param("mysite web", id="space"),
    pytest.param("mysite.web:app'", id="quote"),
    pytest.param("1mysite", id="leading-digit"),
    pytest.param("mysite.class", id="keyword"),
    pytest.param("mysit\u00e9", id="non-ascii"),
    pytest.param(":app", id="no-module"),
]


@pytest.mark.parametrize("value", BAD_MODULES)
def test_app_module_that_is_not_a_dotted_python_name_is_refused(tmp_path: Path, value: str) -> None:
    write_tree(tmp_path, {".s2i/environment": f"APP_MODULE={value}\n", "wsgi.py": WSGI})
    with pytest.raises(ConfigError, match="APP_MODULE") as error:
        detect_app(tmp_path)
    assert repr(value) in str(error.value) and "package.module:callable" in error.value.hint


@pytest.mark.parametrize(
    ("files", "setting", "value"),
    [
        # gunicorn's factory form is accepted (see test_detect_entry), but only as gunicorn reads it
        pytest.param(
            {"gunicorn.conf.py": "wsgi_app = 'mysite.web:create_app(os.environ)'\n"},
            "wsgi_app",
            "mysite.web:create_app(os.environ)",
            id="gunicorn-wsgi_app-factory-argument-not-literal",
        ),
        pytest.param(
            {"gunicorn.conf.py": "wsgi_app = 'mysite.web:factory.make()'\n"},
            "wsgi_app",
            "mysite.web:factory.make()",
            id="gunicorn-wsgi_app-factory-not-a-plain-name",
        ),
        pytest.param(
            {"gunicorn.conf.py": "wsgi_app = 'mysite.web:create_app()()'\n"},
            "wsgi_app",
            "mysite.web:create_app()()",
            id="gunicorn-wsgi_app-called-twice",
        ),
        pytest.param(
            {"gunicorn.conf.py": "wsgi_app = 'mysite.web:create_app(**{})'\n"},
            "wsgi_app",
            "mysite.web:create_app(**{})",
            id="gunicorn-wsgi_app-factory-double-star",
        ),
        pytest.param(
            {"gunicorn.conf.py": "wsgi_app = 'my site:create_app()'\n"},
            "wsgi_app",
            "my site:create_app()",
            id="gunicorn-wsgi_app-factory-bad-module",
        ),
        pytest.param(
            django_tree("WSGI_APPLICATION = 'mysite.wsgi.application; x'\n"),
            "WSGI_APPLICATION",
            "mysite.wsgi.application; x",
            id="django-WSGI_APPLICATION",
        ),
    ],
)
def test_other_settings_naming_the_app_are_checked_too(tmp_path: Path, files: dict[str, str], setting: str, value: str) -> None:
    with pytest.raises(ConfigError, match=setting) as error:
        detect_app(write_tree(tmp_path, files))
    assert repr(value) in str(error.value)


@pytest.mark.parametrize(
    ("files", "home"),
    [
        pytest.param({".s2i/environment": "APP_HOME=src\n", "src/wsgi.py": WSGI}, "src", id="APP_HOME"),
        pytest.param({".warpdrive/home": "web/app\n", "web/app/wsgi.py": WSGI}, "web/app", id="warpdrive-home-file"),
        pytest.param({".s2i/environment": "APP_HOME=./src/\n", "src/app.py": "app.run()\n"}, "src", id="APP_HOME-normalised"),
    ],
)
def test_app_home_moves_detection_into_a_subfolder(tmp_path: Path, files: dict[str, str], home: str) -> None:
    spec = detect_app(write_tree(tmp_path, {"app.sh": "", **files}))
    assert spec.home == home
    assert spec.kind != "shell", "app.sh at the root must be ignored when the app lives elsewhere"
    assert f"={home}" in spec.why or home in spec.why


@pytest.mark.parametrize("home", ["missing", "..", "wsgi.py"])
def test_app_home_outside_the_project_or_missing_is_an_error(tmp_path: Path, home: str) -> None:
    write_tree(tmp_path, {".s2i/environment": f"APP_HOME={home}\n", "wsgi.py": WSGI})
    with pytest.raises(ConfigError, match="APP_HOME") as error:
        detect_app(tmp_path)
    assert "environment file" in error.value.hint


def test_without_app_home_the_project_root_is_home(tmp_path: Path) -> None:
    assert detect_app(write_tree(tmp_path, {"wsgi.py": WSGI})).home == "."


# files -> (server, phrase of server_why); --server not given
SERVER_CASES = [
    pytest.param({}, ("auto", "default"), id="default-auto"),
    pytest.param({".warpdrive/server_type": "gunicorn\n"}, ("gunicorn", "WARPDRIVE_SERVER_TYPE"), id="server_type-file"),
    pytest.param({".warpdrive/server_type": "  \n"}, ("auto", "default"), id="empty-server_type-file"),
    pytest.param({".warpdrive/environment": "WARPDRIVE_SERVER_TYPE=uwsgi\n"}, ("uwsgi", "WARPDRIVE_SERVER_TYPE"), id="env-file"),
    pytest.param({".s2i/environment": "WARP_SERVER=waitress\n"}, ("waitress", "WARP_SERVER"), id="WARP_SERVER"),
    pytest.param(
        {".warpdrive/environment": "WARPDRIVE_SERVER_TYPE=mod_wsgi-express\n"},
        ("mod_wsgi", "WARPDRIVE_SERVER_TYPE"),
        id="warpdrive-alias",
    ),
    pytest.param({".warpdrive/environment": "WARPDRIVE_SERVER_TYPE=Gunicorn\n"}, ("gunicorn", ""), id="case-insensitive"),
    pytest.param(
        {".warpdrive/server_type": "gunicorn", ".warpdrive/environment": "WARPDRIVE_SERVER_TYPE=uwsgi\n"},
        ("uwsgi", "environment file"),
        id="env-file-beats-server_type-file",
    ),
    pytest.param(
        {".warpdrive/environment": "WARPDRIVE_SERVER_TYPE=uwsgi\nWARP_SERVER=waitress\n"},
        ("uwsgi", "WARPDRIVE_SERVER_TYPE"),
        id="WARPDRIVE_SERVER_TYPE-read-first",
    ),
]


@pytest.mark.parametrize(("files", "expected"), SERVER_CASES)
def test_server_type_comes_from_settings(tmp_path: Path, files: dict[str, str], expected: tuple[str, str]) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": WSGI, **files}))
    assert (spec.server, expected[1] in spec.server_why) == (expected[0], True)


@pytest.mark.parametrize(("alias", "name"), sorted(SERVER_ALIASES.items()))
def test_every_servers_aliases_are_read_as_its_name(tmp_path: Path, alias: str, name: str) -> None:
    # Each server's module lists its aliases; detection accepts them wherever a server is named.
    write_tree(tmp_path, {"wsgi.py": WSGI, ".warpdrive/environment": f"WARPDRIVE_SERVER_TYPE={alias.upper()}\n"})
    assert detect_app(tmp_path).server == name
    assert detect_app(tmp_path, server=alias).server == name


def test_server_option_beats_the_environment_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, ".warpdrive/environment": "WARPDRIVE_SERVER_TYPE=uwsgi\n"})
    spec = detect_app(tmp_path, server="gunicorn")
    assert spec.server == "gunicorn"
    assert spec.server_why.startswith("chosen with --server")


@pytest.mark.parametrize(
    ("files", "server", "source"),
    [
        pytest.param({".warpdrive/server_type": "tomcat"}, None, "WARPDRIVE_SERVER_TYPE", id="server_type-file"),
        pytest.param({".s2i/environment": "WARP_SERVER=nginx"}, None, "WARP_SERVER", id="env-file"),
        pytest.param({}, "apache", "--server", id="option"),
    ],
)
def test_unknown_server_type_lists_the_valid_ones(tmp_path: Path, files: dict[str, str], server: str | None, source: str) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, **files})
    with pytest.raises(ConfigError, match="unknown server type") as error:
        detect_app(tmp_path, server=server)
    assert source in error.value.message
    for valid in SERVERS:
        assert valid in error.value.hint


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({}, id="empty"),
        pytest.param({"README.md": "hi", "main.py": "", "requirements.txt": "flask\n"}, id="no-entry-point"),
        pytest.param({"Procfile": "worker: celery -A x\n"}, id="procfile-without-web"),
    ],
)
def test_no_app_found_says_what_was_looked_for(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(NoAppFound) as error:
        detect_app(write_tree(tmp_path, files))
    text = str(error.value)
    for looked_for in ("app.sh", "app.py", "manage.py", "wsgi.py", "paste.ini", "production.ini", "asgi.py", "Procfile"):
        assert looked_for in text
    assert LOOKED_FOR in error.value.hint


def test_a_missing_project_folder_is_no_app(tmp_path: Path) -> None:
    with pytest.raises(NoAppFound, match="not a directory"):
        detect_app(tmp_path / "nowhere")


# files -> (static_url, static_dir)
STATIC_CASES = [
    pytest.param({"wsgi.py": WSGI}, (None, None), id="none"),
    pytest.param({"wsgi.py": WSGI, "static/": ""}, ("/static/", "static"), id="static-folder"),
    pytest.param(
        {"wsgi.py": WSGI, ".s2i/environment": "WARP_STATIC_URL=/assets/\nWARP_STATIC_DIR=public\n"},
        ("/assets/", "public"),
        id="settings",
    ),
    pytest.param(
        {"src/wsgi.py": WSGI, "src/static/": "", ".s2i/environment": "APP_HOME=src"},
        ("/static/", "static"),
        id="static-folder-in-app-home",
    ),
    pytest.param(
        {"src/wsgi.py": WSGI, "static/": "", ".s2i/environment": "APP_HOME=src"},
        (None, None),
        id="static-folder-outside-app-home",
    ),
    pytest.param({**django_tree("STATIC_URL = '/s/'\nSTATIC_ROOT = 'x'\n"), "static/": ""}, ("/s/", None), id="django"),
]


@pytest.mark.parametrize(("files", "expected"), STATIC_CASES)
def test_static_files_are_found(tmp_path: Path, files: dict[str, str], expected: tuple[str | None, str | None]) -> None:
    spec = detect_app(write_tree(tmp_path, files))
    assert (spec.static_url, spec.static_dir) == expected
    assert spec.static_why


def test_spec_is_plain_json_data(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {**django_tree("STATIC_ROOT = 'x'\n"), "requirements.txt": "django\n", ".warpdrive/action_hooks/build": "echo hi\n"},
    )
    data: dict[str, Any] = json.loads(json.dumps(detect_app(tmp_path).as_dict()))
    assert data["kind"] == "django"
    assert data["dependencies"]["files"] == ["requirements.txt"]
    assert data["hooks"] == {"build": ".warpdrive/action_hooks/build"}
    assert data["django"]["settings"] == "mysite.settings"


def source_digest(root: Path) -> str:
    return tree_digest(str(root), sorted(UNTRACKED_DIRS))


def test_source_digest_changes_with_a_file_and_ignores_environments(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, ".warp/envs/x/lib.py": "a", "__pycache__/wsgi.cpython-311.pyc": "b"})
    before = source_digest(tmp_path)
    write_tree(
        tmp_path,
        {".warp/envs/x/lib.py": "changed", ".git/HEAD": "ref", "mod.pyc": "c", "__pycache__/wsgi.cpython-311.pyc": "changed"},
    )
    assert source_digest(tmp_path) == before
    (tmp_path / "wsgi.py").write_text(WSGI + "# changed\n", encoding="utf-8")
    assert source_digest(tmp_path) != before


def test_source_digest_sees_a_touched_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI})
    before = source_digest(tmp_path)
    stat = os.stat(tmp_path / "wsgi.py")
    os.utime(tmp_path / "wsgi.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source_digest(tmp_path) != before


def test_manage_py_constant_is_a_django_project(tmp_path: Path) -> None:
    # The shared fixture tree itself must be detected as Django, or the cases above prove nothing.
    assert "DJANGO_SETTINGS_MODULE" in MANAGE
    assert detect_app(write_tree(tmp_path, django_tree())).kind == "django"
