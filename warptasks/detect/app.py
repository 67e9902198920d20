"""Detection: a source tree in, an :class:`AppSpec` out. Nothing is run."""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NoAppFound
from ..servers import ALIASES, AUTO, names, normal_name
from .conventions import (
    PROCESS_BUILD_INPUTS,
    SERVER_SETTINGS,
    Sourced,
    find_hooks,
    process_settings,
    read_environment,
    read_setting_files,
)
from .deps import Dependencies, PythonRequest, detect_dependencies, detect_python
from .django import DjangoProject, detect_django

# How an app is served, in the order detection tries them.
APP_KINDS = ("shell", "script", "django", "wsgi", "paste", "asgi", "procfile")
LOOKED_FOR = "app.sh, app.py, manage.py (Django), wsgi.py, paste.ini/production.ini, asgi.py, a Procfile with a web: line"

# The server settings a project may hold: auto or a registered server (see warptasks.servers).
SERVERS = (AUTO, *names())
# Other names for servers, warpdrive's among them, kept working; each server's module lists its own.
SERVER_ALIASES = ALIASES


@dataclass(frozen=True)
class AppSpec:
    """Everything detection learnt about a project, as plain data.

    ``kind`` is one of :data:`APP_KINDS`. ``target`` is what the server loads:
    a file for shell/script/paste, ``module:callable`` for wsgi/django/asgi,
    a command line for procfile. ``home`` (where the app lives, ``.`` unless
    APP_HOME says otherwise) and ``hooks`` are relative to the project root, so
    the same spec plans a build in another place (an image, a remote host).
    """

    root: str
    home: str
    kind: str
    target: str
    why: str
    dependencies: Dependencies
    python: PythonRequest
    server: str
    server_why: str
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: tuple[str, ...] = ()
    hooks: dict[str, str] = field(default_factory=dict)
    hook_executable: dict[str, bool] = field(default_factory=dict)
    build_inputs_digest: str = ""
    django: DjangoProject | None = None
    static_url: str | None = None
    static_dir: str | None = None
    static_why: str = ""
    # Every line of the Procfile, in its order: process type -> shell command (``web``, ``release`` and the others).
    procfile: dict[str, str] = field(default_factory=dict)
    # The process environment's variables that count over the environment file's (PORT, DJANGO_SETTINGS_MODULE: see
    # warptasks.detect.conventions.PROCESS_SETTINGS); empty unless the task passed the process environment (local
    # tasks only: never a deploy or an image).
    process_environment: dict[str, str] = field(default_factory=dict)

    @property
    def process_types(self) -> dict[str, str]:
        """The Procfile's process types run beside the web server (``worker``, ``clock``...): all but web and release."""
        return {name: command for name, command in self.procfile.items() if name not in ("web", "release")}

    @property
    def release_command(self) -> str | None:
        """The Procfile's ``release:`` command, run once per deploy before any host switches; None without one."""
        return self.procfile.get("release")

    @property
    def is_asgi(self) -> bool:
        return self.kind == "asgi"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normal_server(value: str, source: str) -> str:
    name = normal_name(value)
    if name not in SERVERS:
        raise ConfigError(
            f"unknown server type {value!r} ({source})",
            f"valid server types: {', '.join(SERVERS)}",
        )
    return name


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # ASCII, as module files and Apache's configuration take them


def _is_name(word: str) -> bool:
    return bool(_IDENTIFIER.match(word)) and not keyword.iskeyword(word)


def checked_target(setting: str, where: str, value: str, module: str, name: str) -> str:
    """``module:name``, once both are Python names (the module dotted); else an error naming ``setting``, ``where`` it is
    set, and ``value``.

    The target reaches mod_wsgi-express's generated handler script and other servers' arguments as it is, and
    the loaders only import a module and read one attribute: anything else could only fail there, or do worse.
    """
    if not (all(_is_name(part) for part in module.split(".")) and _is_name(name)):
        raise ConfigError(
            f"{setting}={value!r} ({where}) does not name a Python module and callable",
            f"fix {setting} {where}: write it as package.module or package.module:callable (letters, digits and _, "
            "dots between the module's parts; the callable defaults to application)",
        )
    return f"{module}:{name}"


def module_target(setting: str, where: str, value: str) -> str:
    """``package.module[:callable]`` as ``module:callable``, checked; no callable is ``application``, as the loaders read it."""
    module, _, name = value.partition(":")
    return checked_target(setting, where, value, module, name or "application")


