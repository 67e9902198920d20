"""Planning: an AppSpec and facts about the target in, a Plan out.

Nothing here touches the system. The same functions plan a build on this
machine, inside an image and on a remote host; only the facts differ.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import __version__
from .detect import UNTRACKED_DIRS, AppSpec
from .errors import ConfigError, NotBuilt
from .resources import Capacity, Resources, available_resources, worker_capacity
from .steps import Plan, Step, write_file
from .support import probe_source, source

# Bump when the layout of an environment changes, so old ones are rebuilt.
ENV_FORMAT = 2

SERVER_PACKAGES = {
    "mod_wsgi": ("mod_wsgi",),
    "gunicorn": ("gunicorn", "servestatic"),
    "waitress": ("waitress", "servestatic"),
    "uwsgi": ("uwsgi",),
    "uvicorn": ("uvicorn", "servestatic"),
    "shell": (),
}
# Servers that embed Python: a build for one Python installation must never be
# reused for another of the same version, so their build cache is per Python.
COMPILED_AGAINST_PYTHON = ("mod_wsgi", "uwsgi")
# Servers that load the app through warp_app.py rather than natively.
USES_WARP_APP = ("gunicorn", "waitress", "uwsgi", "uvicorn")
INSTALLERS = ("auto", "uv", "pip")


@dataclass(frozen=True)
class BuildOptions:
    project: str  # absolute path of the project root where the plan runs
    env_dir: str = ".warp"
    envs_dir: str = ""
    installer: str = "auto"
    force: bool = False
    # Extra variables for the install steps only, e.g. PIP_NO_INDEX/PIP_FIND_LINKS
    # so a host without a package index installs from shipped wheels.
    install_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StartOptions:
    project: str
    env_dir: str = ".warp"
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int | None = None
    threads: int | None = None
    reload: bool = False
    user: str | None = None
    group: str | None = None
    max_clients: int | None = None


# mod_wsgi-express writes paths unquoted into Apache's config and into a shell
# script (apachectl); outside this set they break it or are run as shell code.
_APACHE_SAFE = re.compile(r"^[A-Za-z0-9_./+@%,:=-]*$")


def require_apache_safe(*paths: str) -> None:
    for path in paths:
        if not _APACHE_SAFE.match(path):
            raise ConfigError(
                f"mod_wsgi-express cannot serve from {path!r}: it writes paths unquoted into Apache's configuration "
                "and its apachectl shell script, where spaces, quotes, $, ; or ` would break it or run as commands",
                "move the project to a path of letters, digits and ._-/ only, or use --server gunicorn (or uwsgi, waitress)",
            )


def resolve_server(spec: AppSpec) -> tuple[str, str]:
    """The server that will run the app, and why."""
    own = spec.kind in ("shell", "script", "procfile")
    if spec.server == "auto":
        if own:
            return "shell", f"the app's own {spec.target} starts its server"
        if spec.is_asgi:
            return "uvicorn", "ASGI app: uvicorn (mod_wsgi serves only WSGI)"
        return "mod_wsgi", "WSGI app: Apache/mod_wsgi (mod_wsgi-express) is the default"
    if own and spec.server != "shell":
        raise ConfigError(
            f"server type {spec.server!r} ({spec.server_why}) cannot serve {spec.target}: it starts its own server",
            "remove the server setting, or remove app.sh/app.py so the app itself is detected",
        )
    if spec.server == "shell" and not own:
        raise ConfigError(
            f"server type 'shell' ({spec.server_why}) needs an app.sh, app.py or Procfile", "choose a WSGI server instead"
        )
    if spec.is_asgi and spec.server != "uvicorn":
        raise ConfigError(
            f"{spec.target} is an ASGI app; {spec.server} ({spec.server_why}) serves only WSGI",
            "use --server uvicorn (or auto), or provide a wsgi.py",
        )
    if not spec.is_asgi and spec.server == "uvicorn":
        raise ConfigError(f"uvicorn serves ASGI apps; {spec.target} is WSGI", "choose mod_wsgi, gunicorn, uwsgi or waitress")
    return spec.server, spec.server_why


def _join(*parts: str) -> str:
    return posixpath.normpath(posixpath.join(*parts))


def env_paths(project: str, env_dir: str, envs_dir: str = "") -> tuple[str, str]:
    root = _join(project, env_dir)
    return root, _join(project, envs_dir) if envs_dir else _join(root, "envs")


def untracked_dirs(env_dir: str) -> list[str]:
    """Folder names that are not source: environments, VCS data, caches, and the environment folder itself."""
    return sorted(UNTRACKED_DIRS | {env_dir.strip("/").split("/")[0]})


def pick_installer(requested: str, facts: dict[str, Any]) -> tuple[str, str]:
    if requested not in INSTALLERS:
        raise ConfigError(f"unknown installer {requested!r}", f"valid installers: {', '.join(INSTALLERS)}")
    if requested == "uv" and not facts.get("uv"):
        raise ConfigError("installer 'uv' asked for, but uv is not installed on the target", "install uv, or use --installer pip")
    if requested == "pip":
        return "pip", "pip (asked for)"
    if facts.get("uv"):
        return "uv", f"uv ({facts['uv']}) is available: much faster than pip"
    return "pip", "uv is not available"


def env_key(spec: AppSpec, facts: dict[str, Any], installer: str, server: str) -> str:
    """Names an environment by everything that decides its content."""
    python = facts["python"]
    data = {
        "format": ENV_FORMAT,
        "warptasks": __version__,
        "python": [python["executable"], python["full_version"]],
        "installer": installer,
        "server": SERVER_PACKAGES[server],
        "deps": [spec.dependencies.kind, spec.dependencies.digest, list(spec.dependencies.packages)],
        "build_inputs": spec.build_inputs_digest,
    }
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"py{python['version']}-{digest[:16]}"


def _python_cache(facts: dict[str, Any]) -> str:
    """A build cache for compiled servers, private to one Python installation.

    A mod_wsgi compiled for one Python and reused from a shared wheel cache
    by another of the same version starts, then fails every request.
    """
    python = facts["python"]
    key = hashlib.sha256(f"{python['executable']}\0{python['full_version']}\0{python['prefix']}".encode()).hexdigest()[:16]
    return _join(facts["cache_home"], "warptasks", f"python-{key}")


def _install(installer: str, facts: dict[str, Any], env: str, args: tuple[str, ...]) -> tuple[str, ...]:
    if installer == "uv":
        return (facts["uv"], "pip", "install", "--python", f"{env}/bin/python", *args)
    return (f"{env}/bin/python", "-m", "pip", "install", *args)


def hook_argv(spec: AppSpec, name: str) -> tuple[str, ...]:
    path = spec.hooks[name]
    return (f"./{path}",) if spec.hook_executable.get(name) else ("bash", path)


def hook_environment(spec: AppSpec, project: str, env: str, phase: str, action: str, port: int = 8080) -> dict[str, str]:
    """Variables hooks, the server and ``warp exec`` see, beside the environment file's.

    The WARPDRIVE_* names are warpdrive's, so its hooks keep working.
    """
    home = _join(project, spec.home)
    values = dict(spec.environment)
    values.update(
        {
            "VIRTUAL_ENV": env,
            "WARP_PROJECT": project,
            "WARP_APP_HOME": home,
            "WARP_ENV": env,
            "WARP_PHASE": phase,
            "WARP_ACTION": action,
            "WARPDRIVE_PHASE": phase,
            "WARPDRIVE_ACTION": action,
            "WARPDRIVE_APP_ROOT": env,
            "WARPDRIVE_SRC_ROOT": project,
            "WARPDRIVE_APP_HOME": home,
            "WARPDRIVE_HTTP_PORT": str(port),
            "WARPDRIVE_BUILD_SYSTEM": spec.environment.get("WARPDRIVE_BUILD_SYSTEM", "local"),
            "WARPDRIVE_BUILD_TARGET": "application",
        }
    )
    return values


_SOURCE_THEN_EXEC = 'set -a && . "$1" && set +a && shift && exec "$@"'


def with_env_hook(spec: AppSpec, hook: str, project: str, step: Step) -> Step:
    """``step`` run after sourcing the ``build-env``/``deploy-env`` hook, if the app has one."""
    if hook not in spec.hooks:
        return step
    argv = ("bash", "-c", _SOURCE_THEN_EXEC, "bash", _join(project, spec.hooks[hook]), *step.argv)
    return replace(step, argv=argv)


def plan_exec(spec: AppSpec, project: str, env: str, argv: tuple[str, ...], action: str, port: int = 8080) -> Step:
    """``argv`` run in the app's environment, as ``warp exec``/``shell`` and the hook commands do."""
    step = Step(
        action,
        argv,
        _join(project, spec.home),
        f"{action} in the app's environment",
        env=hook_environment(spec, project, env, "deploy", action, port),
        path=(f"{env}/bin",),
        phase="deploy",
    )
    return with_env_hook(spec, "deploy-env", project, step)


