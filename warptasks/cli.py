"""The standalone ``warp`` command: the warp collection as an invoke Program."""

from __future__ import annotations

import os
import sys

from invoke import Program

from . import __version__
from .errors import WarpError
from .tasks import ns

program = Program(name="warp", binary="warp", version=__version__, namespace=ns)


def process_word(argv: list[str]) -> list[str]:
    """``warp start worker`` as ``warp start --process worker``: invoke has no optional positional arguments, and a
    word after a task is read as the next task. Only a word right after ``start`` that names no task is taken."""
    if len(argv) > 2 and argv[1] == "start" and not argv[2].startswith("-") and argv[2] not in ns.task_names:
        return [*argv[:2], "--process", argv[2], *argv[3:]]
    return argv


def main() -> None:
    from .remote.commands import rewrite_config_argv

    try:
        # `warp config --host web1 set A=1 B=2`: invoke has no variadic arguments; it gets --set A=1 --set B=2.
        argv = process_word([sys.argv[0], *rewrite_config_argv(sys.argv[1:])])
    except WarpError as error:
        sys.exit(f"warp: error: {error}")
    try:
        program.run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # `warp plan | head`: the reader has gone, which is not an error of ours. Point stdout
        # at /dev/null so the interpreter's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # what a shell reports for a command ended by SIGPIPE
