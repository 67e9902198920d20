"""What every warp task shares: option help texts, and turning a foreseeable failure into a clear exit."""

from __future__ import annotations

import signal
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
    except KeyboardInterrupt as stop:
        # Outside a step (waiting for the build lock, detecting, planning), or a deploy's interrupt raised again after
        # its cleanup: invoke's Program would exit 1 saying nothing. The shell's status instead, as for a step.
        name = getattr(stop, "name", "SIGINT")
        said = str(stop) or "interrupted (Ctrl-C)"
        raise Exit(f"warp: error: {said}", code=128 + int(getattr(signal, name, signal.SIGINT))) from None
