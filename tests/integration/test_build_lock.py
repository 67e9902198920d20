"""Two builds of one project never run at once: the second waits, saying who holds the lock."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

from tests.cases import WSGI, write_tree
from tests.integration.conftest import WARP


def test_a_second_build_waits_for_the_first_and_names_it(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, "requirements.txt": ""})
    (tmp_path / ".warp").mkdir()
    lock = os.open(tmp_path / ".warp" / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # this test is "the other build"
    os.write(lock, json.dumps({"pid": 4242, "host": "builder", "since": "just now"}).encode())
    second = subprocess.Popen(
        [*WARP, "build", "--server", "waitress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert second.stdout is not None
        first_line = second.stdout.readline()  # bounded: the build either waits (and says so) or runs
        assert "waiting for another build of this project" in first_line, first_line
        assert "pid 4242 on builder" in first_line
        time.sleep(1)
        assert second.poll() is None, "the build ran while the lock was held"
        assert not (tmp_path / ".warp" / "current").exists()
    finally:
        os.close(lock)  # the other build ends
    rest, _ = second.communicate(timeout=300)
    assert second.returncode == 0, rest
    assert (tmp_path / ".warp" / "current" / "bin" / "python").exists()


def test_a_killed_build_leaves_no_lock_behind(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, "requirements.txt": ""})
    doomed = subprocess.Popen(
        [*WARP, "build", "--server", "waitress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert doomed.stdout is not None
    doomed.stdout.readline()  # it has started, and holds the lock
    doomed.kill()
    doomed.wait(timeout=30)
    result = subprocess.run([*WARP, "build", "--server", "waitress"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for another build" not in result.stdout
