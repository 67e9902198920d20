"""gunicorn with gthread workers, loading the app through warp_app.py (static files by servestatic)."""

from __future__ import annotations

from .base import Command, Server, StartContext, SupportFile, join, warp_app_env


def command(ctx: StartContext) -> Command:
    # gunicorn sets wsgi.url_scheme from X-Forwarded-Proto of a trusted peer, but never REMOTE_ADDR or the host:
    # warp_app.py does those, from the same peer only.
    env = warp_app_env(ctx, static=True, forwarded=True)
    argv: tuple[str, ...] = (
        f"{ctx.env}/bin/gunicorn",
        "--bind",
        ctx.bind,
        "--workers",
        str(ctx.processes),
        "--threads",
        str(ctx.threads),
        "--worker-class",
        "gthread",
        "--chdir",
        ctx.home,
        "--access-logfile",
        "-",
        "--config",
        f"{ctx.env}/warp/gunicorn_conf.py",
    )
    app_config = ctx.spec.environment.get("APP_CONFIG")
    if app_config:
        # S2I's gunicorn settings file, read by gunicorn_conf.py after warptasks' own.
        env["WARP_GUNICORN_CONFIG"] = join(ctx.home, app_config)
    if ctx.trusted_proxy:
        # Without it gunicorn keeps its own default (127.0.0.1 and ::1, or FORWARDED_ALLOW_IPS), as before.
        argv += ("--forwarded-allow-ips", ctx.trusted_proxy)
    argv += ("--reload",) if ctx.reload else ()
    argv += ("warp_app:application",)
    return Command(argv, "gunicorn (gthread workers), static files by servestatic", env=env)


SERVER = Server(
    name="gunicorn",
    command=command,
    # SIGTERM is gunicorn's graceful stop: workers finish their requests within its graceful_timeout (30s).
    stop_signal="SIGTERM",
    stop_timeout=35,
    protocol="wsgi",
    packages=("gunicorn", "servestatic"),
    warp_app=True,
    support_files=(
        SupportFile(
            "gunicorn config", "gunicorn_conf.py", "gunicorn settings warptasks adds (the app's APP_CONFIG is read after)"
        ),
    ),
)
