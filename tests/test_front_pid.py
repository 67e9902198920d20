"""The front's Caddy pid (``scripts/front.py``: ``_pid``) names Caddy, never a process given its pid later.

``stop`` signals that pid (as root, for a front started by root), so a stale
pidfile whose pid now belongs to another process, even one with "caddy" in
its command line, must give 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warptasks.scripts import front as script


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir(mode=0o700)
    return tmp_path


@pytest.fixture
def caddy() -> Iterator[subprocess.Popen[bytes]]:
    """A process with "caddy" in its command line: as Caddy's would be, or as another account could name one.

    Popen returns once the exec began (its close-on-exec pipe closed), a moment before the kernel sets the new
    command line: until then /proc shows an empty one (no "caddy": no Caddy, rightly). On a loaded machine that moment
    is long enough to be seen, so the process counts as started once its command line is there (as Caddy has long
    been running when it writes its pidfile)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "caddy"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while b"caddy" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the stand-in Caddy's command line never appeared"
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_stale_pidfile_naming_a_later_process_called_caddy_gives_no_pid(home: Path, caddy: subprocess.Popen[bytes]) -> None:
    """Caddy wrote its pidfile and died (a reboot, a crash); its pid went to another process named like it."""
    pidfile = home / "run" / "caddy.pid"
    pidfile.write_text(str(caddy.pid))
    written = time.time() - 3600
    os.utime(pidfile, (written, written))
    assert script._pid(str(home)) == 0


def test_the_recorded_pid_counts_only_with_its_recorded_start_time(home: Path, caddy: subprocess.Popen[bytes]) -> None:
    (home / "run" / "caddy.pid").write_text(str(caddy.pid))
    script._remember(str(home), caddy.pid)
    record = json.loads((home / "run" / "caddy.json").read_text())
    assert record == {"pid": caddy.pid, "pid_start": script._starttime(caddy.pid)}
    assert (home / "run" / "caddy.json").stat().st_mode & 0o777 == 0o600
    assert script._pid(str(home)) == caddy.pid
    (home / "run" / "caddy.json").write_text(json.dumps(dict(record, pid_start=record["pid_start"] - 1)))
    assert script._pid(str(home)) == 0  # the same pid, another process


def test_a_caddy_restarted_without_a_record_is_found_by_the_pidfile_it_wrote(home: Path, caddy: subprocess.Popen[bytes]) -> None:
    """systemd restarted Caddy: its new pid is in the pidfile it wrote after it started, not in the record."""
    script._remember(str(home), os.getpid())  # the Caddy the front started, gone since
    (home / "run" / "caddy.pid").write_text(str(caddy.pid))
    assert script._pid(str(home)) == caddy.pid
    other = subprocess.Popen(["sleep", "60"])
    try:
        (home / "run" / "caddy.pid").write_text(str(other.pid))  # no "caddy" in its command line
        assert script._pid(str(home)) == 0
    finally:
        other.kill()
        other.wait(timeout=10)
    (home / "run" / "caddy.pid").write_text("99999999")
    assert script._pid(str(home)) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the pidfile to another account")
def test_a_pidfile_of_another_account_names_none_of_roots_processes(home: Path, caddy: subprocess.Popen[bytes]) -> None:
    """Caddy's account may write in run/ (Caddy writes its pidfile there): it must not name a root process for ``stop``."""
    pidfile = home / "run" / "caddy.pid"
    pidfile.write_text(str(caddy.pid))
    script._remember(str(home), caddy.pid)
    assert script._pid(str(home)) == caddy.pid
    os.chown(pidfile, 65534, 65534)  # written by another account than the one the process runs as
    assert script._pid(str(home)) == 0
    os.chown(pidfile, 0, 0)
    pidfile.unlink()
    pidfile.symlink_to(home / "elsewhere")
    (home / "elsewhere").write_text(str(caddy.pid))
    assert script._pid(str(home)) == 0  # a link is no pidfile
