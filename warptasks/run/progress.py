"""Progress of a running plan: each step's elapsed time, a heartbeat while a step is silent, and where the time went.

A step's output is watched through invoke's ``watchers`` (called by invoke's
reader threads after each chunk is written, locally and through fabric), so
the output is neither wrapped nor copied: what a step prints and what a result
captures stay exactly as they were. While a step has printed nothing for
:data:`QUIET_AFTER` seconds, a thread of its own says what it is still doing,
then again every :data:`EVERY` seconds of continued silence; output the user
sees resets the timer (output a runner hides does not: for the user that step
is silent). Every line goes through the same ``say`` as the step lines, so it
lands where they do (stdout, or stderr when stdout carries ``--json``).

Plain text only: no colour, no cursor movement, no carriage return.

The clock and the heartbeat thread's poll interval are injectable, so tests
need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StepInterrupted

Say = Callable[[str], None]
Clock = Callable[[], float]

QUIET_AFTER = 5.0  # seconds of silence before a step's first heartbeat
EVERY = 10.0  # seconds between heartbeats while the silence lasts
POLL = 0.5  # how often the heartbeat thread looks at the clock
TOP = 3  # how many steps the summary line names
_JOIN = 2.0  # the longest a finished step waits for its heartbeat thread (which only ever says one line)


def seconds(value: float) -> str:
    """A duration as ``4.2s``, or ``2m05s`` from a minute on."""
    if value < 59.95:
        return f"{value:.1f}s"
    whole = round(value)
    return f"{whole // 60}m{whole % 60:02d}s"


def _whole(value: float) -> str:
    whole = int(value)
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


def doing(name: str, why: str) -> str:
    """What a step is doing, in a few words: its name and the first clause of its reason (reasons run long)."""
    short = why.split(";")[0].split(", ")[0].split(" (")[0].strip().rstrip(":").strip()
    if len(short) > 60:
        short = short[:57].rstrip() + "..."
    return f"{name} ({short})" if short and short != name else name


class Heartbeat:
    """The silence of one running step, and the line to say when it has lasted.

    :meth:`output` is what invoke's watcher calls (see :meth:`submit`);
    :meth:`due` is what the thread calls. Both are thread-safe.
    """

    def __init__(
        self,
        what: str,
        *,
        clock: Clock = time.monotonic,
        visible: bool = True,
        quiet_after: float = QUIET_AFTER,
        every: float = EVERY,
    ) -> None:
        self.what = what
        self.clock = clock
        self.visible = visible
        self.quiet_after = quiet_after
        self.every = every
        self.started = clock()
        self.next = self.started + quiet_after
        self.partial = False  # the step's last output did not end its line
        self._lock = threading.Lock()

    # invoke's watcher interface: ``submit`` gets all the output of one stream so far, returns what to answer (nothing)
    def submit(self, stream: str) -> list[str]:
        self.output(stream)
        return []

    def output(self, text: str) -> None:
        """The step printed ``text`` (its output so far): visible output restarts the silence."""
        if not self.visible or not text:
            return
        with self._lock:
            self.next = self.clock() + self.quiet_after
            self.partial = not text.endswith("\n")

    def begin(self, what: str) -> None:
        """A new step began (an image build's next step): its heartbeat names it and counts from now."""
        with self._lock:
            self.what = what
            self.started = self.clock()
            self.next = self.started + self.quiet_after
            self.partial = False

    def due(self) -> str | None:
        """The heartbeat line, when the silence has lasted long enough; else None."""
        with self._lock:
            now = self.clock()
            if now < self.next:
                return None
            self.next = now + self.every
            # After a line the step left open (pip's "Building wheel ... "), start a line of our own.
            start = "\n" if self.partial else ""
            self.partial = False
            what, took = self.what, now - self.started
        return f"{start}  ... still running {what}, {_whole(took)}"


@contextmanager
def beating(beat: Heartbeat, say: Say, *, poll: float = POLL) -> Iterator[Heartbeat]:
    """Say ``beat``'s lines from a thread while the block runs; the thread always ends with the block (Ctrl-C too)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(poll):
            line = beat.due()
            if line is not None and not stop.is_set():
                try:
                    say(line)
                except Exception:  # noqa: BLE001 - a heartbeat that cannot be said must not end the step
                    return

    thread = threading.Thread(target=loop, name="warptasks-heartbeat", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        stop.set()
        thread.join(_JOIN)


class Progress:
    """The timing of one plan's steps: a line when each ends, a heartbeat while one is silent, a summary at the end."""

    def __init__(
        self,
        say: Say,
        *,
        clock: Clock = time.monotonic,
        quiet_after: float = QUIET_AFTER,
        every: float = EVERY,
        poll: float = POLL,
    ) -> None:
        self.say = say
        self.clock = clock
        self.quiet_after = quiet_after
        self.every = every
        self.poll = poll
        self.started = clock()
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def step(self, name: str, what: str, *, prefix: str = "", visible: bool = True) -> Iterator[list[Any]]:
        """Time the block that runs the step ``name``; yields the ``watchers`` to give the runner.

        ``prefix`` begins the step's lines (``[3/7] ``), ``what`` is what its
        heartbeat says it is doing; ``visible``: the runner shows the step's output.
        """
        beat = Heartbeat(what, clock=self.clock, visible=visible, quiet_after=self.quiet_after, every=self.every)
        outcome = "failed"
        try:
            with beating(beat, self.say, poll=self.poll):
                yield [beat]
            outcome = "done"
        except (KeyboardInterrupt, StepInterrupted):
            outcome = "interrupted"
            raise
        finally:
            took = self.clock() - beat.started
            if outcome == "done":
                self.timings.append((name, took))
                self.say(f"{prefix}{name}: done in {seconds(took)}")
            else:
                self.say(f"{prefix}{name}: {outcome} after {seconds(took)}")

    def summary(self, what: str = "built", top: int = TOP) -> str:
        """One line of where the time went: ``built in 41.3s: install 30.1s, server wheel 8.2s, collectstatic 1.9s``."""
        return summary(what, self.clock() - self.started, self.timings, top)


def summary(what: str, total: float, timings: list[tuple[str, float]], top: int = TOP) -> str:
    """``{what} in {total}``, then the ``top`` slowest of ``timings`` (step name, seconds), slowest first."""
    slowest = sorted(timings, key=lambda timing: timing[1], reverse=True)[:top]
    parts = ", ".join(f"{name} {seconds(took)}" for name, took in slowest)
    return f"{what} in {seconds(total)}" + (f": {parts}" if parts else "")
