"""Planning a start: the built environment and facts in, the server command and its checks out.

The server's own module (:mod:`warptasks.servers`) makes its command; this
module decides what every server shares: that the build is there and matches,
how many workers, which static files, the port check, the deploy hook, and
the ``deploy-env`` hook sourced around it all.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from ..detect import AppSpec
from ..detect.app import SETUP_NAME
from ..errors import ConfigError, NotBuilt
from ..facts import Facts, StaticFiles
from ..scripts import command as script
from ..servers import SERVERS, Command, Server, StartContext, read_check, resolve_server, worker_account
from .environment import _join, env_paths, hook_argv, hook_environment, refuse_unsafe_envs, start_port, with_env_hook
from .resources import available_resources, worker_capacity
from .steps import Step


@dataclass(frozen=True)
class StartOptions:
    project: str
    env_dir: str = ".warp"
    host: str = "127.0.0.1"
    # None: PORT where warp runs, else PORT in the environment file, else 8080 (see detect.conventions.choose_port).
    # A deploy and an image always give theirs.
    port: int | None = None
    processes: int | None = None
    threads: int | None = None
    reload: bool = False
    user: str | None = None
    group: str | None = None
    max_clients: int | None = None
    # The front proxy's address (a deploy's Caddy: "127.0.0.1"): the server believes X-Forwarded-For/-Proto/-Host
    # from that peer only. None: forwarded headers are believed from no one (a local start).
    trusted_proxy: str | None = None
    # Whether the checks include the port's: a deploy's host agent checks it itself, and takes it back from the server
    # of a release that is not live (one a dead deploy left running), which this check would refuse instead.
    port_check: bool = True


def _int_setting(spec: AppSpec, what: str) -> int | None:
    """Processes or threads set in the environment file (S2I's WEB_CONCURRENCY, warpdrive's MOD_WSGI_*)."""
    names = ("WEB_CONCURRENCY", "MOD_WSGI_PROCESSES") if what == "processes" else ("MOD_WSGI_THREADS",)
    for name in names:
        value = spec.environment.get(name, "").strip()
        if value:
            if not (value.isascii() and value.isdigit()) or int(value) < 1:
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

    def as_dict(self, *, mask: Collection[str] = ()) -> dict[str, Any]:
        """The plan as plain data; the values of the variables named in ``mask`` shown as ``***``."""
        return {
            "notes": list(self.notes),
            "checks": [s.as_dict(mask=mask) for s in self.checks],
            "before": [s.as_dict(mask=mask) for s in self.before],
            "server": self.server.as_dict(mask=mask),
        }


def _static_url(url: str) -> str | None:
    if not url or "://" in url or url.startswith("//"):
        return None
    return "/" + url.lstrip("/")


def _built_server(spec: AppSpec, facts: Facts, options: StartOptions) -> tuple[str, Server]:
    """The current environment and the server it was built for; an explicit choice must match it."""
    refuse_unsafe_envs(facts)
    state, env = facts.state, facts.current
    if not env or not state:
        raise NotBuilt(f"{options.project} has not been built", "run warp build first")
    built = SERVERS.get(state.server)
    if built is None:
        raise NotBuilt(
            f"{options.project} was built for a server this warptasks does not know ({state.server!r})", "run warp build again"
        )
    if spec.server != "auto":
        # An explicit choice must match the build; otherwise the build's choice stands.
        wanted, wanted_why = resolve_server(spec)
        if wanted != built.name:
            raise ConfigError(
                f"the environment was built for {built.name}, but {wanted} is asked for now ({wanted_why})",
                f"run warp build --server {wanted} first, or start without --server",
            )
    return env, built


def _workers(spec: AppSpec, facts: Facts, options: StartOptions, server: Server) -> tuple[int, int, list[str]]:
    """Processes and threads: options, then the environment file, then what the resources allow; and the notes saying so."""
    resources = available_resources(facts)
    capacity = worker_capacity(resources, server)
    env_processes, env_threads = _int_setting(spec, "processes"), _int_setting(spec, "threads")
    processes = options.processes or env_processes or capacity.processes
    threads = options.threads or env_threads or capacity.threads
    if options.processes or options.threads:
        tuning = "set by options"
    elif env_processes or env_threads:
        tuning = "set in the environment file (WEB_CONCURRENCY / MOD_WSGI_PROCESSES / MOD_WSGI_THREADS)"
    else:
        tuning = capacity.why
    notes = [f"resources: {resources.why}", f"workers: {processes} process(es) x {threads} thread(s) ({tuning})"]
    return processes, threads, notes


def _static(facts: Facts) -> tuple[str | None, str]:
    """The URL and folder of the static files the build recorded, both ends agreeing on the trailing slash."""
    static = facts.static or StaticFiles()
    static_url = _static_url(static.url)
    static_root = static.root.rstrip("/")
    if static_url and static_root:
        # Apache's alias needs both ends to agree on the trailing slash.
        static_root += "/" if static_url.endswith("/") else ""
    return static_url, static_root


def _context(spec: AppSpec, facts: Facts, options: StartOptions, env: str, server: Server) -> tuple[StartContext, list[str]]:
    """What the server's command is made from, and the notes on how it was decided."""
    processes, threads, notes = _workers(spec, facts, options, server)
    static_url, static_root = _static(facts)
    if static_url and static_root:
        notes.append(f"static: {static_url} -> {static_root}")
    if options.reload and not server.reload:
        raise ConfigError(f"{server.name} has no code reloader", "use --server gunicorn (or mod_wsgi) for --reload")
    context = StartContext(
        spec=spec,
        facts=facts,
        env=env,
        home=_join(options.project, spec.home),
        host=options.host,
        port=start_port(spec, options.port)[0],
        processes=processes,
        threads=threads,
        static_url=static_url,
        static_root=static_root,
        runtime=_join(env_paths(options.project, options.env_dir)[0], "run"),
        reload=options.reload,
        user=options.user,
        group=options.group,
        max_clients=options.max_clients,
        trusted_proxy=options.trusted_proxy,
    )
    return context, notes


