"""warptasks: detect, build and start Python web apps the same way everywhere.

Import the task collection into your own ``tasks.py``::

    from invoke import Collection
    import warptasks

    ns = Collection(warptasks.ns)   # warp.build, warp.start, warp.plan, ...

or use its steps, ``detect -> plan -> execute``, in tasks of your own::

    from invoke import task
    import warptasks

    @task
    def deps(c):
        settings = warptasks.Settings.resolve(c.config)   # task option > invoke config > default
        spec = warptasks.detect_app(settings.project, server=settings.server)
        print(spec.dependencies.why)

Every name below is imported on first use: ``import warptasks`` stays light
for the ``warp`` command and for code that only wants the version.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ns": ".tasks",
    "AppSpec": ".detect",
    "detect_app": ".detect",
    "Facts": ".facts",
    "gather_facts": ".run.executor",
    "BuildOptions": ".plan",
    "StartOptions": ".plan",
    "Plan": ".plan",
    "StartPlan": ".plan",
    "Step": ".plan",
    "command_line": ".plan",
    "plan_build": ".plan",
    "plan_start": ".plan",
    "plan_command": ".plan",
    "plan_exec": ".plan",
    "execute": ".run.executor",
    "run_checks": ".run.executor",
    "Settings": ".settings",
    "DeploySettings": ".settings",
    "WarpError": ".errors",
    "ConfigError": ".errors",
    "NoAppFound": ".errors",
    "NotBuilt": ".errors",
    "PreflightFailed": ".errors",
    "StepFailed": ".errors",
}

__all__ = [
    "__version__",
    "ns",
    "AppSpec",
    "detect_app",
    "Facts",
    "gather_facts",
    "BuildOptions",
    "StartOptions",
    "Plan",
    "StartPlan",
    "Step",
    "command_line",
    "plan_build",
    "plan_start",
    "plan_command",
    "plan_exec",
    "execute",
    "run_checks",
    "Settings",
    "DeploySettings",
    "WarpError",
    "ConfigError",
    "NoAppFound",
    "NotBuilt",
    "PreflightFailed",
    "StepFailed",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on demand
    from .detect import AppSpec, detect_app
    from .errors import ConfigError, NoAppFound, NotBuilt, PreflightFailed, StepFailed, WarpError
    from .facts import Facts
    from .plan import (
        BuildOptions,
        Plan,
        StartOptions,
        StartPlan,
        Step,
        command_line,
        plan_build,
        plan_command,
        plan_exec,
        plan_start,
    )
    from .run.executor import execute, gather_facts, run_checks
    from .settings import DeploySettings, Settings
    from .tasks import ns


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
