"""What the benchmarks compare against, installed by the benchmark itself.

Everything lives under one world-readable work folder: as root, Apache's
workers run as an unprivileged account that must read the Python, the
environments and the apps, so nothing may sit under /root, and every
environment is built from the system Python (a Python under /root is
unreadable to that account).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sys
from dataclasses import dataclass

from .proc import BenchError, run

WARPDRIVE_VERSION = "0.34.0"
SYSTEM_PYTHON = "/usr/bin/python3"
HAS_VENV_AND_HEADERS = (
    "import ensurepip, os, sys, sysconfig\n"
    "sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"
)


@dataclass(frozen=True)
class Tools:
    work: str
    python: str  # the Python every app environment is built from
    warp: tuple[str, ...]  # the warp command under test (this checkout)
    warpdrive_bin: str  # folder holding warpdrive and virtualenv
    django_admin: str
    django_version: str
    wrk: str
    worker: tuple[str, str] | None  # user, group for Apache's workers when running as root


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise BenchError(f"{', '.join(packages)} missing: install {' '.join(packages)} (apt-get) or run as root")
    run(["apt-get", "update", "-q"], timeout=600, check=False)
    run(["apt-get", "install", "-y", "-q", *packages], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)


def ensure_system(say: object = print) -> None:
    """wrk, Apache's development files (mod_wsgi compiles against them) and a venv-capable system Python."""
    missing = [pkg for pkg, probe in (("wrk", "wrk"), ("apache2-dev", "apxs")) if not shutil.which(probe)]
    if not os.path.exists(SYSTEM_PYTHON):
        missing += ["python3", "python3-venv", "python3-dev"]
    elif run([SYSTEM_PYTHON, "-c", HAS_VENV_AND_HEADERS], check=False).returncode:
        missing += ["python3-venv", "python3-dev"]
    if missing:
        say(f"installing {' '.join(missing)} (apt-get)")  # type: ignore[operator]
        _apt_install(*(["apache2"] if "apache2-dev" in missing else []), *missing)


# The front section's references: Debian packages, started by the bench itself (in the foreground, own config).
PROXY_PACKAGES = {"nginx": "nginx-light", "haproxy": "haproxy"}
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:" + os.environ.get("PATH", "/usr/bin:/bin")


def ensure_proxies(say: object = print) -> dict[str, str]:
    """nginx and HAProxy (for the front section only): their paths, installed with apt-get when missing."""
    missing = [pkg for name, pkg in PROXY_PACKAGES.items() if not shutil.which(name, path=SBIN_PATH)]
    if missing:
        say(f"installing {' '.join(missing)} (apt-get)")  # type: ignore[operator]
        _apt_install(*missing)
        if os.path.isdir("/run/systemd/system"):
            # Debian starts a newly installed nginx on port 80 (and HAProxy): the bench runs its own, nothing else may.
            services = [name for name, pkg in PROXY_PACKAGES.items() if pkg in missing]
            run(["systemctl", "disable", "--now", *services], check=False)
    found = {name: shutil.which(name, path=SBIN_PATH) for name in PROXY_PACKAGES}
    if not all(found.values()):
        raise BenchError(f"not found after installing: {', '.join(n for n, p in found.items() if not p)}")
    return {name: str(path) for name, path in found.items()}


def _venv(path: str, *packages: str) -> str:
    marker = os.path.join(path, ".bench-ready")
    want = " ".join(packages)
    if os.path.exists(marker) and open(marker).read() == want:
        return os.path.join(path, "bin")
    shutil.rmtree(path, ignore_errors=True)
    run([SYSTEM_PYTHON, "-m", "venv", path])
    run([os.path.join(path, "bin", "pip"), "install", "-q", *packages], timeout=900)
    with open(marker, "w") as handle:
        handle.write(want)
    return os.path.join(path, "bin")


def worker_account() -> tuple[str, str] | None:
    if os.geteuid() != 0:
        return None
    for user in ("www-data", "nobody"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        return user, grp.getgrgid(entry.pw_gid).gr_name
    run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "warpbench"])
    return "warpbench", "warpbench"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warp_command() -> tuple[str, ...]:
    """The `warp` under test: this checkout's, run as its console script runs it.

    The installed `warp` script when it imports this checkout (an editable install of it); otherwise (this checkout
    is a worktree beside the installed one) the same two lines with this checkout first on the path, so what is
    measured is the same whole process, of this code. PYTHONPATH would do it too, but it would reach the servers.
    """
    script = os.path.join(os.path.dirname(sys.executable), "warp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # From "/": with -c, the working folder comes first on the path, which the console script does not have.
    code = "import warptasks; print(warptasks.__file__)"
    which = run([sys.executable, "-c", code], cwd="/", env=env, check=False).output.strip()
    if os.path.exists(script) and os.path.dirname(os.path.dirname(which)) == ROOT:
        return (script,)
    return launcher(ROOT)


def launcher(root: str) -> tuple[str, ...]:
    """`warp` of the checkout at ``root``, run as its console script runs it (with this Python)."""
    return (sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r}); from warptasks.cli import main; sys.exit(main())")


def prepare(work: str, say: object = print) -> Tools:
    ensure_system(say)
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    tools = os.path.join(work, "tools")
    os.makedirs(tools, exist_ok=True)
    say(f"tools: warpdrive {WARPDRIVE_VERSION} and virtualenv in their own venv")  # type: ignore[operator]
    # warpdrive's `activate` calls `virtualenv` from PATH: it must sit beside warpdrive.
    warpdrive_bin = _venv(os.path.join(tools, "warpdrive"), f"warpdrive=={WARPDRIVE_VERSION}", "virtualenv")
    django_bin = _venv(os.path.join(tools, "django"), "Django>=5,<7")
    version = run([os.path.join(django_bin, "python"), "-c", "import django; print(django.__version__)"]).output.strip()
    return Tools(
        work=work,
        python=SYSTEM_PYTHON,
        warp=warp_command(),
        warpdrive_bin=warpdrive_bin,
        django_admin=os.path.join(django_bin, "django-admin"),
        django_version=version,
        wrk=shutil.which("wrk") or "wrk",
        worker=worker_account(),
    )
