"""A real ``warp build``'s progress: each step's elapsed time, a heartbeat while a step is silent, the summary last.

The project's hooks stand in for slow steps (compiling mod_wsgi is about 15 s of silence): the pre-build hook
sleeps 7 s printing nothing, the build hook prints a line every 2 s for 8 s (its output must keep its heartbeat
quiet). stdout is a pipe here, as in CI: not one escape sequence may appear.
"""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import warp, write

APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

PROJECT = {
    "wsgi.py": APP,
    ".warpdrive/action_hooks/pre-build": "#!/bin/sh\nsleep 7\n",
    ".warpdrive/action_hooks/build": "#!/bin/sh\nfor i in 1 2 3 4; do echo tick $i; sleep 2; done\n",
}

START = re.compile(r"^\[(\d+)/(\d+)\] (.+?): (.*)$")
DONE = re.compile(r"^\[(\d+)/(\d+)\] (.+?): done in (\d+\.\d)s$")
HEARTBEAT = re.compile(r"^  \.\.\. still running (.+), (\d+)s$")
SUMMARY = re.compile(r"^built in (\d+\.\d)s: (.+)$")


def test_a_build_times_each_step_beats_while_silent_and_ends_with_where_the_time_went(project_dir: Path) -> None:
    write(project_dir, PROJECT)
    for hook in ("pre-build", "build"):
        (project_dir / ".warpdrive/action_hooks" / hook).chmod(0o755)
    result = warp(project_dir, "build", "--server", "waitress")
    out = result.stdout
    assert "\x1b" not in out and "\x1b" not in result.stderr, "colour or cursor codes on a pipe"
    lines = out.splitlines()

    # Every step that starts says when it is done, and how long it took, in order.
    started = [(m.group(1), m.group(3)) for line in lines if (m := START.match(line)) and not DONE.match(line)]
    done = {(m.group(1), m.group(3)): float(m.group(4)) for m in map(DONE.match, lines) if m}
    assert len(started) >= 8 and started == list(done), out
    pre_build = next(took for (_, name), took in done.items() if name == "hook pre-build")
    assert 6.5 <= pre_build < 30, out

    # The silent hook beats (once: 5 s, the next would come at 15 s), between its start and its end.
    # (Only the hooks' heartbeats are counted: on a loaded machine an install may be silent for 5 s too.)
    beats = [(i, m) for i, line in enumerate(lines) if (m := HEARTBEAT.match(line)) and m.group(1).startswith("hook ")]
    assert [m.group(1) for _, m in beats] == ["hook pre-build (pre-build action hook)"], out
    begin = next(i for i, line in enumerate(lines) if START.match(line) and "hook pre-build:" in line)
    end = next(i for i, line in enumerate(lines) if DONE.match(line) and "hook pre-build:" in line)
    assert begin < beats[0][0] < end and 5 <= int(beats[0][1].group(2)) < 7, out
    # The build hook was never silent for 5 s: its output reset the timer each time (its twin: no heartbeat).
    assert "tick 4" in out  # (and the heartbeats above were the pre-build hook's only)

    # The last line: the total, and the slowest steps first.
    summary = SUMMARY.match(lines[-1])
    assert summary, out
    total = float(summary.group(1))
    assert total >= pre_build + 7.5, out
    parts = [re.fullmatch(r"(.+) (\d+\.\d)s", part) for part in summary.group(2).split(", ")]
    assert all(parts) and len(parts) == 3, out
    named = {m.group(1): float(m.group(2)) for m in parts if m}
    assert {"hook build", "hook pre-build"} <= set(named) and named["hook pre-build"] == pre_build, out
    assert list(named.values()) == sorted(named.values(), reverse=True), out
