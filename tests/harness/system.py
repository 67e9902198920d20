"""Debian packages and shared state directories the harness relies on."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Outside /tmp on purpose: state must survive between test runs (and pytest's
# tmp dirs), and /tmp may be cleaned or per-user.
STATE_DIR = Path("/var/lib/warptasks-tests")
RUN_DIR = Path("/run/warptasks-tests")
CACHE_DIR = Path("/var/cache/warptasks-tests")

_apt_updated = False


def state_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock across processes (two pytest runs at once)."""
    state_dir(path.parent)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for name in packages:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False)
        if "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def ensure_packages(*packages: str) -> None:
    """Install Debian packages the harness needs if they are not there yet."""
    global _apt_updated
    missing = missing_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"the test harness needs Debian packages {' '.join(missing)}: run the tests as root (./dev test)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with file_lock(RUN_DIR / "apt.lock"):
        if not _apt_updated:
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
            _apt_updated = True
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def require_command(command: str, package: str) -> str:
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        ensure_packages(package)
        path = shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise RuntimeError(f"{command} is still missing after installing {package}")
    return path
