"""The standalone ``warp`` command: the warp collection as an invoke Program.

Where a setting comes from, the first that says something winning (the same for ``warp`` and ``inv warp.*``):

1. the task's command-line option (``warp start --port 9000``);
2. a runtime configuration file given with ``--config`` or ``INVOKE_RUNTIME_CONFIG`` (invoke's runtime level);
3. ``INVOKE_WARP_*`` environment variables (``INVOKE_WARP_PORT=9000``; invoke's prefix, so ``inv`` and ``warp``
   read the same ones);
4. the project's ``invoke.yaml`` (or ``.yml``, ``.json``): for ``inv``, beside the tasks.py; for ``warp``, in the
   folder ``--project`` names, else the current folder (never an ``invoke.py``: ``warp`` runs no code of a project
   to read its settings);
5. ``~/.invoke.yaml`` (yours), then ``/etc/invoke.yaml`` (the machine's);
6. the defaults (:mod:`warptasks.settings`).

Some defaults come from the project and the environment warp runs in when nothing above sets them: the port a start
listens on is ``PORT`` exported where warp runs, else ``PORT`` in the project's environment file
(``.s2i/environment``), else 8080 (:func:`warptasks.detect.conventions.choose_port`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from invoke import Config, Exit, Program
from invoke.exceptions import ParseError
from invoke.parser import Argument
from invoke.util import yaml

from . import __version__
from .errors import WarpError
from .tasks import ns

# invoke's core options that warp keeps, under these names. The others are for running shell commands from
# tasks (--echo would print the steps' command lines, environment values included; --dry, --hide, --pty,
# --warn-only, --command-timeout, --prompt-for-sudo-password), for invoke itself (--debug, --write-pyc) or for
# nested collections (--list-depth, --list-format): they mean nothing to warp and are not accepted.
CORE_OPTIONS = {
    "help": (("help", "h"), "show this help, or a command's: warp COMMAND --help (or -h)"),
    "version": (("version", "V"), "show warp's version and exit"),
    "list": (("list",), "list the commands and exit"),  # no -l: that is --listen
    "config": (("config",), "a configuration file to read too (YAML, with warp: settings as in invoke.yaml)"),  # no -f
    "complete": (("complete",), "print tab-completion candidates (the completion script calls it)"),
    "print-completion-script": (("print-completion-script",), "print the tab-completion script for bash, zsh or fish"),
}
PARSE_HINT = "warp --help lists the commands, warp COMMAND --help a command's options"


# A project's configuration files warp reads: data only. invoke would also load an invoke.py, running the project's
# code; inv does (it runs the project's tasks.py too), warp plan on a repository never runs any of it.
PROJECT_CONFIG_SUFFIXES = ("yaml", "yml", "json")


# Settings a project's file may not give warp: each names a program warp runs or a file whose content it trusts or
# ships (a repository could name its own python, a known_hosts that trusts its host, ~/.ssh/id_rsa as a TLS key).
# They come from the command line, ~/.invoke.yaml or INVOKE_WARP_* instead.
NOT_FROM_PROJECT = {
    "deploy": ("known_hosts", "accept_unknown_host", "env_file", "identity", "tls_cert", "tls_key"),
}


class WarpConfig(Config):
    """invoke's Config, reading a project's ``invoke.yaml``/``.yml``/``.json`` but never its ``invoke.py``.

    Of the project's file only the ``warp:`` section counts: its ``run:``, ``tasks:`` and the rest would change how
    warp runs its steps (``run.shell``, ``run.env``: a program of the repository run by ``warp plan``; ``run.echo``:
    the environment file's values printed), and :data:`NOT_FROM_PROJECT` are refused.
    """

    def load_project(self, merge: bool = True) -> None:
        suffixes = self._file_suffixes
        self._set(_file_suffixes=PROJECT_CONFIG_SUFFIXES)
        try:
            super().load_project(merge=False)
        finally:
            self._set(_file_suffixes=suffixes)
        data = self._project or {}
        warp = data.get("warp") if isinstance(data, dict) else None
        if warp is not None and not isinstance(warp, dict):
            raise Exit(f"warp: error: {self._project_path}: warp: is not a mapping of settings", code=2)
        if warp:
            _refuse_from_project(warp, str(self._project_path))
        self._set(_project={"warp": warp} if warp else {})
        if merge:
            self.merge()


def _refuse_from_project(warp: dict[str, Any], path: str) -> None:
    given = [
        f"warp.{section}.{key}" for section, keys in NOT_FROM_PROJECT.items() for key in keys if key in (warp.get(section) or {})
    ]
    python = warp.get("python")
    if isinstance(python, str) and "/" in python:
        given.append("warp.python")  # a version (3.12) or a command name is looked up as usual; a path may be the project's
    if given:
        raise Exit(
            f"warp: error: {path} sets {', '.join(given)}, which warp does not take from a project's file (a repository "
            "you cloned could name its own program or files there)\nhint: give it on the command line, in ~/.invoke.yaml "
            "or as an INVOKE_WARP_* variable, and remove it from that file",
            code=2,
        )


class WarpProgram(Program):  # type: ignore[misc]
    """invoke's Program with only the core options that mean something to warp (:data:`CORE_OPTIONS`)."""

    def core_args(self) -> list[Any]:
        kept = []
        for argument in super().core_args():
            if argument.names[0] in CORE_OPTIONS:
                argument.names, argument.help = CORE_OPTIONS[argument.names[0]]
                kept.append(argument)
            if argument.names[0] == "list":  # a flag: warp has no namespaces to name
                argument.kind, argument.optional, argument.default = bool, False, False
        return kept

    def parse_core_args(self) -> None:
        super().parse_core_args()
        # invoke's Program reads every one of its options after parsing: the ones warp does not take are there,
        # never given (their defaults), so --dry and the like are refused as unknown options, not half-honoured.
        given = self.core[0].args
        for argument in Program.core_args(self):
            if argument.names[0] not in given:
                given[argument.names[0]] = Argument(names=argument.names[:1], kind=argument.kind, default=argument.default)

    def update_config(self, merge: bool = True) -> None:
        folder = project_folder(self.tasks)
        self.config.set_project_location(folder)
        try:
            self.config.load_project(merge=False)
        except (yaml.YAMLError, ValueError) as error:  # a JSON error is a ValueError
            names = (os.path.join(folder, f"invoke.{suffix}") for suffix in PROJECT_CONFIG_SUFFIXES)
            found = next((name for name in names if os.path.exists(name)), folder)
            raise Exit(
                f"warp: error: cannot read {found}: {str(error).strip()}\nhint: fix that file, or move it away", code=2
            ) from None
        super().update_config(merge=merge)

    def parse_tasks(self) -> None:
        with _said_as_warp():
            super().parse_tasks()

    def parse_cleanup(self) -> None:
        with _said_as_warp():
            super().parse_cleanup()


@contextmanager
def _said_as_warp() -> Iterator[None]:
    """invoke's parse errors ("No idea what '-t' is!") as warp's: prefixed, with where to look."""
    try:
        yield
    except ParseError as error:
        if str(error).startswith("warp: error:"):
            raise
        raise ParseError(f"warp: error: {error}\n  -> {PARSE_HINT}") from None


def project_folder(tasks: Any) -> str:
    """The folder whose invoke.yaml counts: the first ``--project`` given to a task, else the current folder."""
    for context in tasks or ():
        args = getattr(context, "args", {})
        if "project" in args and args["project"].value:
            return os.path.abspath(str(args["project"].value))
    return os.getcwd()


program = WarpProgram(name="warp", binary="warp", version=__version__, namespace=ns, config_class=WarpConfig)


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
