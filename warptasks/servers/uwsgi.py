"""uWSGI speaking HTTP itself, loading the app through warp_app.py and serving static files with its static map."""

from __future__ import annotations

from .base import Command, Server, StartContext, SystemNeeds, warp_app_env


def command(ctx: StartContext) -> Command:
    argv: tuple[str, ...] = (
        f"{ctx.env}/bin/uwsgi",
        "--http-socket",
        ctx.bind,
        "--master",
        "--processes",
        str(ctx.processes),
        "--threads",
        str(ctx.threads),
        "--chdir",
        ctx.home,
        "--module",
        "warp_app:application",
        "--die-on-term",
        # SIGHUP stops gracefully (the deploy's stop signal) instead of reloading.
        "--hook-master-start",
        "unix_signal:1 gracefully_kill_them_all",
        # How long a worker may take to stop before it is killed (uWSGI's default is 60 s): a request in flight
        # gets as long as gunicorn gives it, and a worker caught starting by a SIGTERM (seen under load: it then
        # ignored the stop) holds a supervisor's stop no longer than that.
        "--worker-reload-mercy",
        "30",
        "--need-app",
        "--enable-threads",
        "--disable-logging",
        "--log-5xx",
        "--log-4xx",
    )
    if ctx.static_url and ctx.static_root:
        argv += ("--static-map", f"{ctx.static_url.rstrip('/')}={ctx.static_root.rstrip('/')}")
    if ctx.reload:
        argv += ("--py-autoreload", "1")
    # Static files are uWSGI's own job here, so warp_app.py is not told about them.
    # uWSGI has no trusted proxy: warp_app.py believes the forwarded headers from that peer only (uWSGI itself takes
    # wsgi.url_scheme from any peer's X-Forwarded-Proto, which warp_app.py then undoes for other peers).
    env = warp_app_env(ctx, static=False, forwarded=True)
    return Command(argv, "uWSGI speaking HTTP, static files by its static map", env=env)


SERVER = Server(
    name="uwsgi",
    command=command,
    # SIGTERM and SIGINT cut requests in flight even with --die-on-term; SIGHUP, mapped to a graceful shutdown by the
    # command's hook, lets them finish (a worker that gets it directly finishes its request too). Its
    # --worker-reload-mercy (30 s) bounds the wait.
    stop_signal="SIGHUP",
    stop_timeout=35,
    protocol="wsgi",
    packages=("uwsgi",),
    compiled=True,
    warp_app=True,
    system=SystemNeeds(
        tools=("cc",),
        packages={"apt-get": ("gcc", "libc6-dev")},
        has="a C compiler for uWSGI",
        lacks="a C compiler",
        needs="a C compiler",
    ),
)
