"""waitress: one process of threads, loading the app through warp_app.py (static files by servestatic)."""

from __future__ import annotations

from .base import FORWARDED_HEADERS, CapacityRule, Command, Server, StartContext, warp_app_env


def command(ctx: StartContext) -> Command:
    argv: tuple[str, ...] = (
        f"{ctx.env}/bin/waitress-serve",
        f"--listen={ctx.bind}",
        f"--threads={ctx.threads}",
        "--connection-limit=1000",
    )
    if ctx.trusted_proxy:
        # From that peer: REMOTE_ADDR, wsgi.url_scheme and HTTP_HOST; from any other, the headers are removed.
        argv += (
            f"--trusted-proxy={ctx.trusted_proxy}",
            f"--trusted-proxy-headers={' '.join(h.lower() for h in FORWARDED_HEADERS)}",
            "--clear-untrusted-proxy-headers",
        )
    argv += ("warp_app:application",)
    return Command(argv, "waitress, static files by servestatic", env=warp_app_env(ctx, static=True))


SERVER = Server(
    name="waitress",
    command=command,
    # SIGINT ends waitress's loop and lets its threads finish their requests; SIGTERM ends the process at once.
    stop_signal="SIGINT",
    stop_timeout=30,
    protocol="wsgi",
    packages=("waitress", "servestatic"),
    warp_app=True,
    # One process: all concurrency is threads.
    capacity=CapacityRule(
        threads=4, why="1 process (waitress is single-process), {threads} threads: 4 per CPU", single_process=True
    ),
    reload=False,
)