def plan_command(spec: AppSpec, project: str, env: str, action: str, port: int = 8080) -> Step | None:
    """A warpdrive hook command (setup, migrate, verify, alive, ready), or None when the app has none.

    Hooks run from the project root; ``migrate`` on Django without a hook is ``manage.py migrate``.
    """
    if action in spec.hooks:
        step = plan_exec(spec, project, env, hook_argv(spec, action), action, port)
        return replace(step, cwd=project, why=f"{action} action hook")
    if action == "migrate" and spec.django:
        step = plan_exec(spec, project, env, ("python", "manage.py", "migrate", "--noinput"), action, port)
        return replace(step, why="Django: manage.py migrate")
    return None


def plan_build(spec: AppSpec, facts: dict[str, Any], options: BuildOptions) -> Plan:
    """The steps ``warp build`` runs, each with why, skipped ones included."""
    server, server_why = resolve_server(spec)
    installer, installer_why = pick_installer(options.installer, facts)
    root, envs = env_paths(options.project, options.env_dir, options.envs_dir)
    home = _join(options.project, spec.home)
    key = env_key(spec, facts, installer, server)
    env = _join(envs, key)
    state = facts.get("state") or {}
    env_ready = key in facts.get("complete_envs", []) and not options.force
    unchanged = (
        env_ready
        and state.get("env_key") == key
        and state.get("source") == facts.get("source_digest")
        and facts.get("current") == env
    )
    hook_env = hook_environment(spec, options.project, env, "build", "build")
    path = (f"{env}/bin",)
    steps: list[Step] = []
    notes = [
        f"app: {spec.why}",
        f"server: {server} ({server_why})",
        f"dependencies: {spec.dependencies.why}",
        f"python: {facts['python']['executable']} {facts['python']['full_version']} ({spec.python.why})",
        f"installer: {installer_why}",
        f"environment: {env}",
    ]
    if facts.get("euid") == 0 and server == "mod_wsgi" and facts["python"].get("others_can_read") is False:
        notes.append(
            f"warning: {facts['python']['executable']} is not readable by other accounts, but as root Apache runs its "
            "workers as one: start will fail. Build with a system Python (--python /usr/bin/python3)"
        )
    if spec.environment_files:
        notes.append(f"environment files: {', '.join(spec.environment_files)}")

    def add(name: str, argv: tuple[str, ...], why: str, *, phase: str, skip: str = "", cwd: str = home, **kw: Any) -> None:
        steps.append(Step(name, argv, cwd, why, phase=phase, skip=skip, **kw))

    unchanged_why = "nothing changed since the last build (same dependencies, Python, server and source)"
    if "pre-build" in spec.hooks:
        add(
            "hook pre-build",
            hook_argv(spec, "pre-build"),
            "pre-build action hook",
            phase="deps",
            skip=unchanged_why if unchanged else "",
            cwd=options.project,
            env=hook_env,
        )

    reuse = f"environment {key} is complete and its inputs are unchanged" if env_ready else ""
    add("clean", ("rm", "-rf", env), "remove what a failed build may have left", phase="deps", skip=reuse)
    create: tuple[str, ...]
    if installer == "uv":
        create = (facts["uv"], "venv", "--seed", "--quiet", "--python", facts["python"]["executable"], env)
    elif facts.get("has_virtualenv"):
        # virtualenv is importable by the Python that ran the probe, which may be another venv's.
        runner = facts["python"].get("running") or facts["python"]["executable"]
        create = (runner, "-m", "virtualenv", "--quiet", "--python", facts["python"]["executable"], env)
    else:
        create = (facts["python"]["executable"], "-m", "venv", env)
    add("virtualenv", create, f"a new environment for Python {facts['python']['full_version']}", phase="deps", skip=reuse)

    deps = spec.dependencies
    # The environment file is exported for the installs too (PIP_INDEX_URL and the like), as warpdrive did.
    install_env = {**spec.environment, "VIRTUAL_ENV": env, **options.install_env}
    if deps.kind == "requirements.txt":
        add(
            "install requirements",
            _install(installer, facts, env, ("-r", "requirements.txt")),
            deps.why,
            phase="deps",
            skip=reuse,
            env=install_env,
        )
    elif deps.kind in ("Pipfile.lock", "poetry.lock"):
        method = "pipenv" if deps.kind == "Pipfile.lock" else "poetry"
        add(
            "install micropipenv",
            _install(installer, facts, env, ("micropipenv[toml]",)),
            f"micropipenv reads {deps.kind}",
            phase="deps",
            skip=reuse,
            env=install_env,
        )
        out = f"{env}/warp-requirements.txt"
        add(
            "export lock file",
            ("sh", "-c", '"$1" requirements --method "$2" --no-dev > "$3"', "sh", f"{env}/bin/micropipenv", method, out),
            f"{deps.kind} as pinned requirements",
            phase="deps",
            skip=reuse,
        )
        add(
            "install lock file",
            _install(installer, facts, env, ("--no-deps", "-r", out)),
            deps.why,
            phase="deps",
            skip=reuse,
            env=install_env,
        )
    elif deps.kind == "uv.lock":
        uv = facts["uv"]
        if installer != "uv":
            add(
                "install uv",
                _install(installer, facts, env, ("uv",)),
                "uv.lock is installed by uv",
                phase="deps",
                skip=reuse,
                env=install_env,
            )
            uv = f"{env}/bin/uv"
        add(
            "install uv.lock",
            (uv, "sync", "--frozen", "--no-dev", "--python", f"{env}/bin/python"),
            deps.why,
            phase="deps",
            skip=reuse,
            env={"UV_PROJECT_ENVIRONMENT": env, **install_env},
        )
    elif deps.packages:
        add(
            "install dependencies",
            _install(installer, facts, env, deps.packages),
            deps.why,
            phase="deps",
            skip=reuse,
            env=install_env,
        )
    if deps.install_project and deps.kind != "uv.lock":
        add(
            "install project",
            _install(installer, facts, env, ("-e", ".")),
            "the project itself is a package",
            phase="deps",
            skip=reuse,
            env=install_env,
        )

    packages = SERVER_PACKAGES[server]
    if spec.kind == "paste" and server != "mod_wsgi":
        packages = packages + ("PasteDeploy",)
    if packages:
        server_env = dict(install_env)
        args: tuple[str, ...] = packages
        if server in COMPILED_AGAINST_PYTHON:
            cache = _python_cache(facts)
            server_env.update({"UV_CACHE_DIR": cache, "PIP_CACHE_DIR": cache})
        if server == "mod_wsgi":
            require_apache_safe(home, env)
            if not facts.get("apxs"):
                raise ConfigError(
                    "mod_wsgi needs Apache's apxs tool to compile, and it is not installed on the target",
                    "install Apache's development package (Debian/Ubuntu: apt-get install apache2-dev; "
                    "Fedora/RHEL: dnf install httpd-devel), or choose another server with --server gunicorn",
                )
        if server in COMPILED_AGAINST_PYTHON and installer == "uv":
            # uv revalidates its cache with the index and recompiles whenever
            # the index sends no caching headers; pip's wheel cache, kept per
            # Python, is reused. So pip builds (or finds) the wheel, uv installs it.
            wheelhouse = _join(_python_cache(facts), "wheels")
            add(
                "server wheel",
                (f"{env}/bin/python", "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheelhouse, server),
                f"{server} compiled once for this Python, then reused from {wheelhouse}",
                phase="deps",
                skip=reuse,
                env=server_env,
            )
            args = ("--find-links", wheelhouse, *args)
        add(
            "install server",
            _install(installer, facts, env, args),
            f"{', '.join(packages)} for {server}"
            + (" (compiled for this Python, cached per Python)" if server in COMPILED_AGAINST_PYTHON else ""),
            phase="deps",
            skip=reuse,
            env=server_env,
        )
    if server in USES_WARP_APP:
        steps.append(
            write_file(
                "support",
                f"{env}/warp/warp_app.py",
                source("warp_app.py"),
                home,
                "warp_app.py loads the app and serves static files",
                phase="deps",
                skip=reuse,
            )
        )
    if server == "gunicorn":
        steps.append(
            write_file(
                "gunicorn config",
                f"{env}/warp/gunicorn_conf.py",
                source("gunicorn_conf.py"),
                home,
                "gunicorn settings warptasks adds (the app's APP_CONFIG is read after)",
                phase="deps",
                skip=reuse,
            )
        )
    marker = {"key": key, "python": facts["python"], "installer": installer, "server": server, "warptasks": __version__}
    steps.append(
        write_file(
            "mark complete",
            f"{env}/warp-env.json",
            json.dumps(marker, sort_keys=True),
            home,
            "marks the environment as complete, so later builds may reuse it",
            phase="deps",
            skip=reuse,
        )
    )

    if "build" in spec.hooks:
        add(
            "hook build",
            hook_argv(spec, "build"),
            "build action hook",
            phase="app",
            skip=unchanged_why if unchanged else "",
            cwd=options.project,
            env=hook_env,
            path=path,
        )

    static_json = _join(root, "static.json")
    if spec.django:
        disabled = spec.environment.get("DISABLE_COLLECTSTATIC", "").strip().lower() not in ("", "0", "false", "no", "off")
        supplied = "" if spec.django.has_static_root else _join(root, "static")
        why = "Django: collectstatic" + (f", into {supplied} (settings have no STATIC_ROOT)" if supplied else "")
        if disabled:
            why = "Django: reading STATIC_URL/STATIC_ROOT (collectstatic disabled by DISABLE_COLLECTSTATIC)"
        env_vars = dict(spec.environment)
        env_vars["DJANGO_SETTINGS_MODULE"] = spec.django.settings
        add(
            "collectstatic",
            (f"{env}/bin/python", "-c", source("django_static.py"), static_json, supplied, "0" if disabled else "1"),
            why,
            phase="app",
            skip=unchanged_why if unchanged else "",
            env=env_vars,
            path=path,
        )
    elif spec.static_url and spec.static_dir:
        static = {"static_url": spec.static_url, "static_root": _join(home, spec.static_dir)}
        steps.append(
            write_file(
                "static",
                static_json,
                json.dumps(static),
                home,
                spec.static_why,
                phase="app",
                skip=unchanged_why if unchanged else "",
            )
        )
    else:
        steps.append(
            Step("static", ("rm", "-f", static_json), home, spec.static_why, phase="app", skip=unchanged_why if unchanged else "")
        )

    new_state = {"env_key": key, "env": env, "server": server, "kind": spec.kind, "warptasks": __version__}
    request = {
        "record": new_state,
        "project": options.project,
        "state_file": _join(root, "state.json"),
        "ignore": untracked_dirs(options.env_dir),
    }
    add(
        "record",
        (f"{env}/bin/python", "-c", probe_source(), json.dumps(request)),
        "record what was built, with the tree's fingerprint as the build left it",
        phase="app",
        skip=unchanged_why if unchanged else "",
    )
    switch = "import os, sys; os.symlink(sys.argv[1], sys.argv[2] + '.new'); os.replace(sys.argv[2] + '.new', sys.argv[2])"
    add(
        "switch",
        ("sh", "-c", 'rm -f "$2.new" && "$3" -c "$1" "$4" "$2"', "sh", switch, _join(root, "current"), f"{env}/bin/python", env),
        "make the new environment current, atomically (the old one serves until here)",
        phase="app",
        skip="already current" if unchanged else "",
    )
    sourced = ("install", "server wheel", "hook build", "collectstatic", "export")
    steps = [with_env_hook(spec, "build-env", options.project, s) if s.name.startswith(sourced) else s for s in steps]
    return Plan("build", tuple(steps), tuple(notes))


# warpdrive's MOD_WSGI_* settings, passed on to mod_wsgi-express as it did.
MOD_WSGI_VALUE_SETTINGS = (
    "ACCESS_LOG",
    "INITIAL_WORKERS",
    "MINIMUM_SPARE_WORKERS",
    "MAXIMUM_SPARE_WORKERS",
    "LIMIT_REQUEST_BODY",
    "MAXIMUM_REQUESTS",
    "INACTIVITY_TIMEOUT",
    "REQUEST_TIMEOUT",
    "CONNECT_TIMEOUT",
    "SOCKET_TIMEOUT",
    "QUEUE_TIMEOUT",
    "HEADER_TIMEOUT",
    "HEADER_MAX_TIMEOUT",
    "HEADER_MIN_RATE",
    "BODY_TIMEOUT",
    "BODY_MAX_TIMEOUT",
    "BODY_MIN_RATE",
    "SERVER_BACKLOG",
    "DAEMON_BACKLOG",
    "SERVER_MPM",
    "LOG_LEVEL",
    "MAX_CLIENTS",
)
MOD_WSGI_FLAG_SETTINGS = ("RELOAD_ON_CHANGES", "SERVER_STATUS")


def mod_wsgi_env_options(environment: dict[str, str]) -> tuple[str, ...]:
    """mod_wsgi-express options from MOD_WSGI_* settings in the environment file."""
    args: list[str] = []
    for name in MOD_WSGI_VALUE_SETTINGS:
        value = environment.get(f"MOD_WSGI_{name}")
        if value:
            args += [f"--{name.lower().replace('_', '-')}", value]
    for name in MOD_WSGI_FLAG_SETTINGS:
        if environment.get(f"MOD_WSGI_{name}", "").lower() not in ("", "0", "false", "no", "off"):
            args.append(f"--{name.lower().replace('_', '-')}")
    return tuple(args)


def _int_setting(spec: AppSpec, what: str) -> int | None:
    """Processes or threads set in the environment file (S2I's WEB_CONCURRENCY, warpdrive's MOD_WSGI_*)."""
    names = ("WEB_CONCURRENCY", "MOD_WSGI_PROCESSES") if what == "processes" else ("MOD_WSGI_THREADS",)
    for name in names:
        value = spec.environment.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{name}={value!r} in the environment file is not a positive whole number", f"fix {name}")
            return int(value)
    return None


@dataclass(frozen=True)
class StartPlan:
    """The checks to pass, the steps to run, and the server command to exec."""

    checks: tuple[Step, ...]
    before: tuple[Step, ...]
    server: Step
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "notes": list(self.notes),
            "checks": [s.as_dict() for s in self.checks],
            "before": [s.as_dict() for s in self.before],
            "server": self.server.as_dict(),
        }


