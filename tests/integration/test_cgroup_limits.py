"""Worker counts follow real cgroup limits, not the machine's size."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import WARP, warp, write

MiB = 1024 * 1024


def _v1_dirs(name: str) -> tuple[Path, Path] | None:
    cpu, memory = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/memory")
    if (cpu / "cpu.cfs_quota_us").exists() and (memory / "memory.limit_in_bytes").exists() and os.access(cpu, os.W_OK):
        return cpu / name, memory / name
    return None


def _v2_dir(name: str) -> Path | None:
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        control = root / "cgroup.subtree_control"
        if control.exists() and {"cpu", "memory"} <= set(control.read_text().split()) and os.access(root, os.W_OK):
            return root / name
    return None


@pytest.fixture
def limited(request: pytest.FixtureRequest):
    """A cgroup with half a CPU and 300 MiB; yields the shell line that enters it."""
    name = f"warptasks-test-{os.getpid()}"
    v1, v2 = _v1_dirs(name), _v2_dir(name)
    made: list[Path] = []
    if v1:
        for directory in v1:
            directory.mkdir(exist_ok=True)
            made.append(directory)
        (v1[0] / "cpu.cfs_period_us").write_text("100000")
        (v1[0] / "cpu.cfs_quota_us").write_text("50000")
        (v1[1] / "memory.limit_in_bytes").write_text(str(300 * MiB))
        enter = " && ".join(f'echo $$ > "{d}/cgroup.procs"' for d in v1)
    elif v2:
        v2.mkdir(exist_ok=True)
        made.append(v2)
        (v2 / "cpu.max").write_text("50000 100000")
        (v2 / "memory.max").write_text(str(300 * MiB))
        enter = f'echo $$ > "{v2}/cgroup.procs"'
    else:
        pytest.skip("this kernel gives no writable cgroup with cpu and memory controllers (not installable)")
    yield enter
    for directory in made:
        directory.rmdir()


def test_start_sizes_workers_from_the_cgroup_it_runs_in(project_dir: Path, limited: str) -> None:
    write(project_dir, {"wsgi.py": "def application(e, s):\n    s('200 OK', [])\n    return [b'']\n"})
    warp(project_dir, "build", "--server", "gunicorn")
    free = warp(project_dir, "start", "--dry-run").stdout
    inside = subprocess.run(
        ["sh", "-c", f'{limited} && exec "$@"', "sh", *WARP, "start", "--dry-run"],
        cwd=project_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inside.returncode == 0, inside.stderr
    assert "cgroup CPU quota 0.5" in inside.stdout and "cgroup memory limit 300 MiB" in inside.stdout
    assert "--workers 1 " in inside.stdout
    if len(os.sched_getaffinity(0)) > 1:  # outside the cgroup the machine's CPUs decide
        assert "--workers 1 " not in free and "cgroup CPU quota" not in free
