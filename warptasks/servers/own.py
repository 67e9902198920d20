"""The app's own server: app.sh, app.py or a Procfile's web: line, run with HOST and PORT set.

Its user-visible name stays "shell", warpdrive's name for it.
"""

from __future__ import annotations

from ..scripts import source
from .base import Command, Server, StartContext


def command(ctx: StartContext) -> Command:
    spec = ctx.spec
    argv: tuple[str, ...]
    if spec.kind == "shell":
        argv = ("bash", spec.target)
    elif spec.kind == "script":
        # As `python app.py` runs it, but an app.py that ends with status 0 having listened on nothing is a failure.
        argv = (ctx.python, "-c", source("run_script.py"), spec.target)
    else:
        # A Procfile line is a shell command; exec so the server gets the signals.
        argv = ("bash", "-c", f"exec {spec.target}")
    return Command(argv, f"the app's own {spec.target}, with HOST and PORT set")


SERVER = Server(
    name="shell",
    command=command,
    protocol="own",
    # The app binds the port and reloads (or not) as it likes: --reload was never refused for it.
    reload=True,
    default_why="the app's own {target} starts its server",
)
