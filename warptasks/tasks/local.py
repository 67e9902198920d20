"""The local tasks: plan, build, start, exec, shell and the hook commands, thin over :mod:`warptasks.run.local`."""

from __future__ import annotations

import json as jsonlib
import os
import shlex
import sys
from dataclasses import replace
from typing import Any

from invoke import Context

from ..detect import AppSpec
from ..errors import ConfigError, WarpError
from ..plan import command_line, masked_env, plan_command, plan_exec
from ..plan.environment import start_port
from ..run import local as actions
from ..run.executor import exec_local, run_checks
from ..settings import Settings
from .console import ON_HOSTS_HELP, on_hosts, refuse_as_root_here, run_on_hosts, terminal
from .flags import warp_task
from .report import OPTION_HELP, reported


def _opts(c: Context, **given: Any) -> Settings:
    return Settings.resolve(c.config, **given)


REVEAL_HELP = "show the environment files' values (by default only their names, with ***)"


def _hidden(spec: AppSpec, reveal: bool) -> frozenset[str]:
    """The variables whose values are not printed: the environment files' (database URLs, keys), unless ``reveal``."""
    return frozenset() if reveal else frozenset(spec.environment)


@warp_task(help=OPTION_HELP | {"json": "print the plan as JSON", "port": "the port start would use", "reveal": REVEAL_HELP})
def plan(c, project=None, server=None, python=None, installer=None, env_dir=None, port=None, json=False, reveal=False):
    """Say what was detected and exactly what build and start will do, and why."""
    with reported():
        opts = _opts(c, project=project, server=server, python=python, installer=installer, env_dir=env_dir, port=port)
        spec, build_plan, planned = actions.both_plans(c, opts, os.environ)
        start = None if isinstance(planned, WarpError) else planned
        hidden = _hidden(spec, reveal)
        start_data: Any = {"error": str(planned)} if start is None else start.as_dict(mask=hidden)
        if json:
            app = spec.as_dict()
            app["environment"] = masked_env(app["environment"], hidden)
            data = {"app": app, "build": build_plan.as_dict(mask=hidden), "start": start_data}
            print(jsonlib.dumps(data, indent=2, default=str))
            return
        print("Detected:")
        for note in build_plan.notes:
            print(f"  {note}")
        print(f"  static: {spec.static_why}")
        if spec.hooks:
            print(f"  hooks: {', '.join(f'{k} ({v})' for k, v in spec.hooks.items())}")
        for name, command in spec.procfile.items():
            if name != "web":
                what = "once per deploy, before the switch" if name == "release" else "a process type (warp start --process)"
                print(f"  Procfile {name}: {command}  [{what}]")
        print("Build steps:")
        for number, step in enumerate(build_plan.steps, 1):
            state = f"skip: {step.skip}" if step.skip else "run"
            print(f"  {number}. {step.name} [{state}]\n     why: {step.why}\n     $ {_short(step, hidden)}")
        if start is None:
            print(f"Start: {start_data['error']}")
            print("  port: {} ({})".format(*start_port(spec, opts.port)))
            return
        print("Start:")
        for note in start.notes:
            print(f"  {note}")
        for step in (*start.checks, *start.before):
            print(f"  before: {step.name}: {step.why}")
        print(f"  exec: {_short(start.server, hidden)}")


def _short(step: Any, hidden: frozenset[str], limit: int = 160) -> str:
    """The step's command line, with long embedded scripts or file contents elided and the ``hidden`` values masked."""
    argv = tuple(a if len(a) <= limit else f"<{len(a)} characters: {a[:40].strip()}...>" for a in step.argv)
    return command_line(replace(step, argv=argv), mask=hidden)


@warp_task(help=OPTION_HELP | {"force": "rebuild every step, even when nothing changed"})
def build(c, project=None, server=None, python=None, installer=None, env_dir=None, force=False):
    """Make the app's environment: virtualenv, dependencies, server, collectstatic, hooks."""
    with reported():
        opts = _opts(c, project=project, server=server, python=python, installer=installer, env_dir=env_dir)
        actions.build(c, opts, force=force, environ=os.environ)


