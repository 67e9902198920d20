"""Planning the Procfile's process types (``worker``, ``clock``...) and its ``release`` command.

A Procfile line is a shell command, the project's own by definition, as the
app's own server's ``web:`` line is (:mod:`warptasks.servers.own`): it runs
with ``bash -c 'exec LINE'`` so the process gets the signals, in the app's
environment (the environment's ``bin`` on PATH, the environment file, the
``deploy-env`` hook), from the app's folder. Pure: a spec and facts in, a
:class:`~warptasks.plan.steps.Step` out.
"""

from __future__ import annotations

from dataclasses import replace

from ..detect import AppSpec
from ..errors import ConfigError
from ..facts import Facts
from ..scripts import command as script
from ..servers import worker_account
from .environment import plan_exec
from .start import StartOptions, _built_server, _context
from .steps import Step


def procfile_argv(command: str) -> tuple[str, ...]:
    """A Procfile line as an argv: a shell command, exec'd so the process itself gets the stop signal."""
    return ("bash", "-c", f"exec {command}")


def unknown_type(spec: AppSpec, name: str) -> ConfigError:
    types = ", ".join(spec.process_types) or "none"
    return ConfigError(
        f"the Procfile has no process type {name!r}",
        f"its process types: {types}; add a '{name}: command' line to the Procfile, or name one of them",
    )


def plan_process(spec: AppSpec, facts: Facts, name: str, options: StartOptions) -> Step:
    """The command of the Procfile's process type ``name``, run in the built environment ``warp start`` would use.

    As root it runs as the server's unprivileged account (``--user``/``--group``, else www-data or nobody), whatever
    the server does: a worker is the app's code, and nothing of it needs root.
    """
    if name not in spec.process_types:
        raise unknown_type(spec, name)
    env, server = _built_server(spec, facts, options)
    step = plan_exec(spec, options.project, env, procfile_argv(spec.process_types[name]), name, options.port)
    step = replace(step, name=f"process {name}", why=f"the Procfile's {name}: line", phase="start")
    if facts.euid != 0:
        return step
    ctx, _ = _context(spec, facts, options, env, server)
    user, group, _why = worker_account(ctx)
    if user == "root":
        return step
    return replace(step, argv=script(ctx.python, "run_as.py", user, group, "--", *step.argv))


def plan_release(spec: AppSpec, project: str, env: str) -> Step | None:
    """The Procfile's ``release:`` command, run once per deploy before the switch, as the migrate hook is; or None."""
    command = spec.release_command
    if command is None:
        return None
    step = plan_exec(spec, project, env, procfile_argv(command), "release")
    return replace(step, name="release", why="the Procfile's release: line (once per deploy, before any host switches)")
