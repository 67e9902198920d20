"""warptasks' own development tasks: the project uses invoke as it asks its users to."""

from __future__ import annotations

import os
import sys

from invoke import Collection, task

import warptasks

HERE = os.path.dirname(os.path.abspath(__file__))
SLOW_TIERS = "not integration and not container and not remote"


@task(
    help={
        "fast": "only the pure tier (no real servers, engine or hosts): seconds",
        "k": "only tests matching this expression (pytest -k)",
        "tier": "one tier: integration, container or remote",
    },
    optional=["k"],
)
def test(c, fast=False, k=None, tier=None):
    """Run the test suite (everything, as CI does, unless --fast)."""
    args = [sys.executable, "-m", "pytest", "-ra"]
    if fast:
        args += ["-m", SLOW_TIERS]
    elif tier:
        args += ["-m", tier]
    if k:
        args += ["-k", k]
    extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    c.run(" ".join(_quote(a) for a in args + extra), pty=False)


@task
def lint(c):
    """ruff (lint and format check) and mypy over the library."""
    c.run(f"{_quote(sys.executable)} -m ruff check warptasks tests tasks.py")
    c.run(f"{_quote(sys.executable)} -m ruff format --check warptasks tests tasks.py")
    c.run(f"{_quote(sys.executable)} -m mypy warptasks")


@task(help={"port": "port to serve on (default 8080)"})
def example(c, port=8080):
    """Build and start the bundled example Django app with warp (Ctrl-C stops it)."""
    project = os.path.join(HERE, "examples", "mysite")
    if os.geteuid() == 0 and not _others_can_enter(project):
        # As root, Apache's workers run as another account, which cannot
        # enter a checkout under a private home folder: serve a copy.
        import shutil
        import stat

        # Not /tmp, where another account could make the folder first and have root build and run its files:
        # only root can make a folder in /var/lib.
        base = "/var/lib/warptasks-example"
        os.makedirs(base, mode=0o755, exist_ok=True)
        info = os.lstat(base)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise SystemExit(f"example: {base} is not a folder only root can change; remove it and run again")
        copy = os.path.join(base, "mysite")
        print(
            f"example: {project} is private to root; Apache's workers could not read it, so serving a copy in {copy}", flush=True
        )
        shutil.copytree(project, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".warp", "__pycache__"))
        for directory in (base, copy):
            os.chmod(directory, 0o755)
        project = copy
    warp = os.path.join(os.path.dirname(sys.executable), "warp")
    c.run(f"{_quote(warp)} build --project {_quote(project)}", pty=False)
    print(f"example: http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)
    os.execv(warp, [warp, "start", "--project", project, "--port", str(port)])


@task(
    help={"only": "run only benchmarks whose name contains this", "quick": "a short smoke run (not written to docs/)"},
    optional=["only"],
)
def bench(c, only=None, quick=False):
    """Run the benchmarks side by side and write docs/benchmarks.md."""
    args = [sys.executable, os.path.join(HERE, "bench", "run.py")] + (["--only", only] if only else [])
    args += ["--quick"] if quick else []
    c.run(" ".join(_quote(a) for a in args), pty=False)


def _others_can_enter(path: str) -> bool:
    while path not in ("/", ""):
        if not os.stat(path).st_mode & 0o001:
            return False
        path = os.path.dirname(path)
    return True


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


ns = Collection(test, lint, example, bench)
ns.add_collection(warptasks.ns)  # the same warp.* tasks users get