@warp_task(
    iterable=["host"],
    help={
        "project": OPTION_HELP["project"],
        "listen": "address to listen on (default 127.0.0.1; 0.0.0.0 for all)",
        "host": "a host whose live release's server to start again (after warp stop), health-checked; repeatable "
        "(a bare address such as 0.0.0.0 still means --listen, deprecated)",
        "port": "port to listen on (default: PORT exported, else PORT in .s2i/environment, else 8080); with --host: "
        "the app's public port, used only when the host's "
        "releases cannot tell its backend ports",
        "processes": "worker processes (default: from the CPUs and memory available)",
        "threads": "threads per process (default: computed)",
        "reload": "reload when code changes (development)",
        "user": "as root: the account the server runs as (mod_wsgi: Apache's workers; default www-data, else nobody)",
        "group": "as root: the group the server runs as (default: the account's own)",
        "server": OPTION_HELP["server"],
        "env-dir": OPTION_HELP["env-dir"],
        "dry-run": "print the server command instead of running it",
        "reveal": REVEAL_HELP,
        "process": "run this Procfile process type (worker, clock...) instead of the web server",
        "path": "with --host: the deploy folder on the hosts (default /srv/app)",
        "identity": "with --host: the SSH private key file",
        "known-hosts": "with --host: a known_hosts file checked besides ~/.ssh/known_hosts",
        "accept-unknown-host": "with --host: accept (and record) host keys not in known_hosts",
        "python": "with --host: the host's Python command (default python3)",
        "health": "with --host: the URL path the server must answer with 2xx or 3xx (default: the release's own check)",
        "backend-port": "with --host: the first of the app's two backend ports (as --port)",
        "json": "with --host: print the result as JSON (progress on stderr)",
    },
)
def start(
    c,
    project=None,
    listen=None,
    host=None,
    port=None,
    processes=None,
    threads=None,
    reload=False,
    user=None,
    group=None,
    server=None,
    env_dir=None,
    dry_run=False,
    reveal=False,
    process=None,
    path=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
    health=None,
    backend_port=None,
    json=False,
):
    """Exec the server chosen at build time (it replaces this process); --process TYPE: a Procfile process type;
    with --host, start the hosts' server again."""
    from ..remote.commands import start_where

    with reported():
        where = start_where(listen, host)
        if where.note:
            print(where.note, file=sys.stderr, flush=True)
        if where.hosts or (hasattr(c, "original_host") and not where.listen):
            from .remote import serve_on_hosts

            reach = {"path": path, "identity": identity, "known_hosts": known_hosts, "python": python}
            # No --health-host nor --break-lock here: the release's recorded Host header is used; warp restart
            # --break-lock frees a stale lock.
            reach |= {"accept_unknown_host": accept_unknown_host, "health": health}
            reach |= {"port": port, "backend_port": backend_port}
            serve_on_hosts(c, list(where.hosts), bool(json), **reach)
            return
        opts = _opts(
            c,
            project=project,
            host=where.listen,
            port=port,
            processes=processes,
            threads=threads,
            user=user,
            group=group,
            server=server,
            env_dir=env_dir,
        )
        if process:
            spec, step = actions.process_plan(c, opts, process, os.environ)
            if dry_run:
                print(command_line(step, mask=_hidden(spec, reveal)))
                return
            print(f"start: {step.why}", flush=True)
            exec_local(step)
            return
        spec, plan = actions.start_plan(c, opts, reload=reload, environ=os.environ)
        for note in plan.notes:
            print(note, flush=True)
        if dry_run:
            print(command_line(plan.server, mask=_hidden(spec, reveal)))
            return
        run_checks(c, plan)
        print(f"start: {plan.server.why}", flush=True)
        exec_local(plan.server)


def _remainder(command: str) -> tuple[str, ...]:
    if command:
        return tuple(shlex.split(command))
    if "--" in sys.argv:
        return tuple(sys.argv[sys.argv.index("--") + 1 :])
    return ()