def _checks(ctx: StartContext, server: Server, command: Command, port_check: bool) -> tuple[Step, ...]:
    """The port check (the app's own server binds as it likes; not asked for on deploys), then the server's own."""
    checks: list[Step] = []
    if port_check and server.protocol != "own":
        argv = script(ctx.python, "port_check.py", ctx.host, str(ctx.port))
        checks.append(Step("port", argv, ctx.home, f"{ctx.host}:{ctx.port} must be free", phase="start"))
    checks += [Step(c.name, c.argv, ctx.home, c.why, phase="start") for c in command.checks]
    return tuple(checks)


def _unprivileged(ctx: StartContext, server: Server, project: str, step: Step) -> tuple[Step, tuple[Step, ...], tuple[str, ...]]:
    """As root, ``step`` run as an unprivileged account by run_as.py; the check that it can read the app; the note.

    An app served as root hands the machine to whoever breaks it. Unchanged when not root, and for a server that
    drops its own privileges (Apache binds as root, then runs its workers as the account). The deploy-env hook is
    inside ``step``, so it is sourced as the account too, which must read it.
    """
    if ctx.facts.euid != 0 or server.drops_privileges:
        return step, (), ()
    user, group, why = worker_account(ctx)
    if user == "root":
        return step, (), (f"running as root: {server.name} too, as --user root asks",)
    hook = (_join(project, ctx.spec.hooks["deploy-env"]),) if step.env_hook else ()
    check = read_check(ctx, user, group, f"{server.name}'s processes", hook)
    argv = script(ctx.python, "run_as.py", user, group, "--", *step.argv)
    checks = (Step(check.name, check.argv, ctx.home, check.why, phase="start"),)
    return replace(step, argv=argv), checks, (f"running as root: {server.name} runs as {user}:{group} ({why})",)


