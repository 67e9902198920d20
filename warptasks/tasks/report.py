"""What every warp task shares: option help texts, and turning a foreseeable failure into a clear exit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from invoke.exceptions import Exit

from ..errors import StepFailed, WarpError
from ..extras import missing_extra
from ..servers import choices_help

OPTION_HELP = {
    "project": "the project folder (default: the current folder)",
    "server": choices_help(),  # the registry's servers, so a new one is listed without editing this
    "python": "the Python to build with: an executable or a version such as 3.12",
    "installer": "auto (uv when available), uv or pip",
    "env-dir": "where the environment lives, relative to the project (default .warp)",
}


@contextmanager
def reported() -> Iterator[None]:
    """Turn a foreseeable failure into a clear message and a non-zero exit."""
    try:
        yield
    except StepFailed as failed:
        if failed.output:
            print(failed.output, file=sys.stderr)
        raise Exit(f"warp: error: {failed}", code=failed.exit_code or 1) from None
    except WarpError as error:
        raise Exit(f"warp: error: {error}", code=error.exit_code) from None
    except ModuleNotFoundError as error:  # an optional extra's package, imported by the task that needs it
        missing = missing_extra(error, *_task_of(error))
        if missing is None:
            raise
        raise Exit(f"warp: error: {missing}", code=missing.exit_code) from None


def _task_of(error: BaseException) -> tuple[str, str]:
    """("warp TASK", its module): the outermost warptasks.tasks frame the error passed through (the task's body)."""
    tb = error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(__package__ + ".") and module != __name__:
            return "warp " + tb.tb_frame.f_code.co_name.strip("_").replace("_", "-"), module
        tb = tb.tb_next
    return "this task", ""