def _static_url(url: str) -> str | None:
    if not url or "://" in url or url.startswith("//"):
        return None
    return "/" + url.lstrip("/")


PORT_CHECK = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "try:\n    s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "except OSError as e:\n    print('port %s on %s is not free: %s' % (sys.argv[2], sys.argv[1], e.strerror)); sys.exit(1)\n"
)

READ_CHECK = (
    "import grp, os, pwd, subprocess, sys\n"
    "user, group, python, *paths = sys.argv[1:]\n"
    "uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid\n"
    "def drop():\n    os.setgroups([]); os.setgid(gid); os.setuid(uid)\n"
    "code = 'import encodings, os, sys\\nfor p in sys.argv[1:]:\\n    os.listdir(p) if os.path.isdir(p) else open(p).close()'\n"
    "real = os.path.realpath(python)\n"
    "try:\n"
    "    r = subprocess.run([python, '-c', code, *paths], preexec_fn=drop, capture_output=True, text=True)\n"
    "except OSError as e:\n"
    "    print('%s cannot run %s (it is %s): %s' % (user, python, real, e.strerror)); sys.exit(1)\n"
    "if r.returncode:\n"
    "    lines = (r.stderr or r.stdout).strip().splitlines()\n"
    "    print('%s cannot use %s (Python %s): %s' % (user, python, real, lines[-1] if lines else 'exit %d' % r.returncode))\n"
    "    sys.exit(1)\n"
)


