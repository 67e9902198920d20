"""What is learnt about a Django project by reading, never importing, it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cases import MANAGE, django_tree, write_tree
from warptasks.detect import detect_app
from warptasks.detect.django import detect_django
from warptasks.errors import NoAppFound

# settings.py text -> (has_static_root, static_url)
STATIC_SETTINGS = [
    pytest.param("STATIC_URL = '/static/'\nSTATIC_ROOT = '/srv/static'\n", (True, "/static/"), id="both-literal"),
    pytest.param(
        "from pathlib import Path\nBASE_DIR = Path(__file__).parent\nSTATIC_ROOT = BASE_DIR / 'static'\n",
        (True, None),
        id="static-root-expression",
    ),
    pytest.param("STATIC_ROOT: str = 'static'\nSTATIC_URL: str = 'assets/'\n", (True, "assets/"), id="annotated"),
    pytest.param("STATIC_URL = '/static/'\nSTATIC_ROOT = None\n", (False, "/static/"), id="static-root-none"),
    pytest.param("STATIC_URL = '/static/'\n", (False, "/static/"), id="static-root-absent"),
    pytest.param(
        "import os\nif os.environ.get('X'):\n    STATIC_ROOT = 'static'\n", (False, None), id="static-root-not-top-level"
    ),
    pytest.param("import os\nSTATIC_URL = os.environ.get('STATIC_URL', '/s/')\n", (False, None), id="static-url-computed"),
    pytest.param("", (False, None), id="empty-settings"),
    pytest.param("this is not python(\n", (False, None), id="unparsable-settings"),
]


@pytest.mark.parametrize(("settings", "expected"), STATIC_SETTINGS)
def test_static_settings_are_read_literally(tmp_path: Path, settings: str, expected: tuple[bool, str | None]) -> None:
    project = detect_django(write_tree(tmp_path, django_tree(settings)), {})
    assert (project.has_static_root, project.static_url) == expected


def test_django_without_static_root_gets_one(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, django_tree("STATIC_URL = '/static/'\n")))
    assert spec.django is not None and not spec.django.has_static_root
    assert "warptasks supplies one" in spec.static_why


def test_django_with_static_root_keeps_it(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, django_tree("STATIC_ROOT = 'collected'\n")))
    assert spec.django is not None and spec.django.has_static_root
    assert "supplies" not in spec.static_why


def test_django_without_static_url_is_served_at_static(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, django_tree("STATIC_ROOT = 'x'\n")))
    assert spec.static_url == "/static/"
    assert "not set literally" in spec.static_why


# tree -> (settings module, wsgi application, phrase of why)
APPLICATION_CASES = [
    pytest.param(
        django_tree(),
        ("mysite.settings", "mysite.wsgi.application", "manage.py sets DJANGO_SETTINGS_MODULE"),
        id="settings-from-manage.py",
    ),
    pytest.param(
        django_tree(manage='os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n'),
        ("mysite.settings", "mysite.wsgi.application", "mysite/wsgi.py"),
        id="double-quotes",
    ),
    pytest.param(
        {**django_tree("WSGI_APPLICATION = 'mysite.server.app'\n"), "mysite/server.py": "app = None\n"},
        ("mysite.settings", "mysite.server.app", "WSGI_APPLICATION in mysite/settings.py"),
        id="WSGI_APPLICATION",
    ),
    pytest.param(
        {
            "manage.py": MANAGE.replace("mysite.settings", "mysite.settings.production"),
            "mysite/__init__.py": "",
            "mysite/settings/__init__.py": "",
            "mysite/settings/production.py": "DEBUG = False\n",
            "mysite/wsgi.py": "application = None\n",
        },
        ("mysite.settings.production", "mysite.wsgi.application", "mysite/wsgi.py"),
        id="settings-package-falls-back",
    ),
    pytest.param(
        {
            "manage.py": MANAGE,
            "mysite/__init__.py": "",
            "mysite/settings/__init__.py": "STATIC_ROOT = 's'\n",
            "mysite/wsgi.py": "",
        },
        ("mysite.settings", "mysite.wsgi.application", "mysite/wsgi.py"),
        id="settings-as-package-init",
    ),
    pytest.param(
        {
            **django_tree(),
            ".warpdrive/environment": "DJANGO_SETTINGS_MODULE=mysite.other\n",
            "mysite/other.py": "WSGI_APPLICATION = 'mysite.wsgi.application'\n",
        },
        ("mysite.other", "mysite.wsgi.application", "DJANGO_SETTINGS_MODULE in the environment file"),
        id="environment-file-beats-manage.py",
    ),
]


@pytest.mark.parametrize(("files", "expected"), APPLICATION_CASES)
def test_settings_and_application_are_found(tmp_path: Path, files: dict[str, str], expected: tuple[str, str, str]) -> None:
    spec = detect_app(write_tree(tmp_path, files))
    settings, application, reason = expected
    assert spec.kind == "django"
    assert spec.django is not None
    assert (spec.django.settings, spec.django.wsgi_application) == (settings, application)
    module, _, name = application.rpartition(".")
    assert spec.target == f"{module}:{name}"
    assert reason in spec.why


def test_asgi_application_is_recorded(tmp_path: Path) -> None:
    project = detect_django(write_tree(tmp_path, django_tree("ASGI_APPLICATION = 'mysite.asgi.application'\n")), {})
    assert project.asgi_application == "mysite.asgi.application"


# tree -> (phrase of message, phrase of hint)
BROKEN_CASES = [
    pytest.param(
        django_tree(manage="print('no settings here')\n"),
        ("does not name a settings module", "DJANGO_SETTINGS_MODULE"),
        id="manage.py-without-settings",
    ),
    pytest.param({"manage.py": MANAGE}, ("mysite/settings.py does not exist", "DJANGO_SETTINGS_MODULE"), id="settings-missing"),
    pytest.param(django_tree(wsgi=False), ("cannot find the WSGI application", "WSGI_APPLICATION"), id="no-wsgi-module"),
]


@pytest.mark.parametrize(("files", "expected"), BROKEN_CASES)
def test_broken_django_projects_say_what_to_fix(tmp_path: Path, files: dict[str, str], expected: tuple[str, str]) -> None:
    with pytest.raises(NoAppFound) as error:
        detect_app(write_tree(tmp_path, files))
    assert expected[0] in error.value.message
    assert expected[1] in error.value.hint
