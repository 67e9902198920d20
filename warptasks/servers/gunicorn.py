"""gunicorn with gthread workers, loading the app through warp_app.py (static files by servestatic).

With the app's own gunicorn configuration (APP_CONFIG, or a gunicorn.conf.py: see
:attr:`~warptasks.detect.AppSpec.gunicorn_config`), gunicorn runs with it as the S2I builder runs it, warptasks'
settings only where it is silent: they go to gunicorn_conf.py, which sets them and then runs the app's file over
them. What must win (the address warp start binds: ``--port``; the trusted proxy of a deploy; ``--reload``) stays on
the command line, which gunicorn puts above any configuration file.
"""

from __future__ import annotations

from .base import Command, Server, StartContext, SupportFile, join, warp_app_env

# The app's settings warptasks' command line replaces, and why.
OVERRIDDEN = {"bind": "--port (warp start's address)", "daemon": "warp start runs it in the foreground"}
# warptasks' defaults and the settings of the app's file that replace them.
DEFAULTS = {
    "workers": "workers",
    "threads": "threads",
    "worker_class": "worker_class",
    "chdir": "chdir",
    "accesslog": "access log",
}


def _with_app_config(ctx: StartContext, env: dict[str, str], config: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The command line when the app has its own configuration file, and the notes on what of it is kept."""
    settings = ctx.spec.gunicorn_settings
    env.update(
        {
            "WARP_GUNICORN_CONFIG": config,
            "WARP_GUNICORN_WORKERS": str(ctx.processes),
            "WARP_GUNICORN_THREADS": str(ctx.threads),
            "WARP_GUNICORN_CHDIR": ctx.home,
        }
    )
    argv: tuple[str, ...] = (f"{ctx.env}/bin/gunicorn", "--config", f"{ctx.env}/warp/gunicorn_conf.py", "--bind", ctx.bind)
    overridden = dict(OVERRIDDEN)
    if ctx.trusted_proxy:
        overridden["forwarded_allow_ips"] = "the deploy's front proxy, the one peer believed"
    if ctx.reload:
        overridden["reload"] = "--reload"
    kept = [name for name in settings if name not in overridden]
    replaced = [f"{name} (by {why})" for name, why in overridden.items() if name in settings]
    ours = [label for name, label in DEFAULTS.items() if name not in settings]
    notes = [
        f"gunicorn config: {ctx.spec.gunicorn_config} is loaded after warptasks' defaults"
        + (f"; its settings kept: {', '.join(kept)}" if kept else "; it sets none of gunicorn's settings literally")
        + (f"; replaced: {', '.join(replaced)}" if replaced else ""),
    ]
    if ours:
        notes.append(f"gunicorn config: warptasks' defaults where it is silent: {', '.join(ours)}")
    if "workers" in settings:
        notes.append(f"workers: gunicorn's workers are what {ctx.spec.gunicorn_config} sets (the sizing above is not used)")
    return argv, tuple(notes)


def command(ctx: StartContext) -> Command:
    # gunicorn sets wsgi.url_scheme from X-Forwarded-Proto of a trusted peer, but never REMOTE_ADDR or the host:
    # warp_app.py does those, from the same peer only.
    env = warp_app_env(ctx, static=True, forwarded=True)
    notes: tuple[str, ...] = ()
    argv: tuple[str, ...]
    if ctx.spec.gunicorn_config:
        argv, notes = _with_app_config(ctx, env, join(ctx.home, ctx.spec.gunicorn_config))
    else:
        argv = (
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
    if ctx.trusted_proxy:
        # Without it gunicorn keeps its own default (127.0.0.1 and ::1, or FORWARDED_ALLOW_IPS), as before.
        argv += ("--forwarded-allow-ips", ctx.trusted_proxy)
    argv += ("--reload",) if ctx.reload else ()
    argv += ("warp_app:application",)
    why = "gunicorn (gthread workers), static files by servestatic"
    if ctx.spec.gunicorn_config:
        why = f"gunicorn with the app's {ctx.spec.gunicorn_config} over warptasks' defaults, static files by servestatic"
    return Command(argv, why, env=env, notes=notes)


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
            "gunicorn config",
            "gunicorn_conf.py",
            "gunicorn settings warptasks adds (the app's own gunicorn configuration is run over them)",
        ),
    ),
)
