"""What warptasks knows about a server, as frozen data, and the start context its command is made from.

A :class:`Server` is plain data plus one function, ``command``, that turns a
:class:`StartContext` into the :class:`Command` to exec. The planners read
these fields instead of testing server names, so a new server is one module
here and one line in the registry.

Nothing here imports the planners: they import this, and a step of a plan is
made from a :class:`Check` or :class:`Command` by :mod:`warptasks.plan.start`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError
from ..scripts import command as script

if TYPE_CHECKING:
    from ..detect import AppSpec
    from ..facts import Facts

# What a server serves: WSGI apps, ASGI apps, or nothing of its own ("own": the app's script is the server).
Protocol = Literal["wsgi", "asgi", "own"]


def join(*parts: str) -> str:
    # The same normalised POSIX join as the planners': paths are the target's, never this machine's.
    return posixpath.normpath(posixpath.join(*parts))


@dataclass(frozen=True)
class CapacityRule:
    """How a server turns the processes the resources allow into processes and threads.

    ``why`` is formatted with ``threads``; it follows the processes' own reason,
    or replaces it for a single-process server (whose threads then grow with
    the processes it would have had, never below ``threads``).
    """

    threads: int = 2
    why: str = "{threads} threads each, to overlap I/O"
    single_process: bool = False


@dataclass(frozen=True)
class SupportFile:
    """A file of :mod:`warptasks.scripts` the build writes into the environment's ``warp/`` folder."""

    step: str  # the build step's name
    script: str  # the file in warptasks/scripts, and its name in the environment
    why: str


# Servers that load the app through warp_app.py (module, Paste Deploy or ASGI, plus static files).
WARP_APP = SupportFile("support", "warp_app.py", "warp_app.py loads the app and serves static files")


@dataclass(frozen=True)
class SystemNeeds:
    """What an image's base must have to build a server, and the system packages that provide it."""

    tools: tuple[Literal["apxs", "cc"], ...]  # the Facts attributes that must be set on the base
    packages: Mapping[str, tuple[str, ...]]  # per package manager
    has: str  # "the base image has {has}"
    lacks: str  # "the base image lacks {lacks}"
    needs: str  # "{server} needs {needs}, which the base image lacks"
    # What a multi-stage image's runtime stage installs instead of ``packages`` (no compiler, no headers): per package
    # manager, only what the built server loads when it runs.
    runtime: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildContext:
    """What a server's build check looks at: where the app and its environment will be, and the target."""

    spec: AppSpec
    facts: Facts
    home: str
    env: str


@dataclass(frozen=True)
class StartContext:
    """Everything a server's command is made from; sizes and static files already decided."""

    spec: AppSpec
    facts: Facts
    env: str  # the environment the build made current
    home: str  # where the app lives on the target
    host: str
    port: int
    processes: int
    threads: int
    static_url: str | None  # None: static files are not served by the server
    static_root: str
    # A folder for the server's own runtime files (the project's environment folder's run/): never a shared /tmp path.
    runtime: str
    reload: bool = False
    user: str | None = None
    group: str | None = None
    max_clients: int | None = None
    # The front proxy's address: X-Forwarded-For/-Proto/-Host are believed from that peer only; None: from no one.
    trusted_proxy: str | None = None

    @property
    def python(self) -> str:
        return f"{self.env}/bin/python"

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def serves_static(self) -> bool:
        return bool(self.static_url and self.static_root)