def _callable_in(path: Path, candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` defined at the top level of a module."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return next((c for c in candidates if c in names), None)


def _wsgi_app_in(path: Path) -> str | None:
    """The ``wsgi_app = "module:callable"`` a gunicorn config file sets, if any (read, never run)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "wsgi_app" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) and node.value.value.strip():
                return node.value.value.strip()
    return None


PROCESS_TYPE = re.compile(r"[A-Za-z0-9_-]+\Z")
_PROCFILE_LINE = re.compile(r"^\s*([^:\s#][^:]*?)\s*:(.*)$")


def parse_procfile(text: str, where: str = "Procfile") -> dict[str, str]:
    """A Procfile's lines as {process type: command}, in order; blank lines and ``#`` comments skipped.

    A type is letters, digits, ``_`` and ``-`` (it names log files and systemd units); each appears once and has a
    command. Anything else is an error naming the line: a worker that silently never runs is worse.
    """
    processes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _PROCFILE_LINE.match(line)
        if not match:
            raise ConfigError(
                f"{where} line {number} is not 'type: command': {stripped[:80]!r}",
                f"fix line {number} of {where}: each line is a process type, a colon and its command (web: gunicorn app:app)",
            )
        name, command = match.group(1), match.group(2).strip()
        if not PROCESS_TYPE.match(name):
            raise ConfigError(
                f"{where} line {number}: {name!r} is not a process type name",
                "name process types with letters, digits, _ and - only (worker, clock, high-priority)",
            )
        if name in processes:
            raise ConfigError(f"{where} line {number}: {name} is given twice", f"keep one {name}: line in {where}")
        if not command:
            raise ConfigError(f"{where} line {number}: {name} has no command", f"write the command after '{name}:'")
        processes[name] = command
    return processes


def read_procfile(root: Path) -> dict[str, str]:
    """The Procfile in ``root`` (see :func:`parse_procfile`); none there: no process types."""
    path = root / "Procfile"
    if not path.is_file():
        return {}
    return parse_procfile(path.read_text(encoding="utf-8", errors="replace"))


def _procfile_web(root: Path) -> str | None:
    return read_procfile(root).get("web")


def _entry(root: Path, environment: dict[str, str]) -> tuple[str, str, str, DjangoProject | None]:
    """(kind, target, why, django) for the first rule that matches."""
    # OpenShift S2I Python builder settings name the entry explicitly.
    if environment.get("APP_SCRIPT"):
        return "shell", environment["APP_SCRIPT"], "APP_SCRIPT in the environment file (S2I convention)", None
    if environment.get("APP_FILE"):
        return "script", environment["APP_FILE"], "APP_FILE in the environment file (S2I convention)", None
    if environment.get("APP_MODULE"):
        target = module_target("APP_MODULE", "in the environment file", environment["APP_MODULE"])
        return "wsgi", target, "APP_MODULE in the environment file (S2I convention)", None
    if (root / "app.sh").is_file():
        return "shell", "app.sh", "app.sh exists: it is run with bash and must exec the server", None
    if (root / "app.py").is_file():
        return "script", "app.py", "app.py exists: it is run with python and serves the app itself", None
    if (root / "manage.py").is_file():
        django = detect_django(root, environment)
        module, _, name = django.wsgi_application.rpartition(".")
        where = f"in the Django settings {django.settings}"
        target = checked_target("WSGI_APPLICATION", where, django.wsgi_application, module, name)
        return "django", target, django.why, django
    config = environment.get("APP_CONFIG") or ("gunicorn.conf.py" if (root / "gunicorn.conf.py").is_file() else "")
    wsgi_app = _wsgi_app_in(root / config) if config else None
    if wsgi_app:
        target = module_target("wsgi_app", f"in {config}", wsgi_app)
        return "wsgi", target, f"wsgi_app in {config} (gunicorn setting, S2I convention)", None
    if (root / "wsgi.py").is_file():
        name = _callable_in(root / "wsgi.py", ("application", "app")) or "application"
        return "wsgi", f"wsgi:{name}", f"wsgi.py exists (callable {name!r})", None
    for ini in ("paste.ini", "production.ini"):
        if (root / ini).is_file():
            return "paste", ini, f"{ini} exists: a Paste Deploy application", None
    if (root / "asgi.py").is_file():
        name = _callable_in(root / "asgi.py", ("application", "app")) or "application"
        return "asgi", f"asgi:{name}", f"asgi.py exists (callable {name!r}): an ASGI app, served by an ASGI server", None
    web = _procfile_web(root)
    if web:
        return "procfile", web, "the Procfile's web: line", None
    raise NoAppFound(
        f"no application found in {root}",
        f"warptasks looked for {LOOKED_FOR}; add one of them (a wsgi.py with an 'application' is the simplest)",
    )


# Never part of what a build depends on or ships: environments, VCS data, caches.
UNTRACKED_DIRS = frozenset(
    {
        ".warp",
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        "node_modules",
        ".venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)


def build_inputs_digest(root: Path, environment: dict[str, str], hooks: dict[str, str]) -> str:
    """What else decides an environment's content: the environment file and the hooks run before installs."""
    sha = hashlib.sha256(json.dumps(environment, sort_keys=True).encode())
    for name in ("pre-build", "build-env"):
        if name in hooks:
            sha.update(name.encode() + b"\0" + (root / hooks[name]).read_bytes())
    return sha.hexdigest()


def detect_app(root: Path | str, *, server: str | None = None, environ: Mapping[str, str] | None = None) -> AppSpec:
    """Detect how the project at ``root`` is built and served.

    ``environ``: the environment warp runs in, passed by a local task (``os.environ``; tests pass dicts); of it only
    :data:`~warptasks.detect.conventions.PROCESS_SETTINGS` count, over the environment files. None (deploys, images):
    the project's files alone decide.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise NoAppFound(f"{root} is not a directory", "run warp in the project's folder, or pass --project")
    environment, env_files = read_environment(root)
    settings = read_setting_files(root)
    for name, value in settings.items():
        environment.setdefault(name, value)
    home_setting = next((n for n in ("APP_HOME", "WARPDRIVE_APP_HOME") if environment.get(n)), None)
    if home_setting:
        home = (root / environment[home_setting]).resolve()
        if not home.is_dir() or not home.is_relative_to(root):
            raise ConfigError(
                f"{home_setting}={environment[home_setting]!r} is not a folder of the project",
                f"fix {home_setting} in the environment file",
            )
    else:
        home = root
    process = process_settings(environ)
    kind, target, why, django = _entry(home, Sourced(environment, process))
    if home != root:
        why += f" (in {home_setting}={environment[str(home_setting)]})"
    hooks, hook_executable = find_hooks(root)

    if server:
        chosen, server_why = normal_server(server, "--server"), "chosen with --server (or the warp.server setting)"
    else:
        setting = next((n for n in SERVER_SETTINGS if environment.get(n)), None)
        if setting:
            chosen = normal_server(environment[setting], f"{setting} in the environment file")
            server_why = f"{setting} in the environment file"
        else:
            chosen, server_why = "auto", "default"

    static_url = static_dir = None
    static_why = "no static files found (no Django, no static/ folder)"
    if django:
        static_url = django.static_url or "/static/"
        static_why = "Django STATIC_URL" + ("" if django.static_url else " (not set literally: /static/)")
        if not django.has_static_root:
            static_why += "; STATIC_ROOT is not set, so warptasks supplies one for collectstatic"
    elif environment.get("WARP_STATIC_URL") or (home / "static").is_dir():
        static_url = environment.get("WARP_STATIC_URL", "/static/")
        static_dir = environment.get("WARP_STATIC_DIR", "static")
        static_why = f"{static_dir}/ is served at {static_url}"

    deps = detect_dependencies(home, environment)
    return AppSpec(
        root=str(root),
        home=home.relative_to(root).as_posix() if home != root else ".",
        kind=kind,
        target=target,
        why=why,
        dependencies=deps,
        python=detect_python(home, environment),
        server=chosen,
        server_why=server_why,
        environment=environment,
        environment_files=env_files,
        hooks=hooks,
        hook_executable=hook_executable,
        build_inputs_digest=build_inputs_digest(
            root, {**environment, **{k: v for k, v in process.items() if k in PROCESS_BUILD_INPUTS and django}}, hooks
        ),
        django=django,
        static_url=static_url,
        static_dir=static_dir,
        static_why=static_why,
        procfile=read_procfile(home),
        process_environment=process,
    )
