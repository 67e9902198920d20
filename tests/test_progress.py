"""Progress of a plan: elapsed time per step, a heartbeat while a step is silent, the summary line (pure: a fake
clock and a fake runner; the heartbeat thread polls every 10 ms, so nothing sleeps for long)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invoke import Context
from invoke.exceptions import Exit

from warptasks.errors import StepFailed, StepInterrupted, WarpError
from warptasks.plan import Plan, Step
from warptasks.remote.interrupt import Interrupted
from warptasks.remote.session import QuietRunner, Session
from warptasks.run.executor import execute, run_step
from warptasks.run.progress import Heartbeat, Progress, beating, doing, seconds
from warptasks.tasks.report import reported


class Clock:
    """A clock the test moves; thread-safe enough for a float."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, by: float) -> None:
        self.now += by


@dataclass
class Result:
    exited: int = 0
    stdout: str = ""
    stderr: str = ""


class Said:
    """A ``say`` that keeps its lines, and can wait (bounded) for one from the heartbeat thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, text: str) -> None:
        with self.changed:
            self.lines.append(text)
            self.changed.notify_all()

    def wait_for(self, test: Callable[[str], bool], timeout: float = 5.0) -> str:
        with self.changed:
            if not self.changed.wait_for(lambda: any(test(line) for line in self.lines), timeout):
                raise AssertionError(f"no such line within {timeout}s: {self.lines}")
            return next(line for line in self.lines if test(line))


def heartbeats(lines: list[str]) -> list[str]:
    return [line for line in lines if "still running" in line]


def no_threads_left() -> bool:
    return not any(t.name == "warptasks-heartbeat" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0.0s"), (0.04, "0.0s"), (4.2, "4.2s"), (59.9, "59.9s"), (59.96, "1m00s"), (61.4, "1m01s"), (3725, "62m05s")],
)
def test_durations_read_as_seconds_then_minutes(value: float, shown: str) -> None:
    assert seconds(value) == shown


@pytest.mark.parametrize(
    ("name", "why", "said"),
    [
        ("server wheel", "mod_wsgi compiled once for Python, then reused", "server wheel (mod_wsgi compiled once for Python)"),
        ("install requirements", "requirements.txt", "install requirements (requirements.txt)"),
        ("collectstatic", "Django: collectstatic, into /e (no STATIC_ROOT)", "collectstatic (Django: collectstatic)"),
        ("install server", "mod_wsgi for mod_wsgi (compiled for this Python, cached)", "install server (mod_wsgi for mod_wsgi)"),
        ("migrate", "", "migrate"),
        ("migrate", "migrate", "migrate"),
        ("x", "y" * 100, "x (" + "y" * 57 + "...)"),
    ],
)
def test_a_heartbeat_says_the_step_and_the_first_clause_of_its_reason(name: str, why: str, said: str) -> None:
    assert doing(name, why) == said


def test_a_silent_step_beats_after_five_seconds_then_every_ten() -> None:
    clock = Clock()
    beat = Heartbeat("server wheel (mod_wsgi compiled)", clock=clock)
    clock.advance(4.9)
    assert beat.due() is None
    clock.advance(0.2)
    assert beat.due() == "  ... still running server wheel (mod_wsgi compiled), 5s"
    clock.advance(5)
    assert beat.due() is None  # the next after ten more seconds of silence, not five
    clock.advance(5)
    assert beat.due() == "  ... still running server wheel (mod_wsgi compiled), 15s"
    clock.advance(60)
    assert beat.due() == "  ... still running server wheel (mod_wsgi compiled), 1m15s"


def test_output_the_user_sees_restarts_the_silence() -> None:
    clock = Clock()
    beat = Heartbeat("install", clock=clock)
    for _ in range(5):
        clock.advance(4)
        beat.submit("Downloading ...\n")  # what invoke's reader thread calls after each chunk
        assert beat.due() is None
    clock.advance(5)
    assert beat.due() == "  ... still running install, 25s"


def test_output_a_runner_hides_does_not_count_the_user_sees_nothing() -> None:
    clock = Clock()
    beat = Heartbeat("install", clock=clock, visible=False)
    for _ in range(2):
        clock.advance(3)
        beat.submit("Downloading ...\n")
    assert beat.due() == "  ... still running install, 6s"


def test_a_heartbeat_after_a_line_left_open_starts_a_line_of_its_own() -> None:
    clock = Clock()
    beat = Heartbeat("server wheel", clock=clock)
    beat.submit("  Building wheel for mod-wsgi (pyproject.toml) ... ")
    clock.advance(6)
    assert beat.due() == "\n  ... still running server wheel, 6s"
    clock.advance(10)
    assert beat.due() == "  ... still running server wheel, 16s"  # the heartbeat itself ended that line


def test_the_heartbeat_thread_says_when_due_and_always_ends_with_the_block() -> None:
    clock, said = Clock(), Said()
    beat = Heartbeat("hook pre-build", clock=clock)
    with beating(beat, said, poll=0.01):
        clock.advance(7)
        said.wait_for(lambda line: "still running hook pre-build, 7s" in line)
    assert no_threads_left()
    with pytest.raises(KeyboardInterrupt), beating(Heartbeat("x", clock=clock), said, poll=0.01):
        raise KeyboardInterrupt
    assert no_threads_left()


def test_a_say_that_fails_ends_the_heartbeat_not_the_step() -> None:
    clock = Clock()

    def broken(_: str) -> None:
        raise BrokenPipeError

    beat = Heartbeat("x", clock=clock)
    with beating(beat, broken, poll=0.01):
        clock.advance(6)
        deadline = time.monotonic() + 5
        while beat.next < clock() + 6 and time.monotonic() < deadline:  # until the thread took its due line
            time.sleep(0.01)
    assert no_threads_left()


class FakeRunner:
    """Runs nothing: each command takes ``durations[i]`` seconds of the fake clock and prints ``outputs[i]``."""

    def __init__(self, clock: Clock, durations: list[float], outputs: list[str] | None = None, exits: list[int] | None = None):
        self.clock = clock
        self.durations = durations
        self.outputs = outputs or [""] * len(durations)
        self.exits = exits or [0] * len(durations)
        self.calls: list[dict[str, Any]] = []
        self.during: Callable[[], None] = lambda: None

    def run(self, command: str, **kwargs: Any) -> Result:
        index = len(self.calls)
        self.calls.append({"command": command, **kwargs})
        for watcher in kwargs.get("watchers", []):
            if self.outputs[index]:
                watcher.submit(self.outputs[index])
        self.clock.advance(self.durations[index])
        self.during()
        return Result(exited=self.exits[index], stdout=self.outputs[index])


def steps(*names: str) -> Plan:
    return Plan("build", tuple(Step(name, ("true",), "/app", f"why {name}") for name in names))


def test_every_step_says_its_elapsed_time_and_the_build_its_slowest_steps() -> None:
    clock, said = Clock(), Said()
    progress = Progress(said, clock=clock, poll=60)  # the fake clock jumps: no heartbeat may look in the moment
    runner = FakeRunner(clock, [0.3, 30.1, 1.9, 8.2, 0.04], outputs=["", "Installed 3 packages\n", "", "", ""])
    plan = steps("virtualenv", "install requirements", "collectstatic", "server wheel", "switch")
    plan = Plan("build", (*plan.steps, Step("skipped", ("true",), "/app", "never", skip="unchanged")))
    assert execute(plan, runner, say=said, progress=progress) == 5
    assert said.lines == [
        "skip skipped: unchanged",
        "[1/5] virtualenv: why virtualenv",
        "[1/5] virtualenv: done in 0.3s",
        "[2/5] install requirements: why install requirements",
        "[2/5] install requirements: done in 30.1s",
        "[3/5] collectstatic: why collectstatic",
        "[3/5] collectstatic: done in 1.9s",
        "[4/5] server wheel: why server wheel",
        "[4/5] server wheel: done in 8.2s",
        "[5/5] switch: why switch",
        "[5/5] switch: done in 0.0s",
    ]
    clock.advance(0.5)
    assert progress.summary("built") == "built in 41.0s: install requirements 30.1s, server wheel 8.2s, collectstatic 1.9s"
    assert all("\x1b" not in line and "\r" not in line for line in said.lines)
    # The runner's own options are untouched; only the watchers are added (a visible runner: output resets).
    assert all(call["hide"] is None and call["pty"] is False for call in runner.calls)
    assert all(len(call["watchers"]) == 1 and call["watchers"][0].visible for call in runner.calls)


def test_a_summary_with_no_step_run_says_only_the_total() -> None:
    clock = Clock()
    progress = Progress(lambda _: None, clock=clock)
    clock.advance(0.25)
    assert progress.summary("built") == "built in 0.2s"


def test_a_silent_step_beats_between_its_lines_through_the_same_say() -> None:
    clock, said = Clock(), Said()
    runner = FakeRunner(clock, [7, 0.1])
    # While the first command runs, its heartbeat must arrive (the thread polls every 10 ms).
    runner.during = lambda: said.wait_for(lambda line: "still running" in line) if len(runner.calls) == 1 else None
    execute(steps("hook pre-build", "switch"), runner, say=said, progress=Progress(said, clock=clock, poll=0.01))
    assert said.lines == [
        "[1/2] hook pre-build: why hook pre-build",
        "  ... still running hook pre-build (why hook pre-build), 7s",
        "[1/2] hook pre-build: done in 7.0s",
        "[2/2] switch: why switch",
        "[2/2] switch: done in 0.1s",
    ]
    assert no_threads_left()


def test_a_failed_step_says_after_how_long_and_its_heartbeat_stops() -> None:
    clock, said = Clock(), Said()
    runner = FakeRunner(clock, [2.5], outputs=["boom\n"], exits=[1])
    with pytest.raises(StepFailed, match="step 'install' failed"):
        execute(steps("install"), runner, say=said, progress=Progress(said, clock=clock, poll=0.01))
    assert said.lines[-1] == "[1/1] install: failed after 2.5s"
    assert no_threads_left()


def test_ctrl_c_during_a_step_says_so_and_stops_the_heartbeat() -> None:
    clock, said = Clock(), Said()
    runner = FakeRunner(clock, [3])

    def interrupted() -> None:
        raise KeyboardInterrupt

    runner.during = interrupted
    with pytest.raises(WarpError, match=r"build interrupted \(Ctrl-C\) during 'install'"):
        execute(steps("install"), runner, say=said, progress=Progress(said, clock=clock, poll=0.01))
    assert said.lines[-1] == "[1/1] install: interrupted after 3.0s"
    assert no_threads_left()


def test_a_runner_that_hides_output_counts_every_step_as_silent() -> None:
    """A deploy's hosts run in parallel with their output hidden (QuietRunner): hidden output resets nothing."""
    clock, said = Clock(), Said()
    conn = FakeRunner(clock, [7], outputs=["Collecting django\n"])
    conn.during = lambda: said.wait_for(lambda line: "still running" in line)
    execute(steps("install"), QuietRunner(conn), say=said, progress=Progress(said, clock=clock, poll=0.01))
    assert conn.calls[0]["hide"] is True and not conn.calls[0]["watchers"][0].visible
    assert heartbeats(said.lines) == ["  ... still running install (why install), 7s"]


