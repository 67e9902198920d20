"""Server configurations for the load benchmarks: warp start's own choice,
warpdrive's default, gunicorn's default, and hand-tuned settings."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .djangoapp import PROJECT
from .load import HOST, wait_for_200, wait_port_free
from .proc import BenchError, Server, run
from .sides import Plain, Warp, Warpdrive


@dataclass(frozen=True)
class Config:
    name: str
    family: str  # mod_wsgi or gunicorn: "the same server" for the within-10% target
    role: str  # auto, reference, default or tuned
    launch: Callable[[int], tuple[list[str], str, dict[str, str]]]  # port -> argv, cwd, env


def mod_wsgi(
    warp: Warp,
    work: str,
    name: str,
    processes: int,
    threads: int,
    *,
    embedded: bool = False,
    max_clients: int | None = None,
    extra: tuple[str, ...] = (),
) -> Config:
    def launch(port: int) -> tuple[list[str], str, dict[str, str]]:
        project = warp.project
        os.makedirs(os.path.join(work, "servers"), exist_ok=True)
        argv = [
            f"{warp.bin}/mod_wsgi-express",
            "start-server",
            f"{PROJECT}.wsgi",
            "--application-type",
            "module",
            "--host",
            HOST,
            "--port",
            str(port),
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--working-directory",
            project,
            "--python-path",
            project,
            "--url-alias",
            "/static/",
            f"{project}/staticfiles/",
            "--server-root",
            os.path.join(work, "servers", f"mod_wsgi-{port}"),
            "--log-to-terminal",
        ]
        argv += ["--embedded-mode"] if embedded else []
        argv += ["--max-clients", str(max_clients)] if max_clients else []
        argv += list(extra)
        if warp.tools.worker:
            argv += ["--user", warp.tools.worker[0], "--group", warp.tools.worker[1]]
        return argv, project, dict(warp.env)

    return Config(name, "mod_wsgi", "tuned", launch)


def gunicorn(plain: Plain, name: str, args: tuple[str, ...], role: str = "tuned") -> Config:
    def launch(port: int) -> tuple[list[str], str, dict[str, str]]:
        return ([f"{plain.bin}/gunicorn", "--bind", f"{HOST}:{port}", *args, f"{PROJECT}.wsgi"], plain.project, dict(plain.env))

    return Config(name, "gunicorn", role, launch)


def warp_auto(warp: Warp) -> Config:
    return Config(
        "warp start (automatic)", "mod_wsgi", "auto", lambda port: (warp.start_argv(port), warp.project, dict(warp.env))
    )


def warp_direct(warp: Warp) -> Config:
    """The exact server command warp start would exec (from `warp plan --json`), run without warp's own checks."""

    def launch(port: int) -> tuple[list[str], str, dict[str, str]]:
        out = run(
            [*warp.tools.warp, "plan", "--project", warp.project, "--python", warp.tools.python, "--port", str(port), "--json"],
            env=warp.env,
        ).output
        step = json.loads(out[out.index("{") :])["start"]["server"]
        env = {**warp.env, **step["env"]}
        env["PATH"] = ":".join([*step.get("path", []), env.get("PATH", "/usr/bin:/bin")])
        return list(step["argv"]), step["cwd"], env

    return Config("warp start's server command, run directly", "mod_wsgi", "diagnostic", launch)


def warpdrive_default(wd: Warpdrive) -> Config:
    return Config(
        "warpdrive start (default: daemon 1x5)",
        "mod_wsgi",
        "reference",
        lambda port: (wd.start_argv(port), wd.project, wd.start_env(port)),
    )


def start(config: Config, port: int, logs: str, timeout: float = 60) -> tuple[Server, float]:
    """Start ``config`` on ``port``; returns the server and seconds to its first 200."""
    wait_port_free(port)
    argv, cwd, env = config.launch(port)
    os.makedirs(logs, exist_ok=True)
    server = Server(argv, cwd=cwd, env=env, log=os.path.join(logs, f"{config.name.split(' (')[0].replace(' ', '_')}-{port}.log"))
    try:
        wait_for_200(port, timeout, alive=server.alive)
        took = time.perf_counter() - server.started
    except BenchError as error:
        server.stop()
        raise BenchError(f"{config.name}: {error}\n{server.log_tail()}") from None
    return server, took
