"""The start plan as data, for an image's runtime stage, which has no warptasks.

Run in the image's build stage after the build (``python -m warptasks.image.runtime PROJECT OUT``): it plans the
start exactly as ``warp start`` does (:func:`warptasks.plan.plan_start`) and writes what the runtime stage's
standard-library entry point (:mod:`warptasks.scripts.image_start`) needs to start it without planning:

- ``servers``: the server's step for each CPU count from 1 to :data:`MAX_CPUS` (identical steps stored once), so
  the entry point sizes the workers with :func:`warptasks.plan.resources.worker_capacity` from the container's own
  limits and picks the step planned for the same processes and threads, whatever the server derives from them;
- ``port``: the token that stands for the port in every step, checked to be one (else the port is fixed);
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
import sys
from dataclasses import replace
from typing import Any

from invoke import Context

from ..detect import AppSpec, detect_app
from ..facts import CgroupLimits, Facts
from ..plan import StartOptions, Step, plan_start
from ..plan.environment import plan_command, start_port
from ..plan.processes import plan_release
from ..run.local import read_facts
from ..servers import SERVERS
from ..settings import Settings

MAX_CPUS = 64
HOST = "0.0.0.0"
# Ports no one uses, standing in for $PORT: the second proves every occurrence of the first is the port.
PORT_TOKENS = (47913, 47914)
FORMAT = 1


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


def _substituted(data: Any, old: str, new: str) -> Any:
    if isinstance(data, str):
        return data.replace(old, new)
    if isinstance(data, list):
        return [_substituted(item, old, new) for item in data]
    if isinstance(data, dict):
        return {key: _substituted(value, old, new) for key, value in data.items()}
    return data


def render(spec: AppSpec, facts: Facts, project: str) -> dict[str, Any]:
    """What the runtime stage's entry point needs to start the app as ``warp start`` would, without planning."""

    def options(port: int) -> StartOptions:
        return StartOptions(project=project, host=HOST, port=port, port_check=False)

    first, second = PORT_TOKENS
    fixed_port = image_port(spec)[0]
    templated = _step(plan_start(spec, _with_cpus(facts, 1), options(first)).server)
    moved = _step(plan_start(spec, _with_cpus(facts, 1), options(second)).server)
    port = first if _substituted(templated, str(first), str(second)) == moved else fixed_port
    steps: list[dict[str, Any]] = []
    by_cpus: dict[str, int] = {}
    notes: list[str] = []
    before: list[dict[str, Any]] = []
    for cpus in range(1, MAX_CPUS + 1):
        plan = plan_start(spec, _with_cpus(facts, cpus), options(port))
        step = _step(plan.server)
        if step not in steps:
            steps.append(step)
        by_cpus[str(cpus)] = steps.index(step)
        if cpus == 1:
            # The port note names the token: the image's own says which port it serves on.
            where = image_port(spec)[1]
            notes = [n if not n.startswith("port: ") else f"port: $PORT, else {fixed_port} ({where})" for n in plan.notes]
            before = [_step(s) for s in plan.before]
    server = SERVERS[facts.state.server] if facts.state else None
    assert server is not None and facts.current  # plan_start refuses an unbuilt project
    health = plan_command(spec, project, facts.current, "ready", port) or plan_command(
        spec, project, facts.current, "alive", port
    )
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
        "health": _step(health) if health else None,
        "hooks": {
            name: _step(hook)
            for name in ("ready", "alive", "migrate", "release")
            if (hook := _hook(spec, project, facts, name, port))
        },
        "processes": _process_types(spec, facts, options(port)),
        # The project's environment file's names the container's own value overrides (warp's own variables never).
        "project_env": sorted(
            name
            for name in spec.environment
            if name not in ("PATH", "VIRTUAL_ENV") and not name.startswith(("WARP_", "WARPDRIVE_"))
        ),
    }


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


def main(argv: list[str]) -> None:
    project, out = argv[1], argv[2]
    settings = Settings.resolve(None, project=project, server=os.environ.get("INVOKE_WARP_SERVER") or None)
    spec = detect_app(project, server=settings.server)
    python = os.path.join(project, settings.env_dir, "current", "bin", "python")
    facts = read_facts(Context(), project, settings, python, tree=False)
    data = render(spec, facts, project)
    with open(out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(out + ".tmp", out)
    print(f"start data: {data['server']}, {len(data['servers'])} sizing variant(s), written to {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
