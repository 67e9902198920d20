"""Steps and plans: the plain data that build and start execute.

A step is an argument list with a working directory and environment. It
becomes a shell command line in exactly one place, :func:`command_line`, where
every word is quoted, so a project path or setting containing spaces, quotes,
``$`` or ``;`` is never interpreted by a shell. The same line runs through an
invoke ``Context``, a fabric ``Connection`` or a Dockerfile ``RUN``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" would accept a trailing newline
# What a masked value is shown as: environment files hold secrets (database URLs, keys) that plans must not print.
MASKED = "***"


def masked_env(env: Mapping[str, str], mask: Collection[str]) -> dict[str, str]:
    """``env`` with the values of the names in ``mask`` shown as ``***``: for printing, never for running."""
    return {name: MASKED if name in mask else value for name, value in env.items()}


@dataclass(frozen=True)
class Step:
    """One command of a plan.

    ``skip`` is empty for a step that will run, else the reason it will not
    (skipped steps stay in the plan so ``warp plan`` can show them).
    ``path`` lists directories put in front of the runner's own ``PATH``.
    ``env_hook`` names the app's hook (``build-env``, ``deploy-env``) whose
    variables the step sees: a planner asks for it by setting the field, and
    :func:`~warptasks.plan.environment.source_env_hooks` makes ``argv`` source
    the hook, or clears the field when the app has no such hook.
    """

    name: str
    argv: tuple[str, ...]
    cwd: str
    why: str
    env: Mapping[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    phase: str = "app"
    skip: str = ""
    env_hook: str = ""

    def as_dict(self, *, mask: Collection[str] = ()) -> dict[str, Any]:
        """The step as plain data; the values of the variables named in ``mask`` shown as ``***``."""
        return {
            "name": self.name,
            "argv": list(self.argv),
            "cwd": self.cwd,
            "env": masked_env(self.env, mask),
            "path": list(self.path),
            "phase": self.phase,
            "why": self.why,
            "skip": self.skip,
            "env_hook": self.env_hook,
            "command": command_line(self, mask=mask),
        }


def write_file(
    name: str, path: str, content: str, cwd: str, why: str, *, mode: str = "644", phase: str = "app", skip: str = ""
) -> Step:
    """A step that writes ``content`` to ``path`` using only a POSIX shell.

    Content and path travel as positional parameters, never as shell code, so
    this works the same through any runner.
    """
    script = (
        'umask 022 && mkdir -p "$(dirname "$2")" && printf "%s" "$1" > "$2.tmp" && chmod "$3" "$2.tmp" && mv -f "$2.tmp" "$2"'
    )
    return Step(name, ("sh", "-c", script, "sh", content, path, mode), cwd, why, phase=phase, skip=skip)


def command_line(step: Step, *, mask: Collection[str] = ()) -> str:
    """The one shell command line that runs ``step``.

    ``mask`` names variables whose values are shown as ``***``: the line is then for showing, not running.
    """
    parts = [f"cd {shlex.quote(step.cwd)} &&"] if step.cwd else []
    for name in step.env:
        if not _ENV_NAME.match(name):
            raise ConfigError(
                f"{name!r} is not a valid environment variable name",
                "names may hold only letters, digits and underscores; fix the environment file",
            )
    if step.path:
        joined = ":".join(step.path)
        parts.append(f'PATH={shlex.quote(joined)}:"$PATH"')
    parts.extend(f"{name}={MASKED if name in mask else shlex.quote(value)}" for name, value in step.env.items())
    parts.append(shlex.join(step.argv))
    return " ".join(parts)


@dataclass(frozen=True)
class Plan:
    """What an action will do: its steps in order, and why."""

    action: str
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    @property
    def runnable(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if not s.skip)

    def phase(self, name: str) -> Plan:
        return Plan(self.action, tuple(s for s in self.steps if s.phase == name), self.notes)

    def as_dict(self, *, mask: Collection[str] = ()) -> dict[str, Any]:
        return {
            "action": self.action,
            "notes": list(self.notes),
            "steps": [s.as_dict(mask=mask) for s in self.steps],
        }
