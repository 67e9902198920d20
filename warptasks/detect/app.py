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
from .appfile import FRAMEWORKS, assigned_names, module_name, read_script, setup_name
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
from .readsource import parse_source, project_bytes, read_source

# How an app is served, in the order detection tries them.
APP_KINDS = ("shell", "script", "django", "wsgi", "paste", "asgi", "procfile")
LOOKED_FOR = (
    "a gunicorn.conf.py with wsgi_app, app.sh, app.py (serving itself or defining an app), manage.py (Django), wsgi.py, "
    "paste.ini/production.ini, asgi.py, a Procfile with a web: line, setup.py (its name), main.py"
)
# The target's module when setup.py's name is not literal: replaced at start by what setup.py --name prints there.
SETUP_NAME = "__warp_setup_name__"

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
    # The app's gunicorn configuration file (APP_CONFIG, else gunicorn.conf.py), relative to ``home``; "" for none.
    # gunicorn loads it whenever gunicorn serves; ``gunicorn_why`` is set when it makes --server auto pick gunicorn.
    gunicorn_config: str = ""
    gunicorn_settings: tuple[str, ...] = ()  # the settings it assigns (read, never run)
    gunicorn_why: str = ""

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


def factory_call(name: str) -> bool:
    """Whether ``name`` is gunicorn's application factory form, ``create_app()`` or ``create_app('x', debug=True)``:
    a plain name called with literal arguments only (gunicorn's own rule; the loader calls it the same way)."""
    try:
        call = ast.parse(name, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # deep nesting (f(----1)) overflows the parser
        return False
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or not _is_name(call.func.id):
        return False
    if any(keyword.arg is None for keyword in call.keywords):  # **kwargs
        return False
    try:
        for argument in [*call.args, *(keyword.value for keyword in call.keywords)]:
            ast.literal_eval(argument)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def factory_target(setting: str, where: str, value: str) -> str:
    """gunicorn's ``wsgi_app``: :func:`module_target`'s forms, or ``module:factory(...)`` as gunicorn accepts it."""
    module, _, name = value.strip().partition(":")
    if factory_call(name.strip()):
        checked_target(setting, where, value, module, name.partition("(")[0].strip())
        return f"{module}:{name.strip()}"
    return module_target(setting, where, value)


def module_target(setting: str, where: str, value: str) -> str:
    """``package.module[:callable]`` as ``module:callable``, checked; no callable is ``application``, as the loaders read it."""
    module, _, name = value.partition(":")
    return checked_target(setting, where, value, module, name or "application")


def _callable_in(path: Path, candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` defined at the top level of a module."""
    try:
        tree = parse_source(path)
    except (OSError, SyntaxError, ValueError):
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
        tree = parse_source(path)
    except (OSError, SyntaxError, ValueError):
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
    try:
        text = read_source(path)
    except OSError as error:
        raise ConfigError(
            f"Procfile cannot be read: {error.strerror}", "make Procfile a plain text file of the project"
        ) from None
    return parse_procfile(text)


def _procfile_web(root: Path) -> str | None:
    return read_procfile(root).get("web")


def _gunicorn_config(root: Path, environment: dict[str, str]) -> tuple[str, str | None]:
    """(the app's gunicorn configuration file, relative to ``root``, or ""; the ``wsgi_app`` it sets).

    APP_CONFIG names it (S2I convention), else gunicorn's own default, ``gunicorn.conf.py``.
    """
    config = environment.get("APP_CONFIG", "").strip()
    if config:
        path = (root / config).resolve()
        if not path.is_file() or not path.is_relative_to(root.resolve()):
            raise ConfigError(
                f"APP_CONFIG={config!r} (in the environment file) is not a file of the project",
                "fix APP_CONFIG: it names the app's gunicorn configuration file, relative to the app's folder",
            )
        try:
            read_source(path)  # the file the user named: one detection cannot read is said, not skipped
        except OSError as error:
            raise ConfigError(
                f"APP_CONFIG={config!r} (in the environment file) cannot be read: {error.strerror}",
                "fix APP_CONFIG: it names the app's gunicorn configuration file, a plain Python file of the project",
            ) from None
        return path.relative_to(root).as_posix(), _wsgi_app_in(path)
    if (root / "gunicorn.conf.py").is_file():
        # The same rule as APP_CONFIG's: gunicorn runs this file, so it must be the project's, not a link out of it.
        if not (root / "gunicorn.conf.py").resolve().is_relative_to(root.resolve()):
            raise ConfigError(
                "gunicorn.conf.py is a link to a file outside the project",
                "make gunicorn.conf.py a file of the project (gunicorn runs it), or remove it",
            )
        return "gunicorn.conf.py", _wsgi_app_in(root / "gunicorn.conf.py")
    return "", None


def _script_entry(root: Path, name: str) -> tuple[tuple[str, str, str] | None, str]:
    """(kind, target, why) for app.py/main.py, or None with the reason it is not an entry point.

    A file that starts a server at import (or one whose import runs code this file does not show) is run as a
    script, as before; one that defines an app object and starts nothing at import is served by the default server
    of its protocol (its ``app.run()`` under ``if __name__ == "__main__":`` is a development server, left unused).
    """
    script = read_script(root / name)
    module = name.removesuffix(".py")
    if script.syntax_error:
        return ("script", name, f"{name} exists but Python cannot parse it ({script.syntax_error}): it is run as a script"), ""
    if script.serves:
        return ("script", name, f"{name} starts its own server at import ({script.serves}): it is run as a script"), ""
    if script.app and script.protocol:
        kind = "asgi" if script.protocol == "asgi" else "wsgi"
        why = f"{name} defines {script.app_why} and starts no server at import: {module}:{script.app} is a {kind.upper()} app"
        if script.main_serves:
            why += f" (its {script.main_serves} under __main__ is for development; set APP_FILE={name} to run it instead)"
        return (kind, checked_target(script.app, f"in {name}", f"{module}:{script.app}", module, script.app), why), ""
    if script.main_serves:
        return ("script", name, f"{name} starts its own server ({script.main_serves}): it is run as a script"), ""
    if script.opaque:
        why = f"{name} runs {script.opaque} at import, which may start its server: it is run as a script"
        return ("script", name, why), ""
    return None, (
        f"{name} neither starts a server nor defines an app object (no {FRAMEWORKS} app, no WSGI 'application' "
        "function at its top level)"
    )


def _module_in_tree(root: Path, module: str) -> Path | None:
    """The file of ``module`` in the project (beside setup.py, or in src/), if it is there."""
    rel = module.replace(".", "/")
    for base in (root, root / "src"):
        for path in (base / f"{rel}.py", base / rel / "__init__.py"):
            if path.is_file():
                return path
    return None


def _setup_entry(root: Path) -> tuple[tuple[str, str, str] | None, bool]:
    """(kind, target, why) for the module ``setup.py --name`` names (S2I convention), and whether it is in the tree."""
    if not ((root / "setup.py").is_file() or (root / "setup.cfg").is_file()):
        return None, False
    name, where = setup_name(root)
    if name is None:
        if not (root / "setup.py").is_file():
            return None, False
        why = (
            f"setup.py (S2I convention: the module setup.py --name names); {where}, so the name is read by "
            "running setup.py --name with the app's environment when it starts"
        )
        return ("wsgi", f"{SETUP_NAME}:application", why), False
    module = module_name(name)
    path = _module_in_tree(root, module)
    callable_, kind = "application", "wsgi"
    why = f"{where} names the project {name!r} (S2I convention: the module setup.py --name names, callable application)"
    if path and not _callable_in(path, ("application",)):
        # S2I's gunicorn would find no application there; the app object the module does define is served instead.
        script = read_script(path)
        if script.app and script.protocol:
            callable_, kind = script.app, script.protocol
            why = f"{where} names the project {name!r} (S2I convention), whose module defines {script.app_why}"
    target = checked_target("the name", f"in {where}", name, module, callable_)
    return (kind, target, why), path is not None


def _entry(root: Path, environment: dict[str, str]) -> tuple[str, str, str, DjangoProject | None]:
    """(kind, target, why, django) for the first rule that matches.

    The order: APP_SCRIPT, APP_FILE, APP_MODULE (explicit settings win); a gunicorn configuration with wsgi_app
    (the S2I builder checks it first); app.sh; app.py (a script, or the app object it defines); manage.py; wsgi.py;
    paste.ini/production.ini; asgi.py; a Procfile's web: line; the module setup.py names, when it is in the tree;
    main.py; the module setup.py names, found only once installed.
    """
    # OpenShift S2I Python builder settings name the entry explicitly.
    if environment.get("APP_SCRIPT"):
        return "shell", environment["APP_SCRIPT"], "APP_SCRIPT in the environment file (S2I convention)", None
    if environment.get("APP_FILE"):
        return "script", environment["APP_FILE"], "APP_FILE in the environment file (S2I convention)", None
    if environment.get("APP_MODULE"):
        target = module_target("APP_MODULE", "in the environment file", environment["APP_MODULE"])
        return "wsgi", target, "APP_MODULE in the environment file (S2I convention)", None
    config, wsgi_app = _gunicorn_config(root, environment)
    if wsgi_app:
        target = factory_target("wsgi_app", f"in {config}", wsgi_app)
        return "wsgi", target, f"wsgi_app in {config} (gunicorn setting, S2I convention)", None
    if (root / "app.sh").is_file():
        return "shell", "app.sh", "app.sh exists: it is run with bash and must exec the server", None
    skipped: list[str] = []
    if (root / "app.py").is_file():
        found, reason = _script_entry(root, "app.py")
        if found:
            return (*found, None)
        skipped.append(reason)
    if (root / "manage.py").is_file():
        django = detect_django(root, environment)
        module, _, name = django.wsgi_application.rpartition(".")
        where = f"in the Django settings {django.settings}"
        target = checked_target("WSGI_APPLICATION", where, django.wsgi_application, module, name)
        return "django", target, django.why, django
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
    setup, in_tree = _setup_entry(root)
    if setup and in_tree:
        return (*setup, None)
    if (root / "main.py").is_file():
        found, reason = _script_entry(root, "main.py")
        if found:
            return (*found, None)
        skipped.append(reason)
    if setup:
        return (*setup, None)
    found_text = "; ".join(skipped)
    raise NoAppFound(
        f"no application found in {root}" + (f": {found_text}" if found_text else ""),
        f"warptasks looked for {LOOKED_FOR}. Name the app with APP_MODULE=module:callable (or APP_FILE=script.py, "
        "a script that starts its own server on $PORT) in .s2i/environment, or add one of them "
        "(a wsgi.py with an 'application' is the simplest)",
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
            sha.update(name.encode() + b"\0" + project_bytes(root / hooks[name], hooks[name]))
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
    gunicorn_config, wsgi_app = _gunicorn_config(home, environment)
    gunicorn_settings = assigned_names(home / gunicorn_config) if gunicorn_config else ()
    gunicorn_why = ""
    if gunicorn_config and kind in ("wsgi", "django", "paste"):
        if wsgi_app:
            gunicorn_why = f"{gunicorn_config} sets wsgi_app: served by gunicorn with that file, as the S2I builder does"
        elif environment.get("APP_CONFIG"):
            gunicorn_why = f"APP_CONFIG names a gunicorn configuration ({gunicorn_config}): served by gunicorn with it"
        if gunicorn_why:
            kept = [n for n in gunicorn_settings if n not in ("bind", "wsgi_app")]
            gunicorn_why += (
                f"; its settings kept: {', '.join(kept) or 'none'}"
                + ("; its bind is replaced by warp start's address (--port)" if "bind" in gunicorn_settings else "")
                + "; warptasks' defaults only where it is silent"
            )
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
        gunicorn_config=gunicorn_config,
        gunicorn_settings=gunicorn_settings,
        gunicorn_why=gunicorn_why,
    )
