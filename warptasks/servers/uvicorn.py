"""uvicorn for ASGI apps, loading the app through warp_app.py (static files by servestatic)."""

from __future__ import annotations

from .base import CapacityRule, Command, Server, StartContext, warp_app_env


def command(ctx: StartContext) -> Command:
    argv: tuple[str, ...] = (f"{ctx.env}/bin/uvicorn", "warp_app:application", "--host", ctx.host, "--port", str(ctx.port))
    # uvicorn's reloader runs a single worker: --workers and --reload do not go together.
    argv += ("--reload",) if ctx.reload else ("--workers", str(ctx.processes))
    if ctx.trusted_proxy:
        # From that peer: the scope's client from X-Forwarded-For, its scheme from X-Forwarded-Proto. uvicorn ignores
        # X-Forwarded-Host; the front keeps the original Host header, which is what the app reads.
        argv += ("--proxy-headers", "--forwarded-allow-ips", ctx.trusted_proxy)
    return Command(argv, "uvicorn (ASGI), static files by servestatic", env=warp_app_env(ctx, static=True))


SERVER = Server(
    name="uvicorn",
    command=command,
    # SIGTERM: uvicorn stops accepting and waits for its requests (with --workers, each worker does).
    stop_signal="SIGTERM",
    stop_timeout=30,
    protocol="asgi",
    packages=("uvicorn", "servestatic"),
    warp_app=True,
    capacity=CapacityRule(threads=1, why="asynchronous, so 1 thread each"),
    aliases=("asgi",),
    default_why="ASGI app: uvicorn (mod_wsgi serves only WSGI)",
)
