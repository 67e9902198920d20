"""Ctrl-C and SIGTERM during a deploy or rollback: handled like a failure, so the hosts are cleaned up.

Without this, a KeyboardInterrupt went straight past the cleanup (only
errors were cleaned up after): the new server kept running, its release
marked "started", and its port blocked the next deploy. Now the signal
raises :class:`Interrupted` in the main thread, the deploy records it on
every host still working, cleans up as after any failure (the new server
stopped, its release marked failed, the lock released) and then lets the
interrupt go on. A second Ctrl-C during the cleanup ends it there: the
lock's lease lapses and the next deploy takes the port back.

Also here: :func:`pause_for_tests`, the one test-only hook, which holds a
deploy before a phase so a test can inject a fault at exactly that point.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

# The hook's environment variables: hold before the phase named by the first until the file "go" exists in the
# folder named by the second (a file "paused-<phase>" there tells the test the deploy got there).
PAUSE_AT = "WARP_TEST_PAUSE_AT"
PAUSE_DIR = "WARP_TEST_PAUSE_DIR"
PAUSE_LIMIT = 600.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM arrived during a deploy; a KeyboardInterrupt, so everything that lets one
    through (fabric, invoke's runners) lets this one through too."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"interrupted by {self.name}" + (" (Ctrl-C)" if self.name == "SIGINT" else "")


class Caught:
    """The signal that came, if any: a step that swallowed its interrupt (the executor turns one into a failed
    step) must still stop the deploy."""

    def __init__(self) -> None:
        self.name = ""

    def check(self) -> None:
        """Raise :class:`Interrupted` again if a signal came."""
        if self.name:
            raise Interrupted(self.name)


@contextmanager
def signals_as_interrupts() -> Iterator[Caught]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (SIGTERM otherwise ends the process with no cleanup at all).

    Outside the main thread signals cannot be handled: nothing is installed there.
    """
    came = Caught()
    if threading.current_thread() is not threading.main_thread():
        yield came
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        came.name = signal.Signals(signum).name
        raise Interrupted(came.name)

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield came
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def pause_for_tests(phase: str, stopping: Callable[[], bool]) -> None:
    """Test-only: with ``WARP_TEST_PAUSE_AT=<phase>`` and ``WARP_TEST_PAUSE_DIR=<folder>``, wait before ``phase``.

    The fault tests hold a deploy at a phase, break something (kill it, cut its SSH connection) and let it go on
    by creating ``<folder>/go``. Unset, as everywhere but in those tests, this does nothing.
    """
    folder = os.environ.get(PAUSE_DIR)
    if not folder or os.environ.get(PAUSE_AT) != phase:
        return
    with open(os.path.join(folder, f"paused-{phase}"), "w", encoding="utf-8") as note:
        note.write(str(os.getpid()))
    deadline = time.monotonic() + PAUSE_LIMIT
    while not os.path.exists(os.path.join(folder, "go")) and not stopping() and time.monotonic() < deadline:
        time.sleep(0.05)
