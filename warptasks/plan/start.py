"""Planning a start: the built environment and facts in, the server command and its checks out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..detect import AppSpec
from ..errors import ConfigError, NotBuilt
from ..facts import Facts, StaticFiles
from ..scripts import source
from .environment import _join, hook_argv, hook_environment, with_env_hook
from .resources import Capacity, Resources, available_resources, worker_capacity
from .steps import Step


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


def worker_account(facts: Facts, options: StartOptions) -> tuple[str, str, str]:
    if options.user:
        return options.user, options.group or options.user, "--user"
    for user, group in facts.worker_accounts:
        return user, options.group or group, f"running as root: Apache's workers run as {user}"
    raise ConfigError(
        "running as root, and no non-root account (www-data, nobody) exists for Apache's workers",
        "pass --user and --group naming an unprivileged account",
    )


def plan_start(spec: AppSpec, facts: Facts, options: StartOptions) -> StartPlan:
    """The server command ``warp start`` execs, with the checks before it."""
    state = facts.state
    env = facts.current
    if not env or not state:
        raise NotBuilt(f"{options.project} has not been built", "run warp build first")
    server = state.server
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
    static = facts.static or StaticFiles()
    static_url = _static_url(static.url)
    static_root = static.root.rstrip("/")
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
                (python, "-c", source("port_check.py"), options.host, str(options.port)),
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
        if facts.euid == 0:
            user, group, account_why = worker_account(facts, options)
            argv += ("--user", user, "--group", group)
            notes.append(account_why)
            paths = [python, env, home] + ([_join(home, spec.target)] if spec.kind == "paste" else [])
            checks.append(
                Step(
                    "worker can read",
                    (python, "-c", source("read_check.py"), user, group, python, *paths),
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
