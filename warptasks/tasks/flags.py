"""How every warp task's options are spelt on the command line: the short flags, and whole numbers checked as parsed.

invoke derives a task's short flags from the first free letter of each parameter, in the order of its signature:
the same letter then means different options in different tasks (``-e`` was ``--env-dir`` in plan and ``--reload``
in start), a parameter that gets ``h`` hides ``-h`` (help), and a task with many options runs out of letters
(``--, --no-cache``). Every warp task is a :class:`WarpTask` instead: no derived short flags, only those of
:data:`SHORT_FLAGS`, one table for all tasks, where a letter means the same option in every task that has it.

A whole-number option (:data:`WHOLE_NUMBERS`) is checked as invoke parses it: ``--port 99999`` or ``--lines x``
is an error naming the option and what it takes, and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from invoke import Task, task
from invoke.exceptions import ParseError
from invoke.parser import Argument

from ..errors import ConfigError

# The short flags, the same in every task that has the option (the README's table is this one). -h is always
# --help, so --host is -H (as fabric's fab -H). Any other option has no short flag.
SHORT_FLAGS: dict[str, str] = {
    "project": "p",  # the project folder
    "server": "s",  # mod_wsgi, gunicorn...
    "host": "H",  # a host (repeatable), as fab -H
    "port": "o",  # the port (start's -o since its first release)
    "listen": "l",  # the address to listen on
    "processes": "r",  # worker processes
    "user": "u",  # as root: the account the server runs as
    "group": "g",  # as root: its group
    "dry-run": "d",  # print the command instead of running it
    "command": "c",  # warp exec's command, when not given after --
    "tag": "t",  # an image name (docker build -t)
    "quiet": "q",  # do not stream the image build's output
    "lines": "n",  # how many log lines (tail -n)
    "follow": "f",  # keep printing new log lines (tail -f)
}

# Whole-number options: (lowest, highest or None, an example). Checked as parsed, whatever the task.
WHOLE_NUMBERS: dict[str, tuple[int, int | None, int]] = {
    "port": (1, 65535, 8080),
    "backend-port": (1, 65535, 8081),
    "processes": (1, None, 2),  # start's; deploy's is repeatable TYPE=N, checked with the deploy settings
    "threads": (1, None, 4),
    "lines": (0, None, 100),
    "replicas": (1, None, 2),
    "keep": (0, None, 5),
    "limit": (1, None, 20),
}


def whole_number(flag: str, text: Any, low: int, high: int | None, example: int) -> int:
    """``text`` given to ``--flag`` as a whole number from ``low`` to ``high``, or a :class:`ConfigError`."""
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"
    hint = f"give --{flag} a whole number {span}, e.g. --{flag} {example}"
    try:
        number = int(str(text).strip(), 10)
    except ValueError:
        raise ConfigError(f"--{flag} {str(text)!r} is not a whole number", hint) from None
    if number < low or (high is not None and number > high):
        raise ConfigError(f"--{flag} {number} is out of range: it must be a whole number {span}", hint)
    return number


class WholeNumberArgument(Argument):  # type: ignore[misc]
    """An invoke argument whose value is checked by :func:`whole_number` as it is parsed (a ParseError: exit 1)."""

    bounds: tuple[int, int | None, int] = (0, None, 0)

    def set_value(self, value: Any, cast: bool = True) -> None:
        if cast and value is not None:
            try:
                value = whole_number(self.names[0], value, *self.bounds)
            except ConfigError as error:
                raise ParseError(f"warp: error: {error}") from None
        super().set_value(value, cast=False)


class WarpTask(Task):  # type: ignore[misc]
    """A warp task: the short flags of :data:`SHORT_FLAGS` only, whole numbers checked (see the module)."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        help_texts = dict(self.help)  # invoke's get_arguments pops them: a second call would have none
        try:
            arguments = super().get_arguments(ignore_unknown_help)
        finally:
            self.help = help_texts
        for argument in arguments:
            name = argument.names[0]
            short = SHORT_FLAGS.get(name)
            if short:
                argument.names = (name, short)
            if name in WHOLE_NUMBERS and argument.kind is not list:
                argument.__class__ = WholeNumberArgument  # the same Argument, its value checked as it is set
                assert isinstance(argument, WholeNumberArgument)
                argument.kind = int
                argument.bounds = WHOLE_NUMBERS[name]
        return list(arguments)


# Every warp task is declared with this instead of invoke's @task: @warp_task(help=..., iterable=[...]).
warp_task = partial(task, klass=WarpTask, auto_shortflags=False)
