"""Where things are on a host, and what a release is: paths under the deploy path, the shared secrets file.

Pure: nothing here reaches a host.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from ..detect import AppSpec
from ..plan import Step, plan_command

SHARED_ENV = "shared/environment"
_SOURCE_SHARED = 'if [ -r "$1" ]; then set -a && . "$1" && set +a; fi && shift && exec "$@"'


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


def with_shared_environment(step: Step, layout: Layout) -> Step:
    """``step`` run after sourcing the host's secret ``shared/environment`` file."""
    return replace(step, argv=("sh", "-c", _SOURCE_SHARED, "sh", layout.env_file, *step.argv))


def backend_port(public: int, current_port: int | None) -> int:
    """The backend port for a new release: whichever of public+1/public+2 the live one is not on."""
    first, second = public + 1, public + 2
    return second if current_port == first else first


def migrate_step(spec: AppSpec, project: str, env: str, layout: Layout) -> Step | None:
    """The same migrate command as ``warp migrate``, seeing the shared environment file."""
    step = plan_command(spec, project, env, "migrate")
    return None if step is None else with_shared_environment(step, layout)
