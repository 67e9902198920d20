"""The three ways to build the same Django project, and how each starts it.

Each side has its own copy of the project and its own package cache
(XDG_CACHE_HOME covers pip's and uv's caches and warptasks' per-Python
mod_wsgi cache), so one side's downloads never warm another's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from .djangoapp import PROJECT, copy_project
from .proc import run, shell
from .tools import Tools


def _base_env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "WARPDRIVE", "INVOKE_", "UV_", "PYTHON"))}
    env["XDG_CACHE_HOME"] = cache
    return env


@dataclass
class Side:
    name: str
    tools: Tools
    project: str
    cache: str
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # what each build printed, for the findings

    def setup(self, source: str) -> None:
        copy_project(source, self.project)
        os.makedirs(self.cache, exist_ok=True)
        self.env = _base_env(self.cache)

    def drop_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)
        os.makedirs(self.cache)

    def clean(self) -> None:
        raise NotImplementedError

    def cold_build(self) -> float:
        self.clean()
        return self.rebuild()

    def rebuild(self) -> float:
        raise NotImplementedError

    @property
    def requirements(self) -> str:
        return os.path.join(self.project, "requirements.txt")


class Warp(Side):
    """This checkout's `warp build` / `warp start`."""

    def clean(self) -> None:
        for sub in (".warp", "staticfiles"):
            shutil.rmtree(os.path.join(self.project, sub), ignore_errors=True)

    def rebuild(self) -> float:
        done = run([*self.tools.warp, "build", "--project", self.project, "--python", self.tools.python], env=self.env)
        self.outputs.append(done.output)
        return done.seconds

    def forget_other_envs(self) -> None:
        """Drop environments other than the current one, so a dependency change cannot reuse an older build."""
        envs = os.path.join(self.project, ".warp", "envs")
        current = os.path.realpath(os.path.join(self.project, ".warp", "current"))
        for name in os.listdir(envs) if os.path.isdir(envs) else ():
            path = os.path.join(envs, name)
            if os.path.realpath(path) != current:
                shutil.rmtree(path, ignore_errors=True)

    def start_argv(self, port: int) -> list[str]:
        return [*self.tools.warp, "start", "--project", self.project, "--port", str(port)]

    @property
    def bin(self) -> str:
        return os.path.join(self.project, ".warp", "current", "bin")


class Warpdrive(Side):
    """warpdrive 0.34.0: `warpdrive activate NAME` (virtualenv + warpdrive inside it), then `warpdrive build`."""

    ENV_NAME = "bench"

    def setup(self, source: str) -> None:
        super().setup(source)
        self.envs = os.path.join(os.path.dirname(self.project), "warpdrive-envs")
        self.env["PATH"] = f"{self.tools.warpdrive_bin}:{self.env.get('PATH', '/usr/bin:/bin')}"
        self.env["WARPDRIVE_VIRTUALENVS"] = self.envs
        self.outer_env = dict(self.env)
        # As root, mod_wsgi-express needs an account for its workers; warpdrive
        # takes extra server arguments from .warpdrive/server_args.
        args = ["--host", "127.0.0.1"]
        if self.tools.worker:
            args += ["--user", self.tools.worker[0], "--group", self.tools.worker[1]]
        os.makedirs(os.path.join(self.project, ".warpdrive"), exist_ok=True)
        with open(os.path.join(self.project, ".warpdrive", "server_args"), "w") as handle:
            handle.write(" ".join(args) + "\n")

    def clean(self) -> None:
        shutil.rmtree(self.envs, ignore_errors=True)
        shutil.rmtree(os.path.join(self.project, "staticfiles"), ignore_errors=True)
        self.env = dict(self.outer_env)

    def cold_build(self) -> float:
        self.clean()
        script = f'eval "$(warpdrive activate {self.ENV_NAME} --python={self.tools.python})" && warpdrive build'
        took = shell(script, cwd=self.project, env=self.env).seconds
        self._activated()
        return took

    def _activated(self) -> None:
        """The variables `eval "$(warpdrive activate NAME)"` leaves in a user's shell."""
        out = run(["warpdrive", "activate", self.ENV_NAME], cwd=self.project, env=self.outer_env).output
        env = dict(self.outer_env)
        for line in out.splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export ") :].partition("=")
                env[key] = value
        venv = os.path.join(self.envs, f"warpdrive+{self.ENV_NAME}")
        env["VIRTUAL_ENV"] = venv
        env["PATH"] = f"{venv}/bin:{env['PATH']}"
        self.env = env

    def rebuild(self) -> float:
        return run(["warpdrive", "build"], cwd=self.project, env=self.env).seconds

    def start_argv(self, port: int) -> list[str]:
        return ["warpdrive", "start"]

    def start_env(self, port: int) -> dict[str, str]:
        return {**self.env, "WARPDRIVE_HTTP_PORT": str(port)}


class Plain(Side):
    """What a hand-written deploy script does: venv, pip install, collectstatic."""

    def clean(self) -> None:
        for sub in (".venv", "staticfiles"):
            shutil.rmtree(os.path.join(self.project, sub), ignore_errors=True)

    def cold_build(self) -> float:
        self.clean()
        return shell(
            f"{self.tools.python} -m venv .venv && {self._install_and_collect()}", cwd=self.project, env=self.env
        ).seconds

    def _install_and_collect(self) -> str:
        return ".venv/bin/pip install -q -r requirements.txt mod_wsgi && .venv/bin/python manage.py collectstatic --noinput -v0"

    def rebuild(self) -> float:
        return shell(self._install_and_collect(), cwd=self.project, env=self.env).seconds

    @property
    def bin(self) -> str:
        return os.path.join(self.project, ".venv", "bin")


def sides(tools: Tools, root: str) -> tuple[Warp, Warpdrive, Plain]:
    return (
        Warp("warptasks", tools, os.path.join(root, "warp", PROJECT), os.path.join(root, "cache", "warp")),
        Warpdrive("warpdrive", tools, os.path.join(root, "warpdrive", PROJECT), os.path.join(root, "cache", "warpdrive")),
        Plain("plain venv+pip", tools, os.path.join(root, "plain", PROJECT), os.path.join(root, "cache", "plain")),
    )
