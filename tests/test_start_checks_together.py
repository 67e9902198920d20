"""A start's checks that are shipped scripts of one Python run in one process, and a failure still names its check."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from invoke import Context

from warptasks.plan import Step
from warptasks.run.checks import first_failure, together
from warptasks.scripts import command


class Counting(Context):
    def __init__(self) -> None:
        super().__init__()
        self.commands: list[str] = []

    def run(self, command: str, **kwargs: Any) -> Any:
        self.commands.append(command)
        return super().run(command, **kwargs)


@pytest.fixture
def busy() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def _free() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port(number: int, python: str = sys.executable) -> Step:
    return Step("port", command(python, "port_check.py", "127.0.0.1", str(number)), "/", f"127.0.0.1:{number} must be free")


def read(user: str) -> Step:
    argv = command(sys.executable, "read_check.py", user, user, sys.executable, "/")
    return Step("worker can read", argv, "/", f"{user} must read the app")


def test_which_checks_share_a_process() -> None:
    other_python = port(1, python="/usr/bin/python3-other")
    own = Step("own", ("true",), "/", "not a shipped script")
    groups = together((port(1), read("www-data"), other_python, own, port(2)))
    assert [[c.name for c in group] for _, group in groups] == [["port", "worker can read"], ["port"], ["own"], ["port"]]
    merged = groups[0][0]
    assert merged.argv[:3] == (sys.executable, "-I", "-c") and "Run several start checks" in merged.argv[3]
    assert groups[1][0] is other_python and groups[2][0] is own  # alone: run as planned


def test_passing_checks_run_in_one_process() -> None:
    runner = Counting()
    assert first_failure(runner, (port(_free()), port(_free()))) is None
    assert len(runner.commands) == 1


def test_the_failing_check_is_named_with_its_own_message(busy: int) -> None:
    runner = Counting()
    failed = first_failure(runner, (port(_free()), port(busy), read("www-data")))
    assert failed is not None
    check, output = failed
    assert check.name == "port" and check.why == f"127.0.0.1:{busy} must be free"
    assert f"port {busy} on 127.0.0.1 is not free" in output
    assert len(runner.commands) == 1


def test_a_check_that_crashes_is_the_one_blamed() -> None:
    # read_check.py with an account that does not exist fails with a traceback (KeyError), the second check here.
    failed = first_failure(Context(), (port(_free()), read("no-such-account-warptasks")))
    assert failed is not None and failed[0].name == "worker can read"
    assert "no-such-account-warptasks" in failed[1]


def test_a_lone_check_runs_as_planned(busy: int) -> None:
    runner = Counting()
    failed = first_failure(runner, (port(busy),))
    assert failed is not None and failed[0].name == "port"
    assert "Run several start checks" not in runner.commands[0]