@dataclass(frozen=True)
class Check:
    """A command that must succeed before the server starts."""

    name: str
    argv: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Command:
    """The server's command line, what it adds to the environment, its checks, and why."""

    argv: tuple[str, ...]
    why: str
    env: Mapping[str, str] = field(default_factory=dict)  # added after the hooks' variables, HOST and PORT
    checks: tuple[Check, ...] = ()  # after the port check
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    """One server: what to install, what it serves, how it is sized, and its command."""

    name: str
    command: Callable[[StartContext], Command]
    protocol: Protocol = "wsgi"
    packages: tuple[str, ...] = ()
    # Compiled against the Python it runs in: a build for one Python installation is never reused for another of
    # the same version, so its build cache (and, with uv, the wheel pip keeps) is per Python.
    compiled: bool = False
    # Shipped as source to hosts without an index (--wheels): compiled there against the host's own libraries.
    source_on_host: bool = False
    warp_app: bool = False  # loads the app through warp_app.py (which also brings Paste Deploy apps)
    support_files: tuple[SupportFile, ...] = ()  # besides warp_app.py
    system: SystemNeeds | None = None
    capacity: CapacityRule = CapacityRule()
    reload: bool = True  # False: --reload is refused
    # Started as root, it runs its own workers as an unprivileged account and must stay root itself (Apache binds,
    # then drops its children): the planner does not wrap it in run_as.py as it does every other server.
    drops_privileges: bool = False
    aliases: tuple[str, ...] = ()
    # The reason it is chosen for its protocol under --server auto ({target}: the app's entry); "": never chosen.
    default_why: str = ""
    # Raises a ConfigError when the server cannot be built there; returns warnings for the build's notes.
    check_build: Callable[[BuildContext], tuple[str, ...]] | None = None
    # How the deploy stops it (sent to its whole process group, or by systemd to its unit): the signal that lets the
    # requests in flight finish, and the seconds that may take before SIGTERM, then SIGKILL, follow.
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 20

    def install_packages(self, kind: str) -> tuple[str, ...]:
        """The packages a build installs for an app of ``kind``: warp_app.py loads Paste Deploy apps with PasteDeploy."""
        return self.packages + (("PasteDeploy",) if kind == "paste" and self.warp_app else ())

    def files(self) -> tuple[SupportFile, ...]:
        """The support files the build writes, warp_app.py first."""
        return ((WARP_APP,) if self.warp_app else ()) + self.support_files


# The headers the front proxy sets and a server believes from it (and from no other peer).
FORWARDED_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")


def warp_app_env(ctx: StartContext, *, static: bool, forwarded: bool = False) -> dict[str, str]:
    """What warp_app.py reads to load the app (and to serve static files, when ``static``).

    ``forwarded``: the server cannot believe the forwarded headers from the proxy itself, so warp_app.py does it
    (when there is a trusted proxy).
    """
    spec = ctx.spec
    paste = spec.kind == "paste"
    env = {
        "WARP_APP_TYPE": "paste" if paste else "module",
        "WARP_APP_TARGET": join(ctx.home, spec.target) if paste else spec.target,
        "WARP_APP_PROTOCOL": "asgi" if spec.is_asgi else "wsgi",
    }
    if static and ctx.static_url and ctx.static_root:
        env.update({"WARP_STATIC_URL": ctx.static_url, "WARP_STATIC_ROOT": ctx.static_root})
    if ctx.reload:
        env["WARP_RELOAD"] = "1"
    if forwarded and ctx.trusted_proxy:
        env["WARP_TRUSTED_PROXY"] = ctx.trusted_proxy
    env["PYTHONPATH"] = f"{ctx.env}/warp:{ctx.home}"
    return env


def worker_account(ctx: StartContext) -> tuple[str, str, str]:
    """(user, group, why): the unprivileged account a server started as root runs as (Apache: its workers).

    ``--user``/``--group`` when given, else the first of www-data, nobody... that exists on the target.
    """
    if ctx.user:
        return ctx.user, ctx.group or ctx.user, "--user"
    for user, group in ctx.facts.worker_accounts:
        return user, ctx.group or group, "the first unprivileged account there; --user/--group choose another"
    raise ConfigError(
        "running as root, and no non-root account (www-data, nobody) exists for the server to run as",
        "pass --user and --group naming an unprivileged account",
    )


def read_check(ctx: StartContext, user: str, group: str, who: str, extra: tuple[str, ...] = ()) -> Check:
    """The check that ``user`` can use the environment's Python and read the environment, the app and ``extra``."""
    spec = ctx.spec
    paths = [ctx.python, ctx.env, ctx.home] + ([join(ctx.home, spec.target)] if spec.kind == "paste" else []) + list(extra)
    return Check(
        "worker can read",
        script(ctx.python, "read_check.py", user, group, ctx.python, *paths),
        f"{who} run as {user}:{group} and must read the Python, the environment and the app",
    )
