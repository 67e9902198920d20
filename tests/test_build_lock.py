"""The build lock with real processes: a first build that fails while another waits never lets two builds run at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# A "build": takes the lock, says so, marks the folder as held (O_EXCL: two holders at once fail), then either fails
# when told to (a first build refused before anything ran, which removes the lock it made) or holds it a while.
BUILD = """
import os, sys, time
from warptasks.run.lock import build_lock

root, mode = sys.argv[1], sys.argv[2]
held = os.path.join(os.path.dirname(root), "held")
with build_lock(root, lambda line: print(line, flush=True)):
    try:
        marker = os.open(held, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        print("OVERLAP", flush=True)
        sys.exit(3)
    print("locked", flush=True)
    try:
        if mode == "fail":
            sys.stdin.readline()
            os.close(marker)
            os.unlink(held)
            raise SystemExit(1)
        time.sleep(2)
    finally:
        if os.path.exists(held) and mode != "fail":
            os.unlink(held)
"""


def _build(root: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def test_a_failed_first_build_never_lets_the_waiting_one_and_a_third_run_together(tmp_path: Path) -> None:
    root = tmp_path / ".warp"  # not there yet: the first build makes it, and removes it when it fails
    first = _build(root, "fail")
    second = third = None
    try:
        assert first.stdout is not None and first.stdin is not None
        assert first.stdout.readline().strip() == "locked"
        second = _build(root, "hold")
        assert second.stdout is not None
        assert "waiting for another build" in second.stdout.readline()  # blocked on the first one's lock file
        first.stdin.write("\n")
        first.stdin.close()
        assert first.wait(timeout=30) == 1
        time.sleep(0.3)  # the second one has the lock now (on the file the first one removed, without the check)
        third = _build(root, "hold")
        out_third, _ = third.communicate(timeout=30)
        out_second, _ = second.communicate(timeout=30)
    finally:
        for process in (first, second, third):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert "OVERLAP" not in out_second + out_third, (out_second, out_third)
    assert (second.returncode, third.returncode) == (0, 0), (out_second, out_third)
    assert "locked" in out_second and "locked" in out_third
