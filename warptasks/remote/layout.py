"""Where things are on a host, and what a release is: paths under the deploy path, the shared secrets file.

Pure: nothing here reaches a host.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..detect import AppSpec
from ..errors import ConfigError
from ..plan import Step, plan_command
from ..scripts import command as script
from ..scripts import envfile
from .front import LETS_ENCRYPT, ROOT_HOME, FrontHost, Site, Tls, app_id, check_site
from .hosts import HostTarget

if TYPE_CHECKING:
    from ..settings import DeploySettings

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
    def data(self) -> str:
        """The app's own writable folder (its account's, on a root deploy): ``WARP_DATA_DIR`` in its environment."""
        return posixpath.join(self.root, "shared", "data")

    @property
    def env_file(self) -> str:
        return posixpath.join(self.root, SHARED_ENV)

    @property
    def upstream(self) -> str:
        """``host:port`` of the live server, rewritten at each switch: what your own front reads with ``--proxy none``."""
        return posixpath.join(self.root, "shared", "upstream")


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
    extends the host's own, stays on the command line. ``WARP_DATA_DIR`` names the app's writable folder
    (``shared/data``), unless the step sets it itself.
    """
    try:
        text = envfile.render({"WARP_DATA_DIR": layout.data, **step.env})
    except ValueError as error:
        hint = "environment values cannot hold line breaks; fix the environment file"
        raise ConfigError(f"{step.name}: {error}", hint) from None
    argv = script(python, "envfile.py", values, layout.env_file, "--", *step.argv)
    return replace(step, argv=argv, env={}), text


def backend_port(first: int, current_port: int | None) -> int:
    """The backend port for a new release: whichever of ``first`` and the next one the live release is not on."""
    return first + 1 if current_port == first else first


def front_site(settings: DeploySettings, target: HostTarget, home: str, tls_tag: str = "") -> tuple[FrontHost, Site]:
    """The host's front (in ``home``) and the app's site on it, from the deploy's settings and the host's own.

    With domains: HTTPS for them on the front's HTTPS port (ACME, or the certificate files given: ``tls_tag``, from
    their content, names their copies on the host, so a new certificate is a changed site), plain HTTP
    redirected; without TLS (``tls`` off) or domains, plain HTTP on the public port, by host name when there are
    names.
    """
    s = settings
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together", "give both: the certificate (with its chain) and its key")
    host = FrontHost(home=home or ROOT_HOME, listen=target.listen or s.listen, http_port=s.http_port, https_port=s.https_port)
    domains = target.domains or s.domains
    if s.tls_cert and not (domains and s.tls):
        raise ConfigError("--tls-cert is for the --domain names, served over HTTPS", "give --domain NAME (and not --no-tls)")
    tls, port = Tls(), int(target.app_port or s.port)
    if domains and s.tls:
        port = s.https_port
        if s.tls_cert or s.tls_key:
            folder = posixpath.join(host.home, "certs", app_id(s.path))
            tag = tls_tag or "unread"
            tls = Tls("files", cert=posixpath.join(folder, f"{tag}.crt"), key=posixpath.join(folder, f"{tag}.key"))
        else:
            tls = Tls("acme", ca=s.acme_ca or LETS_ENCRYPT, email=s.acme_email)
    site = Site(app=app_id(s.path), hosts=domains, path_prefix=s.path_prefix, port=port, tls=tls)
    check_site(site, host)
    return host, site


def migrate_step(spec: AppSpec, project: str, env: str) -> Step | None:
    """The same migrate command as ``warp migrate``; the deploy runs it with the shared environment file."""
    return plan_command(spec, project, env, "migrate")


def check_front(settings: DeploySettings, targets: list[HostTarget]) -> None:
    """Refuse, before any host is touched, a front the settings describe wrongly (names, prefix, TLS files)."""
    if settings.proxy != "caddy":
        return
    for target in targets:
        front_site(settings, target, ROOT_HOME)
    for name in (settings.tls_cert, settings.tls_key):
        if name and not os.path.isfile(os.path.expanduser(name)):
            hint = "--tls-cert and --tls-key name local files; the deploy uploads them"
            raise ConfigError(f"TLS file {name} does not exist here", hint)
