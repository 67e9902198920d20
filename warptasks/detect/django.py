"""What can be known about a Django project without importing it."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import NoAppFound
from .conventions import where_set
from .readsource import parse_source, read_source

_SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""")


@dataclass(frozen=True)
class DjangoProject:
    settings: str
    wsgi_application: str  # dotted path, "mysite.wsgi.application"
    asgi_application: str | None
    has_static_root: bool
    static_url: str | None
    why: str


def settings_module(root: Path, environment: dict[str, str]) -> tuple[str, str]:
    """The settings module and where it was found.

    ``DJANGO_SETTINGS_MODULE`` exported in the environment warp runs in (passed in ``environment``, a
    :class:`~warptasks.detect.conventions.Sourced`), else the environment file's, else manage.py's
    ``os.environ.setdefault(...)``, which is only a default: Django itself reads it the same way.
    """
    if environment.get("DJANGO_SETTINGS_MODULE"):
        return environment["DJANGO_SETTINGS_MODULE"], f"DJANGO_SETTINGS_MODULE {where_set(environment, 'DJANGO_SETTINGS_MODULE')}"
    try:
        text = read_source(root / "manage.py")
    except OSError as error:
        raise NoAppFound(
            f"manage.py cannot be read: {error.strerror}",
            "make manage.py a plain file of the project, or set DJANGO_SETTINGS_MODULE in .warpdrive/environment",
        ) from None
    match = _SETTINGS.search(text)
    if not match:
        raise NoAppFound(
            "manage.py does not name a settings module",
            "set DJANGO_SETTINGS_MODULE in .warpdrive/environment (or .s2i/environment)",
        )
    return match.group(1), "manage.py sets DJANGO_SETTINGS_MODULE"


def module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _assignments(path: Path) -> dict[str, ast.expr]:
    try:
        tree = parse_source(path)
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
            value = node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
            value = node.value
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = value
    return found


def _string(expr: ast.expr | None) -> str | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    return None


def detect_django(root: Path, environment: dict[str, str]) -> DjangoProject:
    settings, settings_why = settings_module(root, environment)
    path = module_file(root, settings)
    if path is None:
        raise NoAppFound(
            f"Django settings module {settings!r} ({settings_why}): {settings.replace('.', '/')}.py does not exist",
            f"fix DJANGO_SETTINGS_MODULE ({settings_why})",
        )
    names = _assignments(path)
    package = settings.split(".")[0]
    wsgi = _string(names.get("WSGI_APPLICATION"))
    if wsgi:
        wsgi_why = f"WSGI_APPLICATION in {path.relative_to(root)}"
    elif module_file(root, f"{package}.wsgi"):
        wsgi, wsgi_why = f"{package}.wsgi.application", f"{package}/wsgi.py (WSGI_APPLICATION not set literally)"
    else:
        raise NoAppFound(
            f"cannot find the WSGI application of Django settings {settings!r}",
            "set WSGI_APPLICATION = 'package.wsgi.application' in the settings",
        )
    asgi = _string(names.get("ASGI_APPLICATION"))
    return DjangoProject(
        settings=settings,
        wsgi_application=wsgi,
        asgi_application=asgi,
        has_static_root="STATIC_ROOT" in names
        and not (isinstance(names["STATIC_ROOT"], ast.Constant) and names["STATIC_ROOT"].value is None),
        static_url=_string(names.get("STATIC_URL")),
        why=f"manage.py: Django, settings {settings} ({settings_why}), application {wsgi} ({wsgi_why})",
    )
