"""The errors warptasks raises for foreseeable mistakes.

Every error carries a message that says what went wrong and a hint that says
what to do about it. The task layer prints both and exits non-zero; a user
never sees a traceback for any of these.
"""

from __future__ import annotations


class WarpError(Exception):
    """Root of every error a user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  -> {self.hint}"
        return self.message


class NoAppFound(WarpError):
    """Nothing in the source tree says how to serve it."""


class ConfigError(WarpError):
    """An option, setting or environment file value is not valid."""


class StepFailed(WarpError):
    """A step of a plan exited non-zero."""

    def __init__(self, message: str, hint: str = "", output: str = "", exit_code: int = 1) -> None:
        super().__init__(message, hint)
        self.output = output
        self.exit_code = exit_code or 1


class StepInterrupted(StepFailed):
    """Ctrl-C (SIGINT) reached a step: it was stopped, not broken; the shell's exit status for that, 128 + SIGINT."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, exit_code=130)


class NotBuilt(WarpError):
    """start/exec/shell was asked for before a successful build."""


class PreflightFailed(WarpError):
    """A check before starting the server failed (port in use, unreadable files...)."""
