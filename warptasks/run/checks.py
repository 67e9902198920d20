"""Running a start's checks: the shipped ones of one Python in one process (:mod:`warptasks.scripts.checks`).

The plan keeps each check as its own step (``warp plan`` shows them, a failure names the one that failed and its
hint); only running them is shared: consecutive checks that are shipped scripts run by the same Python in the same
folder become one command, which exits 64 + the index of the first that failed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..plan import Step, command_line
from ..scripts import ISOLATED, command, source

# How every step is run, whatever invoke's configuration says (run.echo would print the step's command line with
# the environment file's values; run.env would add variables such as BASH_ENV to every step): the same everywhere.
# replace_env stays the runner's own: invoke's Context keeps this process's environment, fabric's Connection sends
# none of it to the host (forcing it off there would export this machine's whole environment on every host step).
RUN_OPTIONS: dict[str, Any] = {"warn": True, "pty": False, "in_stream": False, "echo": False, "env": {}}

SHARED = ("port_check.py", "read_check.py")  # the checks that may share a process
FIRST = 64  # warptasks.scripts.checks' exit status for its first check


def _shipped(step: Step) -> tuple[str, list[str]] | None:
    """(source, args) when ``step`` runs one of :data:`SHARED` and nothing else."""
    argv = step.argv
    if len(argv) < 4 or argv[1:3] != (ISOLATED, "-c") or step.env or step.path or step.env_hook:
        return None
    return (argv[3], list(argv[4:])) if argv[3] in {source(name) for name in SHARED} else None


def _joinable(group: list[Step], check: Step) -> bool:
    last = group[-1]
    return _shipped(last) is not None and _shipped(check) is not None and (last.argv[0], last.cwd) == (check.argv[0], check.cwd)


def together(checks: tuple[Step, ...]) -> list[tuple[Step, tuple[Step, ...]]]:
    """(the step to run, the checks it stands for), in order."""
    groups: list[list[Step]] = []
    for check in checks:
        if groups and _joinable(groups[-1], check):
            groups[-1].append(check)
        else:
            groups.append([check])
    return [(_merged(group) if len(group) > 1 else group[0], tuple(group)) for group in groups]


def _merged(group: list[Step]) -> Step:
    first = group[0]
    payload = json.dumps([_shipped(check) for check in group])
    return replace(
        first,
        name=", ".join(check.name for check in group),
        argv=command(first.argv[0], "checks.py", payload),
        why="; ".join(check.why for check in group),
    )


def first_failure(c: Any, checks: tuple[Step, ...]) -> tuple[Step, str] | None:
    """Run ``checks`` through ``c``; the first that failed, with the tail of what it printed, or None."""
    for step, group in together(checks):
        result = c.run(command_line(step), hide=True, **RUN_OPTIONS)
        if result.exited == 0:
            continue
        output = "\n".join(((result.stderr or "") + "\n" + (result.stdout or "")).rstrip().splitlines()[-15:])
        index = result.exited - FIRST if len(group) > 1 else 0
        return (group[index] if 0 <= index < len(group) else group[0]), output
    return None