@warp_task(
    name="exec",
    iterable=["host"],
    help={"command": "the command (or give it after --)", "project": OPTION_HELP["project"], **ON_HOSTS_HELP},
)
def exec_(
    c,
    command="",
    project=None,
    host=None,
    path=None,
    identity=None,
    known_hosts=None,
    accept_unknown_host=False,
    python=None,
    as_root=False,
):
    """Run a command in the app's environment: warp exec -- python manage.py migrate (--host: on a host)."""
    with reported():
        if not command and hasattr(c, "original_host") and "--" in sys.argv:
            # The words after -- are fab's own: a shell command it runs on each host after the tasks, outside the
            # release (today's fabric stops at them with NothingToDo before any task runs; one that runs them must not).
            raise ConfigError(
                "with fab, the command goes in -c: fab runs what follows -- as a shell command on the host itself",
                "fab -H web1 warp.exec -c 'python manage.py check' (or warp exec --host web1 -- python manage.py check)",
            )
        argv = _remainder(command)
        if not argv:
            raise ConfigError("no command given", "write it after --, e.g. warp exec -- python manage.py check")
    refuse_as_root_here(c, host, as_root)
    if on_hosts(c, host):
        reach = {"path": path, "identity": identity, "known_hosts": known_hosts, "python": python}
        how = {"interactive": terminal(), "accept_unknown_host": accept_unknown_host, "as_root": as_root}
        run_on_hosts(c, host, "exec", argv, **how, **reach)
        return
    with reported():
        opts = _opts(c, project=project)
        spec = actions.detect(opts, os.environ)
        step = plan_exec(spec, spec.root, actions.current_env(spec, opts), argv, "exec", opts.port)
        exec_local(step, command=True)


@warp_task(
    iterable=["host"],
    help={"project": OPTION_HELP["project"], **ON_HOSTS_HELP, "host": "open it on this host's live release instead"},
)
def shell(
    c, project=None, host=None, path=None, identity=None, known_hosts=None, accept_unknown_host=False, python=None, as_root=False
):
    """Open an interactive shell in the app's environment (--host: on a host, with a terminal)."""
    refuse_as_root_here(c, host, as_root)
    if on_hosts(c, host):
        reach = {"path": path, "identity": identity, "known_hosts": known_hosts, "python": python}
        run_on_hosts(c, host, "shell", interactive=True, accept_unknown_host=accept_unknown_host, as_root=as_root, **reach)
        return
    with reported():
        opts = _opts(c, project=project)
        spec = actions.detect(opts, os.environ)
        step = plan_exec(spec, spec.root, actions.current_env(spec, opts), ("bash", "-i"), "shell", opts.port)
        exec_local(step, command=True)


def _hook_task(name: str, doc: str):
    @warp_task(
        name=name,
        iterable=["host"],
        help={"project": OPTION_HELP["project"], **ON_HOSTS_HELP},
    )
    def hook(
        c,
        project=None,
        host=None,
        path=None,
        identity=None,
        known_hosts=None,
        accept_unknown_host=False,
        python=None,
        as_root=False,
    ):
        refuse_as_root_here(c, host, as_root)
        if on_hosts(c, host):
            reach = {"path": path, "identity": identity, "known_hosts": known_hosts, "python": python}
            run_on_hosts(c, host, name, accept_unknown_host=accept_unknown_host, as_root=as_root, **reach)
            return
        with reported():
            opts = _opts(c, project=project)
            spec = actions.detect(opts, os.environ)
            step = plan_command(spec, spec.root, actions.current_env(spec, opts), name, opts.port)
            if step is None:
                raise ConfigError(
                    f"this project has no {name} action hook",
                    f"add an executable .warpdrive/action_hooks/{name} (or .s2i/action_hooks/{name})",
                )
            exec_local(step)

    hook.__doc__ = doc + " --host: on a host's live release."
    return hook


setup = _hook_task("setup", "Run the app's setup action hook (one-off initialisation).")
migrate = _hook_task("migrate", "Run the migrate hook (for Django without one: manage.py migrate).")
verify = _hook_task("verify", "Run the verify action hook; fails when the app has none.")
alive = _hook_task("alive", "Run the alive (liveness) action hook; fails when the app has none.")
ready = _hook_task("ready", "Run the ready (readiness) action hook; fails when the app has none.")
