"""Apache/mod_wsgi through mod_wsgi-express: the default for WSGI apps, as in warpdrive."""

from __future__ import annotations

import hashlib
import re

from ..errors import ConfigError
from ..scripts import command as script
from .base import (
    FORWARDED_HEADERS,
    BuildContext,
    Check,
    Command,
    Server,
    StartContext,
    SystemNeeds,
    join,
    read_check,
    worker_account,
)

# mod_wsgi-express writes paths unquoted into Apache's config and into a shell
# script (apachectl); outside this set they break it or are run as shell code.
_APACHE_SAFE = re.compile(r"^[A-Za-z0-9_./+@%,:=-]*$")


def require_apache_safe(*paths: str) -> None:
    for path in paths:
        if not _APACHE_SAFE.match(path):
            raise ConfigError(
                f"mod_wsgi-express cannot serve from {path!r}: it writes paths unquoted into Apache's configuration "
                "and its apachectl shell script, where spaces, quotes, $, ; or ` would break it or run as commands",
                "move the project to a path of letters, digits and ._-/ only, or use --server gunicorn (or uwsgi, waitress)",
            )


# warpdrive's MOD_WSGI_* settings, passed on to mod_wsgi-express as it did.
MOD_WSGI_VALUE_SETTINGS = (
    "ACCESS_LOG",
    "INITIAL_WORKERS",
    "MINIMUM_SPARE_WORKERS",
    "MAXIMUM_SPARE_WORKERS",
    "LIMIT_REQUEST_BODY",
    "MAXIMUM_REQUESTS",
    "INACTIVITY_TIMEOUT",
    "REQUEST_TIMEOUT",
    "CONNECT_TIMEOUT",
    "SOCKET_TIMEOUT",
    "QUEUE_TIMEOUT",
    "HEADER_TIMEOUT",
    "HEADER_MAX_TIMEOUT",
    "HEADER_MIN_RATE",
    "BODY_TIMEOUT",
    "BODY_MAX_TIMEOUT",
    "BODY_MIN_RATE",
    "SERVER_BACKLOG",
    "DAEMON_BACKLOG",
    "SERVER_MPM",
    "LOG_LEVEL",
    "MAX_CLIENTS",
)
MOD_WSGI_FLAG_SETTINGS = ("RELOAD_ON_CHANGES", "SERVER_STATUS")


def mod_wsgi_env_options(environment: dict[str, str]) -> tuple[str, ...]:
    """mod_wsgi-express options from MOD_WSGI_* settings in the environment file."""
    args: list[str] = []
    for name in MOD_WSGI_VALUE_SETTINGS:
        value = environment.get(f"MOD_WSGI_{name}")
        if value:
            args += [f"--{name.lower().replace('_', '-')}", value]
    for name in MOD_WSGI_FLAG_SETTINGS:
        if environment.get(f"MOD_WSGI_{name}", "").lower() not in ("", "0", "false", "no", "off"):
            args.append(f"--{name.lower().replace('_', '-')}")
    return tuple(args)


# Apache binds a daemon socket at <folder>/wsgi.<pid>.u<uid>.<id>.sock (mod_wsgi-express turns socket rotation off),
# and a Unix socket's path holds at most 107 bytes: with the widest pid, uid and id, the folder may have this many.
_SOCKET_FOLDER_ROOM = 107 - len("/wsgi.4194304.u4294967295.99.sock")


def server_root(ctx: StartContext) -> str:
    """mod_wsgi-express's folder: its Apache configuration, apachectl, envvars, pid file and (when they fit) sockets.

    Its default, /tmp/mod_wsgi-HOST:PORT:UID, is a name any local account can make first; mod_wsgi-express
    reuses it, and its apachectl sources the envvars file there: as root, another account's file would run as root.
    """
    return join(ctx.runtime, re.sub(r"[^A-Za-z0-9.:-]", "_", f"{ctx.host}-{ctx.port}"))


def socket_folder(root: str, euid: int | None) -> str:
    """Where Apache binds mod_wsgi's daemon sockets: the server root, or, when its path is too long for a socket, a short
    folder of their own per server root and account, checked like the server root at every start.

    As root that folder is in /run, where no other account can make it first (in /tmp, another account that saw
    the release's name could, and the start would be refused); another account's goes to /tmp, the one short
    folder it can always write to.
    """
    if len(root) <= _SOCKET_FOLDER_ROOM:
        return root
    digest = hashlib.sha256(root.encode()).hexdigest()[:12]
    if euid == 0:
        return f"/run/warp-wsgi-{digest}"
    account = "x" if euid is None else str(euid)
    return f"/tmp/warp-wsgi-{account}-{digest}"