def test_without_watchers_run_step_passes_none_to_the_runner() -> None:
    """Runners of a library user that know nothing of watchers keep working when no progress is wanted."""
    clock = Clock()
    runner = FakeRunner(clock, [1])
    run_step(runner, Step("x", ("true",), "/app", "why"))
    assert "watchers" not in runner.calls[0]


def test_a_remote_single_step_says_its_time_when_asked_to() -> None:
    """warp deploy's migrate and release steps run through Session.run with the host's say."""
    clock, said = Clock(), Said()
    session = Session(None, None, conn=FakeRunner(clock, [0.2, 0.2]))  # type: ignore[arg-type]
    session.run(Step("migrate", ("true",), "/app", "migrate"), say=said)
    assert said.lines[-1].startswith("migrate: done in ")
    assert session.conn.calls[0]["hide"] is True and not session.conn.calls[0]["watchers"][0].visible
    said.lines.clear()
    session.run(Step("unpack", ("true",), "/app", "unpack"))
    assert said.lines == [] and "watchers" not in session.conn.calls[1]


# -- image builds: the engine streams the plan's marker lines; each plan step is timed from its marker to the next --


class FakeEngine:
    """A Docker client whose build streams ``chunks``; a number in ``chunks`` moves the clock (and may wait)."""

    def __init__(self, clock: Clock, chunks: list[Any], during: Callable[[], None] = lambda: None) -> None:
        self.clock = clock
        self.chunks = chunks
        self.during = during
        self.api = self

    def build(self, **_: Any) -> Any:
        for chunk in self.chunks:
            if isinstance(chunk, (int, float)):
                self.clock.advance(chunk)
                self.during()
            else:
                yield {"stream": chunk}


