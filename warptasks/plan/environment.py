"""The environment every step sees: hooks' variables, the build-env/deploy-env hooks, exec and hook commands.

Shared by build, start, ``warp exec`` and the deploy's migrate step, so a
command runs in exactly the environment the server runs in.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import replace

from ..detect import UNTRACKED_DIRS, AppSpec
from ..detect.conventions import choose_port
from ..errors import ConfigError
from ..facts import Facts
from .steps import Step


def _join(*parts: str) -> str:
    return posixpath.normpath(posixpath.join(*parts))


def refuse_unsafe_envs(facts: Facts) -> None:
    """Refuse an envs folder another account owns or may write to, before anything is built in it or run from it."""
    refuse_unsafe(facts.unsafe_envs)


def refuse_unsafe(unsafe: Sequence[str] | None) -> None:
    """:func:`refuse_unsafe_envs` for the probe's ``[problem, fix]`` (``_unsafe_envs``) as it answered it."""
    if unsafe:
        problem, fix = unsafe
        raise ConfigError(f"{problem}: it could replace an environment with its own, run by this account", fix)


def env_paths(project: str, env_dir: str, envs_dir: str = "") -> tuple[str, str]:
    root = _join(project, env_dir)
    return root, _join(project, envs_dir) if envs_dir else _join(root, "envs")


def untracked_dirs(env_dir: str) -> list[str]:
    """Folder names that are not source: environments, VCS data, caches, and the environment folder itself."""
    return sorted(UNTRACKED_DIRS | {env_dir.strip("/").split("/")[0]})


def hook_argv(spec: AppSpec, name: str) -> tuple[str, ...]:
    path = spec.hooks[name]
    return (f"./{path}",) if spec.hook_executable.get(name) else ("bash", path)


def start_port(spec: AppSpec, port: int | None) -> tuple[int, str]:
    """The port a start listens on and why: ``port`` when given, else PORT (see :func:`choose_port`)."""
    return choose_port(port, spec.process_environment, spec.environment, spec.environment_files)


def hook_environment(spec: AppSpec, project: str, env: str, phase: str, action: str, port: int | None = None) -> dict[str, str]:
    """Variables hooks, the server and ``warp exec`` see, beside the environment file's (the process settings exported
    where warp runs over them, as a container's own environment beats its image's).

    The WARPDRIVE_* names are warpdrive's, so its hooks keep working. ``port`` None: the one a start would choose.
    """
    home = _join(project, spec.home)
    port = start_port(spec, port)[0]
    values = {**spec.environment, **spec.process_environment}
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
    """``step`` run after sourcing the ``build-env``/``deploy-env`` hook, if the app has one.

    ``env_hook`` of the result names the hook sourced, or is empty: a plan shows what really runs.
    """
    if hook not in spec.hooks:
        return replace(step, env_hook="")
    argv = ("bash", "-c", _SOURCE_THEN_EXEC, "bash", _join(project, spec.hooks[hook]), *step.argv)
    return replace(step, argv=argv, env_hook=hook)


def source_env_hooks(spec: AppSpec, project: str, steps: Iterable[Step]) -> tuple[Step, ...]:
    """``steps``, each that asks for an env hook (:attr:`Step.env_hook`) made to source it: the one place that happens."""
    return tuple(with_env_hook(spec, s.env_hook, project, s) if s.env_hook else s for s in steps)


def plan_exec(spec: AppSpec, project: str, env: str, argv: tuple[str, ...], action: str, port: int | None = None) -> Step:
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


def plan_command(spec: AppSpec, project: str, env: str, action: str, port: int | None = None) -> Step | None:
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
