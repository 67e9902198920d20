"""The start plan as data, for an image's runtime stage, which has no warptasks.

Run in the image's build stage after the build (``python -m warptasks.image.runtime PROJECT OUT``): it plans the
start exactly as ``warp start`` does (:func:`warptasks.plan.plan_start`) and writes what the runtime stage's
standard-library entry point (:mod:`warptasks.scripts.image_start`) needs to start it without planning:

- ``servers``: the server's step for each CPU count from 1 to :data:`MAX_CPUS` (identical steps stored once), so
  the entry point sizes the workers with :func:`warptasks.plan.resources.worker_capacity` from the container's own
  limits and picks the step planned for the same processes and threads, whatever the server derives from them;
- ``port``: the token that stands for the port (else null: the port is fixed); each step that holds the port lists
  where in ``port_at`` (a path into the step, and the offsets in that string), found by planning it with two tokens
  and keeping the places where they differ: the entry point fills in ``$PORT`` there, never wherever the token's
  digits happen to appear (an environment value equal to it stays as it is);
- ``fixed_port``: the port when the container sets no ``PORT`` (the only one when ``port`` is null): the project's
  ``PORT`` (its environment file, as the S2I builder reads it), else 8080 (:func:`image_port`);
- ``before`` (the deploy hook), ``health`` (the ready, else alive, hook), ``processes`` (Procfile process types),
  the server's ``capacity`` rule, and ``hooks``: the ready, alive and migrate commands the app has, each alone, and
  the Procfile's ``release:`` line (a Kubernetes readiness probe runs ``warp health ready``, a liveness probe
  ``warp health alive``, a Job ``warp migrate``: migrate, then release, as a deploy does);
- ``project_env``: the names of the project's environment file, whose value the container's environment overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from ..detect import AppSpec, detect_app
from ..facts import CgroupLimits, Facts
from ..plan import StartOptions, StartPlan, Step, plan_start
from ..plan.environment import env_paths, plan_command, start_port
from ..plan.processes import plan_release
from ..run.executor import gather_facts
from ..servers import SERVERS
from ..settings import Settings

MAX_CPUS = 64
HOST = "0.0.0.0"
# Ports no one uses, standing in for $PORT: the second proves every occurrence of the first is the port.
PORT_TOKENS = (47913, 47914)
FORMAT = 2  # 2: the port by position (port_at), not by the token's value


def image_port(spec: AppSpec) -> tuple[int, str]:
    """The port an image of ``spec`` serves on unless the container sets ``PORT``: the project's ``PORT`` (environment
    file), else 8080; the EXPOSE, the label and the ``docker run -p`` printed follow it. Never the process
    environment of the machine the image was built on (``spec`` has none: an image is the project's)."""
    return start_port(spec, None)


def _step(step: Step) -> dict[str, Any]:
    return {
        "name": step.name,
        "argv": list(step.argv),
        "cwd": step.cwd,
        "env": dict(step.env),
        "path": list(step.path),
        "why": step.why,
    }


def _with_cpus(facts: Facts, cpus: int) -> Facts:
    """``facts`` on a machine of ``cpus`` CPUs without limits: the entry point maps the container's limits onto one."""
    return replace(facts, cpu_count=cpus, affinity=None, memtotal=None, cgroup=CgroupLimits())


class _NotAPort(Exception):
    """A step planned with the second token differs from the first by more than the token: the port is fixed."""


def port_positions(first: Any, second: Any, tokens: tuple[str, str], path: tuple[Any, ...] = ()) -> list[list[Any]]:
    """Where ``first`` (a step planned with ``tokens[0]`` as the port) holds the port: ``[path, offsets]`` per string.

    ``second`` is the same step planned with ``tokens[1]``: an occurrence of the first token is the port where the
    second has its own token in its place; any other difference raises :class:`_NotAPort`. An occurrence both share
    (an environment value that happens to equal the token) is a value, not the port.
    """
    if isinstance(first, str) and isinstance(second, str):
        if first == second:
            return []
        old, new = tokens
        offsets, at = [], first.find(old)
        while at >= 0:
            if second[at : at + len(new)] == new:
                offsets.append(at)
            at = first.find(old, at + len(old))
        moved = first
        for at in reversed(offsets):
            moved = moved[:at] + new + moved[at + len(old) :]
        if moved != second:
            raise _NotAPort(path)
        return [[list(path), offsets]]
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        return [p for i, (a, b) in enumerate(zip(first, second, strict=True)) for p in port_positions(a, b, tokens, (*path, i))]
    if isinstance(first, dict) and isinstance(second, dict) and first.keys() == second.keys():
        return [p for key in first for p in port_positions(first[key], second[key], tokens, (*path, key))]
    if first != second:
        raise _NotAPort(path)
    return []


def render(spec: AppSpec, facts: Facts, project: str) -> dict[str, Any]:
    """What the runtime stage's entry point needs to start the app as ``warp start`` would, without planning."""
    fixed_port = image_port(spec)[0]
    try:
        return _render(spec, facts, project, PORT_TOKENS, fixed_port)
    except _NotAPort:  # the port is more than a value in some step (a server that derives something from it)
        return _render(spec, facts, project, (fixed_port, fixed_port), fixed_port)


def _render(spec: AppSpec, facts: Facts, project: str, tokens: tuple[int, int], fixed_port: int) -> dict[str, Any]:
    port, second = tokens
    texts = (str(port), str(second))

    def options(at: int) -> StartOptions:
        return StartOptions(project=project, host=HOST, port=at, port_check=False)

    def templated(make: Callable[[int], dict[str, Any]], planned: dict[str, Any] | None = None) -> dict[str, Any]:
        """A step planned with the first token, and where it holds the port (from the same step with the second)."""
        step = planned if planned is not None else make(port)
        if port == second:
            return step
        where = port_positions(step, make(second), texts)
        return step | {"port_at": where} if where else step

    def optional(make: Callable[[int], Step | None]) -> dict[str, Any] | None:
        if make(port) is None:
            return None
        return templated(lambda at: _step(_present(make(at))))

    plans: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    by_cpus: dict[str, int] = {}
    notes: list[str] = []
    before: list[dict[str, Any]] = []
    for cpus in range(1, MAX_CPUS + 1):
        sized = _with_cpus(facts, cpus)
        plan = plan_start(spec, sized, options(port))
        step = _step(plan.server)
        if step not in plans:
            plans.append(step)
            steps.append(templated(_planned(spec, sized, options, lambda plan: plan.server), step))
        by_cpus[str(cpus)] = plans.index(step)
        if cpus == 1:
            # The port note names the token: the image's own says which port it serves on.
            where = image_port(spec)[1]
            notes = [n if not n.startswith("port: ") else f"port: $PORT, else {fixed_port} ({where})" for n in plan.notes]
            before = [templated(_planned(spec, sized, options, _nth_before(i))) for i in range(len(plan.before))]
    server = SERVERS[facts.state.server] if facts.state else None
    assert server is not None and facts.current  # plan_start refuses an unbuilt project
    current = facts.current

    def health(at: int) -> Step | None:
        return plan_command(spec, project, current, "ready", at) or plan_command(spec, project, current, "alive", at)

    hooks = {name: optional(_hook_at(spec, project, facts, name)) for name in ("ready", "alive", "migrate", "release")}
    processes = _process_types(spec, facts, options(port))
    if processes and port != second:
        moved = _process_types(spec, facts, options(second))
        processes = {name: templated(_fixed(moved[name]), step) for name, step in processes.items()}
    return {
        "format": FORMAT,
        "server": server.name,
        "stop_signal": server.stop_signal,
        "capacity": {
            "threads": server.capacity.threads,
            "why": server.capacity.why,
            "single_process": server.capacity.single_process,
        },
        "port": str(port) if port != fixed_port else None,
        "fixed_port": fixed_port,
        "notes": notes,
        "servers": steps,
        "by_cpus": by_cpus,
        "before": before,
        "health": optional(health),
        "hooks": {name: hook for name, hook in hooks.items() if hook},
        "processes": processes,
        # The project's environment file's names the container's own value overrides (warp's own variables never).
        "project_env": sorted(
            name
            for name in spec.environment
            if name not in ("PATH", "VIRTUAL_ENV") and not name.startswith(("WARP_", "WARPDRIVE_"))
        ),
    }


def _planned(
    spec: AppSpec, facts: Facts, options: Callable[[int], StartOptions], pick: Callable[[StartPlan], Step]
) -> Callable[[int], dict[str, Any]]:
    """The step ``pick`` takes from the start plan for a port, as data."""
    return lambda at: _step(pick(plan_start(spec, facts, options(at))))


def _nth_before(index: int) -> Callable[[StartPlan], Step]:
    return lambda plan: plan.before[index]


def _hook_at(spec: AppSpec, project: str, facts: Facts, name: str) -> Callable[[int], Step | None]:
    return lambda at: _hook(spec, project, facts, name, at)


def _fixed(step: dict[str, Any]) -> Callable[[int], dict[str, Any]]:
    return lambda _at: step


def _present(step: Step | None) -> Step:
    assert step is not None  # planned for one port, a hook is planned for the other too
    return step


def _hook(spec: AppSpec, project: str, facts: Facts, name: str, port: int) -> Step | None:
    """A hook planned as ``warp NAME`` plans it (migrate: Django's without a hook): ``warp health NAME``, ``warp migrate``.

    ``release`` is the Procfile's ``release:`` line, which ``warp migrate`` runs after the migrate step, as a deploy does.
    """
    assert facts.current
    if name == "release":
        return plan_release(spec, project, facts.current)
    return plan_command(spec, project, facts.current, name, port)


def _process_types(spec: AppSpec, facts: Facts, options: StartOptions) -> dict[str, Any]:
    """The Procfile's process types, planned as ``warp start TYPE`` plans them (where this warptasks has them)."""
    types = getattr(spec, "process_types", None)
    if not types:
        return {}
    from ..plan import processes  # type: ignore[attr-defined,unused-ignore]

    return {name: _step(processes.plan_process(spec, facts, name, options)) for name in types}


class _Here:
    """Runs the probe here, as invoke's Context would (warp start's own facts), without importing invoke: its import
    was a third of this build step, which every code-only image rebuild waits for."""

    def run(self, command: str, **_options: Any) -> Any:
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
        return SimpleNamespace(exited=done.returncode, stdout=done.stdout, stderr=done.stderr)


def read_facts(project: str, settings: Settings, python: str) -> Facts:
    """The facts ``warp start`` reads (:func:`warptasks.run.local.read_facts` without the tree); no uv: a start
    plan never installs."""
    root, envs = env_paths(project, settings.env_dir, settings.envs_dir)
    return gather_facts(_Here(), python, {"env_dir": root, "envs_dir": envs, "uv_candidates": []})


def main(argv: list[str]) -> None:
    project, out = argv[1], argv[2]
    envs_dir = argv[3] if len(argv) > 3 else ""  # where the build kept the environments (the image's: outside the project)
    settings = Settings.resolve(None, project=project, server=os.environ.get("INVOKE_WARP_SERVER") or None, envs_dir=envs_dir)
    spec = detect_app(project, server=settings.server)
    python = os.path.join(project, settings.env_dir, "current", "bin", "python")
    facts = read_facts(project, settings, python)
    data = render(spec, facts, project)
    with open(out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(out + ".tmp", out)
    print(f"start data: {data['server']}, {len(data['servers'])} sizing variant(s), written to {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
