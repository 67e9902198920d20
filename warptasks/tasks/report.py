"""What every warp task shares: option help texts, and turning a foreseeable failure into a clear exit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from invoke.exceptions import Exit

from ..errors import StepFailed, WarpError
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