def _setup_name(ctx: StartContext, server: Server, step: Step) -> tuple[Step, tuple[str, ...]]:
    """``step`` behind setup_name.py when the app's module is the name ``setup.py --name`` prints (not literal in it).

    As root, the project's setup.py runs as the account the server's workers run as: run_as.py puts the whole step
    there, and a server that stays root itself (Apache) has setup_name.py drop to its workers' account for it.
    """
    if SETUP_NAME not in ctx.spec.target:
        return step, ()
    account: tuple[str, ...] = ()
    if ctx.facts.euid == 0 and server.drops_privileges:
        user, group, _why = worker_account(ctx)
        account = ("--as", user, group)
    argv = script(ctx.python, "setup_name.py", *account, SETUP_NAME, "--", *step.argv)
    note = f"app module: {SETUP_NAME} is replaced by what setup.py --name prints, run with {ctx.python} when it starts"
    return replace(step, argv=argv), (note,)


def plan_start(spec: AppSpec, facts: Facts, options: StartOptions) -> StartPlan:
    """The server command ``warp start`` execs, with the checks before it."""
    port, port_why = start_port(spec, options.port)
    options = replace(options, port=port)
    env, server = _built_server(spec, facts, options)
    ctx, notes = _context(spec, facts, options, env, server)
    command = server.command(ctx)
    run_env = hook_environment(spec, options.project, env, "deploy", "start", options.port)
    run_env.update({"HOST": options.host, "PORT": str(options.port)})
    path = (f"{env}/bin",)
    before: list[Step] = []
    if "deploy" in spec.hooks:
        # The deploy hook sees what every command sees, not the server's own additions.
        hook = Step(
            "hook deploy",
            hook_argv(spec, "deploy"),
            options.project,
            "deploy action hook",
            env=dict(run_env),
            path=path,
            phase="start",
        )
        before.append(with_env_hook(spec, "deploy-env", options.project, hook))
    run_env.update(command.env)
    reload_notes = _reload_src(spec, options, ctx.home, env, run_env)
    step = Step(server.name, command.argv, ctx.home, command.why, env=run_env, path=path, phase="start")
    step, setup_notes = _setup_name(ctx, server, step)
    if spec.gunicorn_config and server.name != "gunicorn":
        setup_notes += (
            f"gunicorn config: {spec.gunicorn_config} is read by gunicorn only (--server gunicorn), not by {server.name}",
        )
    step = with_env_hook(spec, "deploy-env", options.project, step)
    step, account_checks, account_notes = _unprivileged(ctx, server, options.project, step)
    return StartPlan(
        _checks(ctx, server, command, options.port_check) + account_checks,
        tuple(before),
        step,
        (
            f"app: {spec.why}",
            f"server: {server.name}",
            f"port: {port} ({port_why})",
            *notes,
            *command.notes,
            *setup_notes,
            *account_notes,
            *reload_notes,
        ),
    )


def _reload_src(spec: AppSpec, options: StartOptions, home: str, env: str, run_env: dict[str, str]) -> tuple[str, ...]:
    """With --reload, a src layout's src/ first on the server's import path (its note), so edits there are served.

    The build installs the project non-editable: the server imports the environment's copy, and a reloader watches
    the files it imported, so an edit under src/ would change nothing until the next build. warptasks' own support
    folder (warp_app.py, gunicorn_conf.py) stays ahead of it: a module of the project's with one of those names must
    not replace the loader the server was told to use (without --reload the project's folder comes after it too).
    """
    if not (options.reload and spec.dependencies.install_project and spec.dependencies.src_dir):
        return ()
    src = _join(home, spec.dependencies.src_dir)
    parts = [part for part in run_env.get("PYTHONPATH", "").split(":") if part]
    support = _join(env, "warp")
    at = parts.index(support) + 1 if support in parts else 0
    run_env["PYTHONPATH"] = ":".join([*parts[:at], src, *parts[at:]])
    return (
        f"reload: {src} comes before the installed project on the server's import path and is watched: "
        "edits there are served without a build "
        "(the environment's installed copy of the project is not used)",
    )