IMAGE_STREAM = [
    "Step 1/3 : FROM python:3.12-slim\n",
    " ---> 0123456789ab\n",
    "Step 2/3 : RUN sh /tmp/warp/deps.sh\n",
    " ---> Running in 0a1b2c3d\n",
    "[deps 1/2] install requirements: requirements.txt\n",
    1.5,
    "\x1b[31mResolved 3 packages\x1b[0m\n",
    28.5,
    "[deps 2/2] server wheel: mod_wsgi compiled once for this Python\n",
    8,
    " ---> 1234567890ab\n",
    "Step 3/3 : COPY . /app\n",
    " ---> 234567890abc\n",
    "Successfully built 234567890abc\n",
]


def test_an_image_build_times_each_plan_step_and_ends_with_where_the_time_went(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from io import BytesIO

    from warptasks.image.engine import ImageOptions, engine_build

    monkeypatch.delenv("NO_COLOR", raising=False)
    clock, said = Clock(), Said()
    result = engine_build(FakeEngine(clock, IMAGE_STREAM), BytesIO(), ImageOptions(), said, clock=clock)  # type: ignore[arg-type]
    assert result.image_id == "234567890abc"
    assert result.timings == [("install requirements", 30.0), ("server wheel", 8.0)]
    # (The fake clock jumps 28.5 s at once: the heartbeat thread may or may not look in that moment.)
    assert [line for line in said.lines if "still running" not in line] == [
        "[deps 1/2] install requirements: done in 30.0s",
        "[deps 2/2] server wheel: done in 8.0s",
        "built in 38.0s: install requirements 30.0s, server wheel 8.0s",
    ]
    shown = capsys.readouterr().out
    assert "Resolved 3 packages\n" in shown and "\x1b" not in shown  # stdout is not a terminal here: no colour


def test_a_quiet_image_build_says_only_where_the_time_went() -> None:
    from io import BytesIO

    from warptasks.image.engine import ImageOptions, engine_build

    clock, said = Clock(), Said()
    engine_build(FakeEngine(clock, IMAGE_STREAM), BytesIO(), ImageOptions(quiet=True), said, clock=clock)  # type: ignore[arg-type]
    assert said.lines == ["built in 38.0s: install requirements 30.0s, server wheel 8.0s"]


def test_a_silent_engine_beats_naming_the_plan_step_it_is_in() -> None:
    from io import BytesIO

    from warptasks.image.engine import ImageOptions, engine_build

    clock, said = Clock(), Said()
    stream = [
        "Step 1/2 : RUN sh /tmp/warp/deps.sh\n",
        "[deps 1/1] server wheel: mod_wsgi compiled once for this Python, then reused\n",
        6,
        "Step 2/2 : COPY . /app\n",
        "Successfully built 234567890abc\n",
    ]
    engine = FakeEngine(clock, stream, lambda: said.wait_for(lambda line: "still running" in line))
    engine_build(engine, BytesIO(), ImageOptions(), said, clock=clock)  # type: ignore[arg-type]
    assert heartbeats(said.lines) == ["  ... still running server wheel (mod_wsgi compiled once for this Python), 6s"]
    assert no_threads_left()


@pytest.mark.parametrize(
    ("tty", "no_color", "shown"),
    [(True, None, True), (True, "1", False), (True, "", True), (False, None, False), (False, "1", False)],
)
def test_escape_sequences_reach_only_a_terminal_without_no_color(tty: bool, no_color: str | None, shown: bool) -> None:
    from warptasks.image.engine import colour_shown

    class Stream:
        def isatty(self) -> bool:
            return tty

    environ = {} if no_color is None else {"NO_COLOR": no_color}
    assert colour_shown(Stream(), environ) is shown


def test_an_image_steps_time_is_said_before_the_next_steps_line_and_split_lines_are_shown_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from io import BytesIO

    from warptasks.image.engine import ImageOptions, engine_build, say_line

    clock = Clock()
    stream = [
        "Step 1/2 : RUN sh /tmp/warp/deps.sh\n[deps 1/2] install requirements: requirements.txt\nCollect",
        "ing six\n",
        3,
        "[deps 2/2] switch: make it current\n",
        "Step 2/2 : COPY . /app\n",
        "Successfully built 234567890abc\n",
    ]
    engine_build(FakeEngine(clock, stream), BytesIO(), ImageOptions(), say_line, clock=clock)  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == [
        "Step 1/2 : RUN sh /tmp/warp/deps.sh",
        "[deps 1/2] install requirements: requirements.txt",
        "Collecting six",
        "[deps 1/2] install requirements: done in 3.0s",
        "[deps 2/2] switch: make it current",
        "[deps 2/2] switch: done in 0.0s",
        "Step 2/2 : COPY . /app",
        "Successfully built 234567890abc",
        "built in 3.0s: install requirements 3.0s, switch 0.0s",
    ]


def test_a_step_ended_by_sigint_is_interrupted_not_failed(tmp_path: Path) -> None:
    """A real process that Ctrl-C ended (here it sends SIGINT to itself) is said interrupted, with the shell's 130."""
    kill = "import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGINT)"
    plan = Plan("build", (Step("hook build", (sys.executable, "-c", kill), str(tmp_path), "build action hook"),))
    said = Said()
    with pytest.raises(StepInterrupted) as raised:
        execute(plan, Context(), say=said)
    assert raised.value.exit_code == 130
    assert "build interrupted (Ctrl-C) during 'hook build'" in str(raised.value)
    assert "failed (exit" not in str(raised.value)
    assert said.lines[-1].startswith("[1/1] hook build: interrupted after ")


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [
        pytest.param(KeyboardInterrupt(), 130, "warp: error: interrupted (Ctrl-C)", id="ctrl-c"),
        pytest.param(Interrupted("SIGTERM"), 143, "warp: error: interrupted by SIGTERM", id="deploy-sigterm"),
        pytest.param(Interrupted("SIGINT"), 130, "warp: error: interrupted by SIGINT (Ctrl-C)", id="deploy-ctrl-c"),
    ],
)
def test_an_interrupt_outside_a_step_exits_with_the_shells_status(stop: KeyboardInterrupt, code: int, said: str) -> None:
    """Ctrl-C while waiting for the lock, detecting or planning (no step running): 128 + the signal, and a line saying
    so, as for one during a step; invoke itself would exit 1 in silence."""
    with pytest.raises(Exit) as raised, reported():
        raise stop
    assert (raised.value.code, raised.value.message) == (code, said)