def _private_folders(ctx: StartContext, group: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The words before mod_wsgi-express that make (or check) its folders private, and the options naming them.

    private_dirs.py is part of the command itself, so a server started again without warp (systemd at boot, after
    /tmp was emptied) gets its folders made and checked too. As root, ``group`` (the workers') may enter them:
    Apache's children connect to the daemon sockets, and the daemons read the handler script.
    """
    root = server_root(ctx)
    sockets = socket_folder(root, ctx.facts.euid)
    require_apache_safe(root, sockets)
    folders = (root,) if sockets == root else (root, sockets)
    prefix = script(ctx.python, "private_dirs.py", group, *folders, "--")
    return prefix, ("--server-root", root) + (("--socket-prefix", sockets) if sockets != root else ())


def _application(ctx: StartContext) -> tuple[str, ...]:
    spec = ctx.spec
    if spec.kind == "paste":
        return (join(ctx.home, spec.target), "--application-type", "paste")
    _refuse_factory(spec.target)
    module, _, callable_ = spec.target.partition(":")
    return (module, "--application-type", "module", "--callable-object", callable_ or "application")


def _refuse_factory(target: str) -> None:
    """mod_wsgi-express reads the app as a module's attribute: gunicorn's factory call (``mod:create_app()``) is not one."""
    if target.endswith(")"):
        raise ConfigError(
            f"mod_wsgi cannot serve {target!r}: it loads an application object by name, not by calling a factory",
            "serve it with another server (--server gunicorn), or name the application object itself in wsgi_app",
        )


def _as_root(ctx: StartContext) -> tuple[tuple[str, ...], Check, str]:
    """Apache started as root runs its workers as another account, which must be able to read everything they load."""
    user, group, why = worker_account(ctx)
    check = read_check(ctx, user, group, "Apache's workers")
    return ("--user", user, "--group", group), check, f"running as root: Apache's workers run as {user}:{group} ({why})"


def command(ctx: StartContext) -> Command:
    require_apache_safe(ctx.home, ctx.env, ctx.static_root, ctx.static_url or "")
    max_clients = ctx.max_clients or max(400, ctx.processes * ctx.threads * 4)
    argv = (f"{ctx.env}/bin/mod_wsgi-express", "start-server", *_application(ctx))
    argv += (
        "--host",
        ctx.host,
        "--port",
        str(ctx.port),
        "--processes",
        str(ctx.processes),
        "--threads",
        str(ctx.threads),
        "--max-clients",
        str(max_clients),
        # Start every Apache worker up front: otherwise mod_wsgi-express starts a fifth of them and a burst of
        # slow clients (connections that never finish their headers) holds them all for seconds while Apache
        # spawns more, and normal requests wait (measured by the benchmarks with 200 slow clients).
        "--initial-workers",
        "1",
        # ...and keep them all (MaxSpareThreads: every thread), and ask Apache for one process's worth of idle threads
        # (MinSpareThreads: ThreadsPerChild, mod_wsgi-express's least). Left out, mod_wsgi-express takes the spare
        # minimum from --initial-workers, every thread: with all of them started Apache can add none, and logged
        # "server is within MinSpareThreads of MaxRequestWorkers" as an error at every start.
        "--minimum-spare-workers",
        "0",
        "--maximum-spare-workers",
        "1",
        "--working-directory",
        ctx.home,
        "--python-path",
        ctx.home,
        "--log-to-terminal",
        "--startup-log",
        "--locale",
        "C.UTF-8",
    )
    if ctx.static_url and ctx.static_root:
        argv += ("--url-alias", ctx.static_url, ctx.static_root)
    argv += mod_wsgi_env_options(ctx.spec.environment)
    if ctx.reload:
        argv += ("--reload-on-changes",)
    if ctx.trusted_proxy:
        # mod_wsgi believes them only from that peer: REMOTE_ADDR from X-Forwarded-For, HTTPS (so wsgi.url_scheme)
        # from X-Forwarded-Proto, HTTP_HOST from X-Forwarded-Host; from any other peer it drops the headers.
        require_apache_safe(ctx.trusted_proxy)
        for header in FORWARDED_HEADERS:
            argv += ("--trust-proxy-header", header)
        argv += ("--trust-proxy", ctx.trusted_proxy)
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = ()
    group = ""
    if ctx.facts.euid == 0:
        account, check, why = _as_root(ctx)
        argv += account
        checks, notes, group = (check,), (why,), account[-1]
    prefix, folders = _private_folders(ctx, group)
    why = "Apache/mod_wsgi via mod_wsgi-express, daemon mode" + (
        ", serving static files with an Apache alias" if ctx.static_url else ""
    )
    return Command(prefix + argv + folders, why, checks=checks, notes=notes)


def check_build(ctx: BuildContext) -> tuple[str, ...]:
    """Paths Apache can use and apxs to compile against; a warning when root's Apache workers could not read the Python."""
    if ctx.spec.kind != "paste":
        _refuse_factory(ctx.spec.target)
    require_apache_safe(ctx.home, ctx.env)
    if not ctx.facts.apxs:
        raise ConfigError(
            "mod_wsgi needs Apache's apxs tool to compile, and it is not installed on the target",
            "install Apache's development package (Debian/Ubuntu: apt-get install apache2-dev; "
            "Fedora/RHEL: dnf install httpd-devel), or choose another server with --server gunicorn",
        )
    python = ctx.facts.python
    if ctx.facts.euid == 0 and not python.others_can_read:
        return (
            f"warning: {python.executable} is not readable by other accounts, but as root Apache runs its "
            "workers as one: start will fail. Build with a system Python (--python /usr/bin/python3)",
        )
    return ()


SERVER = Server(
    name="mod_wsgi",
    command=command,
    # Apache's graceful-stop: requests in flight finish (measured through mod_wsgi-express's process group; SIGTERM
    # cuts them). No GracefulShutdownTimeout is set, so mod_wsgi's request-timeout (60s) bounds the wait.
    stop_signal="SIGWINCH",
    stop_timeout=65,
    protocol="wsgi",
    packages=("mod_wsgi",),
    compiled=True,
    source_on_host=True,
    system=SystemNeeds(
        tools=("apxs", "cc"),
        packages={"apt-get": ("apache2", "apache2-dev", "gcc", "libc6-dev")},
        has="Apache's apxs and a C compiler for mod_wsgi",
        lacks="Apache and its development files (apxs) and a C compiler",
        needs="Apache development files (apxs) and a C compiler",
        # Apache's server and modules (apache2-bin: no apache2-dev, no apxs) and /etc/mime.types its config names.
        runtime={"apt-get": ("apache2-bin", "media-types")},
    ),
    drops_privileges=True,
    aliases=("mod_wsgi-express", "modwsgi"),
    default_why="WSGI app: Apache/mod_wsgi (mod_wsgi-express) is the default",
    check_build=check_build,
)
