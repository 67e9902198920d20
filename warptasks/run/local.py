"""detect -> facts -> plan -> execute, for each action; used by the tasks.

Each function takes the runner ``c`` first, so the same sequence runs
locally (invoke ``Context``) or on a remote host (fabric ``Connection``).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from ..detect import AppSpec, detect_app
from ..errors import ConfigError, NotBuilt, WarpError
from ..facts import Facts
from ..plan import BuildOptions, Plan, StartOptions, StartPlan, env_paths, plan_build, plan_start, untracked_dirs
from .executor import Runner, Say, _say, execute, gather_facts

# The defaults of every setting; invoke config (``warp:`` in invoke.yaml,
# INVOKE_WARP_* variables) overrides them and task options override that.
DEFAULTS: dict[str, Any] = {
    "project": ".",
    "env_dir": ".warp",
    "envs_dir": "",
    "installer": "auto",
    "python": None,
    "server": None,
    "host": "127.0.0.1",
    "port": 8080,
    "processes": None,
    "threads": None,
    "max_clients": None,
    "user": None,
    "group": None,
}


def settings(config: Any, **given: Any) -> dict[str, Any]:
    """Task options over invoke config over :data:`DEFAULTS`."""
    merged = dict(DEFAULTS)
    section = config.get("warp", {}) if config is not None else {}
    for key in DEFAULTS:
        if key in section and section[key] is not None:
            merged[key] = section[key]
    for key, value in given.items():
        if value is not None:
            merged[key] = value
    return merged


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
    import subprocess

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
    try:
        from uv import find_uv_bin

        return [find_uv_bin()]
    except (ImportError, FileNotFoundError):
        return []


def read_facts(c: Runner, project: str, opts: dict[str, Any], python: str, *, tree: bool = True) -> Facts:
    """Facts about the machine the plan runs on; ``tree``: fingerprint the source too (only builds need it)."""
    root, envs = env_paths(project, opts["env_dir"], opts["envs_dir"])
    request: dict[str, Any] = {"env_dir": root, "envs_dir": envs, "uv_candidates": uv_candidates()}
    if tree:
        request.update(project=project, ignore=untracked_dirs(opts["env_dir"]))
    return gather_facts(c, python, request)


def detect(opts: dict[str, Any]) -> AppSpec:
    return detect_app(opts["project"], server=opts["server"])


def build_plan(c: Runner, opts: dict[str, Any], *, force: bool = False) -> tuple[AppSpec, Plan]:
    spec = detect(opts)
    facts = read_facts(c, spec.root, opts, local_python(spec, opts["python"]))
    return spec, _plan_build(spec, facts, opts, force)


def _plan_build(spec: AppSpec, facts: Facts, opts: dict[str, Any], force: bool = False) -> Plan:
    return plan_build(spec, facts, BuildOptions(spec.root, opts["env_dir"], opts["envs_dir"], opts["installer"], force))


def both_plans(c: Runner, opts: dict[str, Any]) -> tuple[AppSpec, Plan, StartPlan | WarpError]:
    """What build and start would do, from one detection and one probe (for warp plan)."""
    spec = detect(opts)
    facts = read_facts(c, spec.root, opts, local_python(spec, opts["python"]))
    try:
        start: StartPlan | WarpError = plan_start(spec, facts, start_options(spec.root, opts))
    except WarpError as not_yet:
        start = not_yet
    return spec, _plan_build(spec, facts, opts), start


def start_options(project: str, opts: dict[str, Any], reload: bool = False) -> StartOptions:
    try:
        port = int(opts["port"])
    except (TypeError, ValueError):
        raise ConfigError(f"port {opts['port']!r} is not a number", "pass --port with a number such as 8080") from None
    return StartOptions(
        project=project,
        env_dir=opts["env_dir"],
        host=opts["host"],
        port=port,
        processes=int(opts["processes"]) if opts["processes"] else None,
        threads=int(opts["threads"]) if opts["threads"] else None,
        reload=reload,
        user=opts["user"],
        group=opts["group"],
        max_clients=int(opts["max_clients"]) if opts["max_clients"] else None,
    )


def start_plan(c: Runner, opts: dict[str, Any], *, reload: bool = False) -> tuple[AppSpec, StartPlan]:
    spec = detect(opts)
    facts = read_facts(c, spec.root, opts, _built_python(spec, opts), tree=False)
    return spec, plan_start(spec, facts, start_options(spec.root, opts, reload))


def _built_python(spec: AppSpec, opts: dict[str, Any]) -> str:
    """The current environment's own Python, which exists once built."""
    root, _ = env_paths(spec.root, opts["env_dir"], opts["envs_dir"])
    python = os.path.join(root, "current", "bin", "python")
    if not os.path.exists(python):
        raise NotBuilt(f"{spec.root} has not been built (no {python})", "run warp build first")
    return python


def build(c: Runner, opts: dict[str, Any], *, force: bool = False, say: Say = _say) -> Plan:
    spec, plan = build_plan(c, opts, force=force)
    for note in plan.notes:
        say(note)
    if not plan.runnable:
        say("build: nothing to do (no input changed); use --force to rebuild")
        return plan
    count = execute(plan, c, say=say)
    say(f"build: done ({count} step(s) run, {len(plan.steps) - count} skipped)")
    return plan


def current_env(spec: AppSpec, opts: dict[str, Any]) -> str:
    """The environment ``warp build`` made current."""
    env = os.path.realpath(os.path.join(env_paths(spec.root, opts["env_dir"], opts["envs_dir"])[0], "current"))
    if not os.path.isdir(env):
        raise NotBuilt(f"{spec.root} has not been built", "run warp build first")
    return env