def worker_account(facts: dict[str, Any], options: StartOptions) -> tuple[str, str, str]:
    if options.user:
        return options.user, options.group or options.user, "--user"
    for user, group in facts.get("worker_accounts", []):
        return user, options.group or group, f"running as root: Apache's workers run as {user}"
    raise ConfigError(
        "running as root, and no non-root account (www-data, nobody) exists for Apache's workers",
        "pass --user and --group naming an unprivileged account",
    )


def plan_start(spec: AppSpec, facts: dict[str, Any], options: StartOptions) -> StartPlan:
    """The server command ``warp start`` execs, with the checks before it."""
    state = facts.get("state") or {}
    env = facts.get("current")
    if not env or not state:
        raise NotBuilt(f"{options.project} has not been built", "run warp build first")
    server = state["server"]
    if spec.server != "auto":
        # An explicit choice must match the build; otherwise the build's choice stands.
        wanted, wanted_why = resolve_server(spec)
        if wanted != server:
            raise ConfigError(
                f"the environment was built for {server}, but {wanted} is asked for now ({wanted_why})",
                f"run warp build --server {wanted} first, or start without --server",
            )
    home = _join(options.project, spec.home)
    resources: Resources = available_resources(facts)
    capacity: Capacity = worker_capacity(resources, server)
    env_processes, env_threads = _int_setting(spec, "processes"), _int_setting(spec, "threads")
    processes = options.processes or env_processes or capacity.processes
    threads = options.threads or env_threads or capacity.threads
    if options.processes or options.threads:
        tuning = "set by options"
    elif env_processes or env_threads:
        tuning = "set in the environment file (WEB_CONCURRENCY / MOD_WSGI_PROCESSES / MOD_WSGI_THREADS)"
    else:
        tuning = capacity.why
    notes = [
        f"app: {spec.why}",
        f"server: {server}",
        f"resources: {resources.why}",
        f"workers: {processes} process(es) x {threads} thread(s) ({tuning})",
    ]
    static = facts.get("static") or {}
    static_url = _static_url(static.get("static_url", ""))
    static_root = static.get("static_root", "").rstrip("/")
    if static_url and static_root:
        # Apache's alias needs both ends to agree on the trailing slash.
        static_root += "/" if static_url.endswith("/") else ""
        notes.append(f"static: {static_url} -> {static_root}")
    run_env = hook_environment(spec, options.project, env, "deploy", "start", options.port)
    run_env.update({"HOST": options.host, "PORT": str(options.port)})
    path = (f"{env}/bin",)
    python = f"{env}/bin/python"
    checks: list[Step] = []
    if server != "shell":
        checks.append(
            Step(
                "port",
                (python, "-c", PORT_CHECK, options.host, str(options.port)),
                home,
                f"{options.host}:{options.port} must be free",
                phase="start",
            )
        )
    before: list[Step] = []
    if "deploy" in spec.hooks:
        before.append(
            Step(
                "hook deploy",
                hook_argv(spec, "deploy"),
                options.project,
                "deploy action hook",
                env=dict(run_env),
                path=path,
                phase="start",
            )
        )
    bind = f"{options.host}:{options.port}"
    module, _, callable_ = spec.target.partition(":")
    argv: tuple[str, ...]
    if server == "shell":
        if spec.kind == "shell":
            argv = ("bash", spec.target)
        elif spec.kind == "script":
            argv = (python, spec.target)
        else:
            argv = ("bash", "-c", f"exec {spec.target}")
        why = f"the app's own {spec.target}, with HOST and PORT set"
    elif server == "mod_wsgi":
        require_apache_safe(home, env, static_root, static_url or "")
        argv = (f"{env}/bin/mod_wsgi-express", "start-server")
        if spec.kind == "paste":
            argv += (_join(home, spec.target), "--application-type", "paste")
        else:
            argv += (module, "--application-type", "module", "--callable-object", callable_ or "application")
        max_clients = options.max_clients or max(400, processes * threads * 4)
        argv += (
            "--host",
            options.host,
            "--port",
            str(options.port),
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--max-clients",
            str(max_clients),
            # Start every Apache worker up front: otherwise mod_wsgi-express starts a fifth of them and a burst of
            # slow clients (connections that never finish their headers) holds them all for seconds while Apache
            # spawns more, and normal requests wait (measured by the benchmarks with 200 slow clients).
            "--initial-workers",
            "1",
            "--working-directory",
            home,
            "--python-path",
            home,
            "--log-to-terminal",
            "--startup-log",
            "--locale",
            "C.UTF-8",
        )
        if static_url and static_root:
            argv += ("--url-alias", static_url, static_root)
        argv += mod_wsgi_env_options(spec.environment)
        if options.reload:
            argv += ("--reload-on-changes",)
        if facts.get("euid") == 0:
            user, group, account_why = worker_account(facts, options)
            argv += ("--user", user, "--group", group)
            notes.append(account_why)
            paths = [python, env, home] + ([_join(home, spec.target)] if spec.kind == "paste" else [])
            checks.append(
                Step(
                    "worker can read",
                    (python, "-c", READ_CHECK, user, group, python, *paths),
                    home,
                    f"Apache's workers run as {user}:{group} and must read the Python, the environment and the app",
                    phase="start",
                )
            )
        why = "Apache/mod_wsgi via mod_wsgi-express, daemon mode" + (
            ", serving static files with an Apache alias" if static_url else ""
        )
    else:
        run_env.update(
            {
                "WARP_APP_TYPE": "paste" if spec.kind == "paste" else "module",
                "WARP_APP_TARGET": spec.target if spec.kind != "paste" else _join(home, spec.target),
                "WARP_APP_PROTOCOL": "asgi" if spec.is_asgi else "wsgi",
            }
        )
        if static_url and static_root and server != "uwsgi":
            run_env.update({"WARP_STATIC_URL": static_url, "WARP_STATIC_ROOT": static_root})
        if options.reload:
            run_env["WARP_RELOAD"] = "1"
        run_env["PYTHONPATH"] = f"{env}/warp:{home}"
        if server == "gunicorn":
            argv = (
                f"{env}/bin/gunicorn",
                "--bind",
                bind,
                "--workers",
                str(processes),
                "--threads",
                str(threads),
                "--worker-class",
                "gthread",
                "--chdir",
                home,
                "--access-logfile",
                "-",
                "--config",
                f"{env}/warp/gunicorn_conf.py",
            )
            if spec.environment.get("APP_CONFIG"):
                run_env["WARP_GUNICORN_CONFIG"] = _join(home, spec.environment["APP_CONFIG"])
            argv += ("--reload",) if options.reload else ()
            argv += ("warp_app:application",)
            why = "gunicorn (gthread workers), static files by servestatic"
        elif server == "waitress":
            argv = (
                f"{env}/bin/waitress-serve",
                f"--listen={bind}",
                f"--threads={threads}",
                "--connection-limit=1000",
                "warp_app:application",
            )
            if options.reload:
                raise ConfigError("waitress has no code reloader", "use --server gunicorn (or mod_wsgi) for --reload")
            why = "waitress, static files by servestatic"
        elif server == "uwsgi":
            argv = (
                f"{env}/bin/uwsgi",
                "--http-socket",
                bind,
                "--master",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
                "--chdir",
                home,
                "--module",
                "warp_app:application",
                "--die-on-term",
                "--need-app",
                "--enable-threads",
                "--disable-logging",
                "--log-5xx",
                "--log-4xx",
            )
            if static_url and static_root:
                argv += ("--static-map", f"{static_url.rstrip('/')}={static_root.rstrip('/')}")
            if options.reload:
                argv += ("--py-autoreload", "1")
            why = "uWSGI speaking HTTP, static files by its static map"
        else:
            argv = (f"{env}/bin/uvicorn", "warp_app:application", "--host", options.host, "--port", str(options.port))
            argv += ("--reload",) if options.reload else ("--workers", str(processes))
            why = "uvicorn (ASGI), static files by servestatic"
    server_step = with_env_hook(
        spec, "deploy-env", options.project, Step(server, argv, home, why, env=run_env, path=path, phase="start")
    )
    before = [with_env_hook(spec, "deploy-env", options.project, s) for s in before]
    return StartPlan(tuple(checks), tuple(before), server_step, tuple(notes))
