"""The one executor: runs plans through a runner ``c``.

``c`` is anything with invoke's ``run(command, warn=, hide=, ...)``: an
invoke ``Context`` locally or a fabric ``Connection`` on a remote host. Every
step becomes a command line in :func:`warptasks.plan.command_line` and
nowhere else.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

from ..errors import ConfigError, PreflightFailed, StepFailed, StepInterrupted, WarpError
from ..facts import Facts
from ..plan import Plan, StartPlan, Step, command_line
from ..scripts import ISOLATED, source
from .checks import RUN_OPTIONS, first_failure
from .progress import Progress, doing

Say = Callable[[str], None]


class Runner(Protocol):
    def run(self, command: str, **kwargs: Any) -> Any: ...


def _say(text: str) -> None:
    # One write: a heartbeat is said from a thread of its own, while invoke's threads write the step's output.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class _Seen:
    sigint = False


@contextmanager
def _noticing_sigint() -> Iterator[_Seen]:
    """Note a SIGINT that arrives while a command runs, then handle it as before.

    invoke's runners swallow the KeyboardInterrupt (they pass it on to the command and wait for it), so the step
    looks like one that failed (exit -2, or whatever the command makes of Ctrl-C: pip exits 1). Signals are only
    handled in the main thread: elsewhere nothing is installed, and only a command killed by SIGINT says so.
    """
    seen = _Seen()
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if not callable(previous):  # not the main thread, or SIGINT ignored (then nothing is interrupted)
        yield seen
        return
    chained = previous

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.sigint = True
        chained(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(step: Step) -> StepInterrupted:
    return StepInterrupted(
        f"step '{step.name}' interrupted (Ctrl-C): {step.why}",
        "nothing was switched: the last good build is still in place",
    )


def run_step(c: Runner, step: Step, *, hide: bool | str | None = None, watchers: Sequence[Any] = ()) -> Any:
    """Run one step; raise :class:`StepFailed` with the output's tail if it fails.

    ``watchers``: invoke stream watchers, which see the output as it comes (a heartbeat's, see :mod:`.progress`).
    """
    extra = {"watchers": list(watchers)} if watchers else {}
    with _noticing_sigint() as seen:
        result = c.run(command_line(step), hide=hide, **RUN_OPTIONS, **extra)
    if seen.sigint or result.exited == -signal.SIGINT:
        raise _interrupted(step)
    if result.exited != 0:
        # Streamed output was already seen; only hidden output is repeated.
        output = tail((result.stderr or "") + "\n" + (result.stdout or "")) if hide else ""
        raise StepFailed(
            f"step '{step.name}' failed (exit {result.exited}): {step.why}",
            "see the output above; nothing was switched, the last good build is still in place",
            output=output,
            exit_code=result.exited,
        )
    return result


def execute(plan: Plan, c: Runner, *, say: Say = _say, progress: Progress | None = None) -> int:
    """Run every step of ``plan`` that is not skipped, saying which of how many, and how long each took.

    A step silent for a while is said to be still running (see :mod:`.progress`); ``progress`` keeps the
    timings (for a summary line) and its clock; by default one of its own, saying through ``say``.
    """
    progress = progress or Progress(say)
    # A runner that hides what steps print (hosts deploying in parallel) leaves every step silent to the user.
    visible = not getattr(c, "hides_output", False)
    runnable = plan.runnable
    for step in plan.steps:
        if step.skip:
            say(f"skip {step.name}: {step.skip}")
    for number, step in enumerate(runnable, 1):
        prefix = f"[{number}/{len(runnable)}] "
        say(f"{prefix}{step.name}: {step.why}")
        try:
            with progress.step(step.name, doing(step.name, step.why), prefix=prefix, visible=visible) as watchers:
                run_step(c, step, watchers=watchers)
        except (KeyboardInterrupt, StepInterrupted):
            raise StepInterrupted(
                f"{plan.action} interrupted (Ctrl-C) during '{step.name}'",
                "nothing was switched: the last good build is still in place",
            ) from None
    return len(runnable)


PROBE = source("probe.py")


_PYTHON_HINT = "choose a Python 3 interpreter with --python (an executable or a version such as 3.12)"


def gather_facts(c: Runner, python: str, request: dict[str, Any]) -> Facts:
    """Read the target's facts by running :mod:`warptasks.scripts.probe` with ``python``."""
    step = Step("probe", (python, ISOLATED, "-c", PROBE, json.dumps(request)), "", "read facts")
    with _noticing_sigint() as seen:
        result = c.run(command_line(step), hide=True, **RUN_OPTIONS)
    if seen.sigint or result.exited == -signal.SIGINT:
        raise StepInterrupted("interrupted (Ctrl-C) while reading the facts", "nothing was built or changed")
    # A fabric Connection has its host; anything else runs here.
    where = f"on {c.original_host}" if hasattr(c, "original_host") else "on this machine"
    if result.exited != 0:
        if result.exited == 127 or "not found" in (result.stderr or ""):
            raise ConfigError(
                f"Python {python!r} is not available {where}",
                "install that Python version, or choose another with --python (an executable or a version such as 3.12)",
            )
        said = tail(result.stderr or result.stdout, 5).strip()
        raise ConfigError(
            f"{python!r} is not a working Python {where}: it exited {result.exited}"
            + (f" saying:\n{said}" if said else " and printed nothing"),
            _PYTHON_HINT,
        )
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        said = tail(result.stdout, 5).strip() or "nothing"
        raise ConfigError(f"{python!r} is not a working Python {where}: it printed {said}", _PYTHON_HINT) from None
    return Facts.parse(data)


def exec_local(step: Step, *, command: bool = False) -> None:
    """Replace this process with ``step`` (the server), so signals reach it directly.

    ``command``: the step is a command the user gave (warp exec, shell): one that is not there is theirs to fix,
    where a missing server means the build is incomplete."""
    env = dict(os.environ)
    env.update(step.env)
    if step.path:
        env["PATH"] = os.pathsep.join([*step.path, env.get("PATH", os.defpath)])
    os.chdir(step.cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(step.argv[0], list(step.argv), env)
    except OSError as exc:
        if command and exc.errno == errno.ENOENT:
            raise ConfigError(
                f"command not found: {step.argv[0]}",
                f"check its name: it is looked for in the app's environment ({', '.join(step.path) or step.cwd}), then on PATH",
            ) from None
        if command:
            raise ConfigError(f"cannot run {step.argv[0]}: {exc.strerror}", "check that it is an executable file") from None
        raise WarpError(f"cannot start {step.argv[0]}: {exc.strerror}", "run warp build again") from None


def run_checks(c: Runner, plan: StartPlan, say: Say = _say) -> None:
    failed = first_failure(c, plan.checks)  # the shipped checks of one Python in one process
    if failed:
        check, output = failed
        raise PreflightFailed(f"cannot start: {check.why}: {output.strip()}", _check_hint(check))
    visible = not getattr(c, "hides_output", False)
    for step in plan.before:
        say(f"{step.name}: {step.why}")
        with Progress(say).step(step.name, doing(step.name, step.why), visible=visible) as watchers:
            run_step(c, step, watchers=watchers)


def _check_hint(check: Step) -> str:
    if check.name == "port":
        return "stop whatever uses that port, or choose another with --port"
    return (
        "started as root, the server (mod_wsgi: Apache's workers) runs as an unprivileged account, which must be able "
        "to read the Python installation, the environment and the app. Build with a Python outside /root (for example "
        "--python /usr/bin/python3), keep the project in a folder that account can read, or pass --user/--group naming "
        "an account that can read them"
    )
