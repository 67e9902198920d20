"""detect -> facts -> plan -> execute, for each action; used by the tasks.

Each function takes the runner ``c`` first, so the same sequence runs
locally (invoke ``Context``) or on a remote host (fabric ``Connection``), and
the :class:`~warptasks.settings.Settings` the task resolved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from invoke import Context
from uv import find_uv_bin

from ..detect import AppSpec, detect_app
from ..errors import NotBuilt, WarpError
from ..facts import Facts
from ..plan import (
    BuildOptions,
    Plan,
    StartOptions,
    StartPlan,
    Step,
    env_paths,
    plan_build,
    plan_process,
    plan_start,
    untracked_dirs,
)
from ..plan.environment import refuse_unsafe
from ..plan.processes import unknown_type
from ..scripts import probe
from ..settings import Settings
from .executor import Runner, Say, _say, execute, gather_facts
from .lock import build_lock
from .progress import Progress


def local_python(spec: AppSpec, requested: str | None) -> str:
    """The Python command a local build uses."""
    if requested:
        if requested.replace(".", "").isdigit():
            return f"python{requested}"
        return requested
    want = spec.python.version
    current = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if want and want != current:
        return shutil.which(f"python{want}") or _uv_find_python(want) or f"python{want}"
    return sys.executable


def _uv_find_python(version: str) -> str | None:
    """An installed Python of ``version`` that uv knows of (pyenv's, for one); never downloads."""
    for uv in uv_candidates():
        try:
            found = subprocess.run(
                [uv, "python", "find", "--no-project", version],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip().splitlines()[-1]
    return None


def uv_candidates() -> list[str]:
    """uv's own binary, which the uv package ships (a build without it leaves the installer to pip)."""
    try:
        return [find_uv_bin()]
    except FileNotFoundError:
        return []


def read_facts(c: Runner, project: str, settings: Settings, python: str, *, tree: bool = True, kept: bool = False) -> Facts:
    """Facts about the machine the plan runs on; ``tree``: fingerprint the source too (only builds need it).

    ``kept``: on this machine (invoke's own Context; not a fabric Connection, nor a test's MockContext), read them
    in this process, with the Python's own facts kept between runs (:mod:`warptasks.run.facts_cache`): no probe.
    """
    root, envs = env_paths(project, settings.env_dir, settings.envs_dir)
    # root: the project, whose owner may own its folders too (see probe._trusted_owners)
    request: dict[str, Any] = {"env_dir": root, "envs_dir": envs, "uv_candidates": uv_candidates(), "root": project}
    if tree:
        request.update(project=project, ignore=untracked_dirs(settings.env_dir))
    elif type(c) is Context:
        # Not a build: the built environment's own Python reads the facts. An envs folder another account could change
        # is refused before that Python runs (the plan refuses it from the facts, once it has run: too late), and so is
        # the folder of the ``current`` link it is reached through (not above the envs folder when envs_dir is elsewhere).
        trusted = probe._trusted_owners(project)
        refuse_unsafe(probe._unsafe_envs(envs, trusted) or probe._unsafe_parents(os.path.join(root, "current"), trusted))
    if kept and type(c) is Context:
        from .facts_cache import local_facts

        return local_facts(c, python, request)
    return gather_facts(c, python, request)


Environ = Mapping[str, str] | None


def detect(settings: Settings, environ: Environ = None) -> AppSpec:
    """The app; ``environ``: the process environment, which a local task passes (PORT, DJANGO_SETTINGS_MODULE count)."""
    return detect_app(settings.project, server=settings.server, environ=environ)


def build_plan(c: Runner, settings: Settings, *, force: bool = False, environ: Environ = None) -> tuple[AppSpec, Plan]:
    spec = detect(settings, environ)
    python, options = local_python(spec, settings.python), build_options(spec.root, settings, force)
    if not force:
        # A no-op build is planned from kept facts; one with anything to run is planned again from the probe's, so
        # what runs never depends on what was kept (whether that Python still has virtualenv, for one).
        plan = plan_build(spec, read_facts(c, spec.root, settings, python, kept=True), options)
        if not plan.runnable:
            return spec, plan
    return spec, plan_build(spec, read_facts(c, spec.root, settings, python), options)


def build_options(project: str, settings: Settings, force: bool = False) -> BuildOptions:
    return BuildOptions(project, settings.env_dir, settings.envs_dir, settings.installer, force)


def both_plans(c: Runner, settings: Settings, environ: Environ = None) -> tuple[AppSpec, Plan, StartPlan | WarpError]:
    """What build and start would do, from one detection and one probe (for warp plan)."""
    spec = detect(settings, environ)
    facts = read_facts(c, spec.root, settings, local_python(spec, settings.python))
    try:
        start: StartPlan | WarpError = plan_start(spec, facts, start_options(spec.root, settings))
    except WarpError as not_yet:
        start = not_yet
    return spec, plan_build(spec, facts, build_options(spec.root, settings)), start


def start_options(project: str, settings: Settings, reload: bool = False) -> StartOptions:
    return StartOptions(
        project=project,
        env_dir=settings.env_dir,
        host=settings.host,
        port=settings.port,
        processes=settings.processes,
        threads=settings.threads,
        reload=reload,
        user=settings.user,
        group=settings.group,
        max_clients=settings.max_clients,
    )


def start_plan(c: Runner, settings: Settings, *, reload: bool = False, environ: Environ = None) -> tuple[AppSpec, StartPlan]:
    spec = detect(settings, environ)
    facts = read_facts(c, spec.root, settings, _built_python(spec, settings), tree=False, kept=True)
    return spec, plan_start(spec, facts, start_options(spec.root, settings, reload))


def process_plan(c: Runner, settings: Settings, name: str, environ: Environ = None) -> tuple[AppSpec, Step]:
    """The command of the Procfile's process type ``name``, planned as ``warp start`` plans the server."""
    spec = detect(settings, environ)
    if name not in spec.process_types:
        raise unknown_type(spec, name)
    facts = read_facts(c, spec.root, settings, _built_python(spec, settings), tree=False, kept=True)
    return spec, plan_process(spec, facts, name, start_options(spec.root, settings))


def _built_python(spec: AppSpec, settings: Settings) -> str:
    """The current environment's own Python, which exists once built."""
    root, _ = env_paths(spec.root, settings.env_dir, settings.envs_dir)
    python = os.path.join(root, "current", "bin", "python")
    if not os.path.exists(python):
        raise NotBuilt(f"{spec.root} has not been built (no {python})", "run warp build first")
    return python


def build(c: Runner, settings: Settings, *, force: bool = False, say: Say = _say, environ: Environ = None) -> Plan:
    spec = detect(settings, environ)
    # Planned under the lock: a build that waited must see what the other one built.
    with build_lock(env_paths(spec.root, settings.env_dir, settings.envs_dir)[0], say):
        return _build(c, settings, force, say, environ)


def _build(c: Runner, settings: Settings, force: bool, say: Say, environ: Environ = None) -> Plan:
    progress = Progress(say)  # from here: detection and the probe count in the total, a wait for the lock does not
    spec, plan = build_plan(c, settings, force=force, environ=environ)
    for note in plan.notes:
        say(note)
    if not plan.runnable:
        say("build: nothing to do (no input changed); use --force to rebuild")
        return plan
    execute(plan, c, say=say, progress=progress)
    # The last line: where the time went (the slowest steps), e.g. "built in 41.3s: install requirements 30.1s, ...".
    say(progress.summary("built"))
    return plan


def current_env(spec: AppSpec, settings: Settings) -> str:
    """The environment ``warp build`` made current."""
    env = os.path.realpath(os.path.join(env_paths(spec.root, settings.env_dir, settings.envs_dir)[0], "current"))
    if not os.path.isdir(env):
        raise NotBuilt(f"{spec.root} has not been built", "run warp build first")
    return env
