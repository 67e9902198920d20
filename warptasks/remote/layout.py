"""Where things are on a host, and what a release is: paths under the deploy path, the shared secrets file.

Pure: nothing here reaches a host.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from ..detect import AppSpec
from ..errors import ConfigError
from ..plan import Step, plan_command
from ..scripts import command as script
from ..scripts import envfile

SHARED_ENV = "shared/environment"


@dataclass(frozen=True)
class Layout:
    """Paths on a host, under the deploy path."""

    root: str

    def release(self, rid: str) -> str:
        return posixpath.join(self.root, "releases", rid)

    @property
    def shared(self) -> str:
        return posixpath.join(self.root, "shared")

    @property
    def envs(self) -> str:
        return posixpath.join(self.root, "shared", "envs")

    @property
    def wheels(self) -> str:
        return posixpath.join(self.root, "shared", "wheels")

    @property
    def env_file(self) -> str:
        return posixpath.join(self.root, SHARED_ENV)


@dataclass(frozen=True)
class Source:
    """The release's files: their folder, a NUL-separated list of them (for rsync) and an archive (for SFTP)."""

    root: str
    list_file: str
    archive: bytes


@dataclass(frozen=True)
class Release:
    """One deploy's release: its id, and what the host records it is made of."""

    id: str
    commit: str | None
    source: str  # digest of the files and what shapes the build: the same source redeploys as a no-op
    deps: str  # digest of the dependencies and the server's packages: a host with these reuses its environment


def with_shared_environment(step: Step, layout: Layout, python: str, values: str) -> tuple[Step, str]:
    """``step`` made to get its environment from files, never from a shell or its command line; and ``values``'s text.

    Its own environment (the project's environment file, the hooks' variables) moves off its command line, which
    ``ps`` shows to every account on the host, into the file ``values`` the deploy writes (0600) with the returned
    text. envfile.py reads that file, then the host's secret ``shared/environment`` (whose values win, as when a
    shell sourced it), literally: ``$``, backticks and quotes in a value are kept, never run. Only ``PATH``, which
    extends the host's own, stays on the command line.
    """
    try:
        text = envfile.render(dict(step.env))
    except ValueError as error:
        hint = "environment values cannot hold line breaks; fix the environment file"
        raise ConfigError(f"{step.name}: {error}", hint) from None
    argv = script(python, "envfile.py", values, layout.env_file, "--", *step.argv)
    return replace(step, argv=argv, env={}), text


def backend_port(public: int, current_port: int | None) -> int:
    """The backend port for a new release: whichever of public+1/public+2 the live one is not on."""
    first, second = public + 1, public + 2
    return second if current_port == first else first


def migrate_step(spec: AppSpec, project: str, env: str) -> Step | None:
    """The same migrate command as ``warp migrate``; the deploy runs it with the shared environment file."""
    return plan_command(spec, project, env, "migrate")
