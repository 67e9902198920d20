"""warp deploy / status / rollback: the local build and start, run on hosts over SSH.

The plan is the one ``warp build`` and ``warp start`` use: detection reads the
source tree being shipped, facts come from the host (through the same probe),
:func:`plan_build` plans the build in the new release folder and
:func:`plan_start` renders the server command. Only the runner differs: a
fabric ``Connection`` per host.

Per host: lock -> upload -> build -> (once, on one host) migrate -> start the
new release on a free backend port -> health check -> switch ``current`` ->
stop the old server -> prune. Hosts run each phase in parallel; no host
switches unless every host got that far (``allow_partial`` says otherwise).

Zero downtime: a small front proxy (:mod:`warptasks.scripts.proxy`) owns the
public port for good and sends each new connection to whatever release
``current`` points at; two backend ports (public+1, public+2) alternate
between releases, so the new server starts beside the old one.
"""

from __future__ import annotations

import getpass
import json
import os
import posixpath
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from invoke import Context
from paramiko.ssh_exception import SSHException

from .. import __version__
from ..detect import AppSpec, detect_app
from ..errors import ConfigError, StepFailed, WarpError
from ..facts import Facts
from ..plan import (
    BuildOptions,
    StartOptions,
    Step,
    command_line,
    plan_build,
    plan_command,
    plan_start,
    untracked_dirs,
)
from ..run.executor import Say, execute, gather_facts, run_checks, run_step, tail
from ..scripts import source
from ..servers import resolve_server, server
from .hosts import HostTarget, connect, open_checked
from .upload import archive, commit_of, content_digest, release_id, rsync_step, source_files, ssh_command
from .wheels import download_steps, offline_install_env

AGENT = source("agent.py")
PROXY = source("proxy.py")

# Every deploy setting, with its default; invoke config ``warp: deploy:`` and
# task options override them.
DEPLOY_DEFAULTS: dict[str, Any] = {
    "hosts": [],
    "path": "/srv/app",
    "port": 8080,  # the public port, held by the front proxy
    "listen": "0.0.0.0",  # the front proxy's address
    "health": "/",  # path checked on the new server before the switch
    "health_host": None,  # Host header for the check (Django's ALLOWED_HOSTS)
    "health_timeout": 90,
    "keep": 5,
    "python": "python3",
    "wheels": False,
    "allow_partial": False,
    "break_lock": False,
    "lock_wait": 10,
    "drain": 2,  # seconds the old server keeps running after the switch
    "identity": None,
    "known_hosts": None,
    "accept_unknown_host": False,
    "ssh_user": None,
    "env_file": None,  # local file uploaded as shared/environment (mode 0600)
    "migrate": True,  # run the migrate hook (Django: manage.py migrate) once per deploy
    "force": False,  # deploy even to hosts whose live release is made of the same source
    "upload": "auto",  # rsync when both ends have it, else an archive over SFTP; or "rsync" / "sftp"
    "systemd": True,  # servers as systemd units where systemd runs (as root); else a process with a pidfile
}

SHARED_ENV = "shared/environment"
_SOURCE_SHARED = 'if [ -r "$1" ]; then set -a && . "$1" && set +a; fi && shift && exec "$@"'


class DeployFailed(WarpError):
    """A deploy, rollback or status did not complete on some host."""


@dataclass(frozen=True)
class Source:
    """The release's files: their folder, a NUL-separated list of them (for rsync) and an archive (for SFTP)."""

    root: str
    list_file: str
    archive: bytes


@dataclass
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


def agent_step(python: str, action: str, /, **request: Any) -> Step:
    """The step that runs one action of :mod:`warptasks.scripts.agent` on the host."""
    return Step(f"deploy {action}", (python, "-c", AGENT, json.dumps({"action": action, **request})), "", f"deploy {action}")


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


@dataclass
class HostDeploy:
    """One host's part of a deploy: its connection, what it has done, and how it ended."""

    target: HostTarget
    opts: dict[str, Any]
    say_all: Say
    conn: Any = None
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    info: dict[str, Any] = field(default_factory=dict)
    locked: bool = False
    release: str = ""
    started: bool = False
    switched: bool = False
    error: str = ""
    unchanged: bool = False
    phase: str = "connect"
    env: str = ""
    facts: Facts | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return Layout(self.opts["path"])

    @property
    def public_port(self) -> int:
        return int(self.target.app_port or self.opts["port"])

    def say(self, text: str) -> None:
        self.say_all(f"[{self.target.label}] {text}")

    def agent(self, action: str, /, **request: Any) -> dict[str, Any]:
        step = agent_step(self.opts["python"], action, root=self.layout.root, **request)
        result = self.conn.run(command_line(step), warn=True, hide=True, pty=False, in_stream=False)
        lines = (result.stdout or "").strip().splitlines()
        try:
            data = json.loads(lines[-1]) if lines else {}
        except ValueError:
            data = {}
        if result.exited != 0:
            message = data.get("error") or tail(result.stderr or result.stdout or f"exit {result.exited}", 10)
            raise DeployFailed(f"{action}: {message}")
        return data

    def run(self, step: Step) -> Any:
        return run_step(self.conn, step, hide=True)

    # -- phases ---------------------------------------------------------

    def connect(self, config: Any) -> None:
        self.conn = connect(self.target, self.opts, config)
        try:
            open_checked(self.conn)
        except (OSError, EOFError) as error:
            raise DeployFailed(f"cannot reach {self.target.label} over SSH: {error}") from None
        except SSHException as error:
            raise DeployFailed(
                f"cannot log in to {self.target.label}: {error}",
                "check the user and key (--identity, or IdentityFile in ~/.ssh/config)",
            ) from None

    def lock(self, owner: str) -> None:
        self.phase = "lock"
        take = {"break": bool(self.opts["break_lock"])}
        answer = self.agent("lock", owner=owner, token=self.token, wait=self.opts["lock_wait"], **take)
        self.locked = True
        self.info = answer["info"]

    def same_as_live(self, source: str) -> bool:
        """Whether the live release is made of exactly this source and still serving."""
        record = self.info.get("current_record") or {}
        return record.get("source") == source and record.get("status") == "live" and bool(self.info.get("current_alive"))

    def upload_env_file(self) -> None:
        if not self.opts.get("env_file"):
            return
        # Through SFTP with its mode set before any content is written.
        sftp = self.conn.sftp()
        remote = self.layout.env_file
        with open(os.path.expanduser(self.opts["env_file"]), "rb") as handle, sftp.open(remote + ".tmp", "wb") as out:
            sftp.chmod(remote + ".tmp", 0o600)
            out.write(handle.read())
        sftp.posix_rename(remote + ".tmp", remote)

    def upload(self, rid: str, source: Source, wheels: str | None) -> None:
        self.phase = "upload"
        self.release = rid
        release = self.layout.release(rid)
        sftp = self.conn.sftp()
        sftp.mkdir(release, 0o755)
        sftp.mkdir(posixpath.join(release, ".warp"), 0o755)
        self.agent("mark", release=rid, values={"status": "uploading"})
        if not self._rsync(source, release):
            tarball = posixpath.join(release, ".warp", "source.tar.gz")
            self.say(f"upload: one archive over SFTP ({len(source.archive) // 1024} KiB)")
            with sftp.open(tarball, "wb") as out:
                out.set_pipelined(True)
                out.write(source.archive)
            self.run(Step("unpack", ("tar", "-xzf", tarball, "--no-same-owner", "-C", release), "", "unpack the release"))
            self.run(Step("unpacked", ("rm", "-f", tarball), "", "remove the archive"))
        if wheels:
            have = set(self.info.get("wheels", []))
            for name in sorted(os.listdir(wheels)):
                if name not in have:
                    sftp.put(os.path.join(wheels, name), posixpath.join(self.layout.wheels, name))
        self.upload_env_file()

    def _rsync(self, source: Source, release: str) -> bool:
        """Send the release with rsync when both ends have it (and ``upload`` allows); False to use SFTP."""
        mode = self.opts.get("upload") or "auto"
        if mode == "sftp":
            return False
        usable = bool(self.info.get("rsync")) and bool(shutil.which("rsync")) and bool(shutil.which("ssh"))
        if not usable:
            if mode == "rsync":
                raise DeployFailed(
                    "rsync was asked for, but it is missing here or on the host", "install rsync, or use --upload auto"
                )
            return False
        keys = self.conn.connect_kwargs.get("key_filename") or []
        keys = [keys] if isinstance(keys, str) else list(keys)
        known = [os.path.expanduser("~/.ssh/known_hosts")] + (
            [os.path.expanduser(self.opts["known_hosts"])] if self.opts.get("known_hosts") else []
        )
        config = os.path.expanduser("~/.ssh/config")
        ssh = ssh_command(
            self.conn.user,
            self.conn.port,
            keys,
            known,
            bool(self.opts.get("accept_unknown_host")),
            config if os.path.exists(config) else None,
        )
        current = self.info.get("current")
        step = rsync_step(
            source.root, source.list_file, self.conn.host, release, ssh, self.layout.release(current) if current else None
        )
        self.say(f"upload: {step.why}")
        result: Any = Context().run(command_line(step), warn=True, hide=True, pty=False, in_stream=False)
        if result.exited == 0:
            return True
        error = tail(result.stderr or result.stdout, 5)
        if mode == "auto" and ("Permission denied" in error or "verification failed" in error):
            self.say(f"upload: rsync's ssh cannot log in ({error.strip().splitlines()[-1]}); using SFTP instead")
            return False
        raise DeployFailed(f"rsync failed (exit {result.exited}): {error}")

    def build(self, spec: AppSpec, install_env: dict[str, str]) -> None:
        self.phase = "build"
        project = self.layout.release(self.release)
        request = {
            "env_dir": f"{project}/.warp",
            "envs_dir": self.layout.envs,
            "uv_candidates": [],
            "project": project,
            "ignore": untracked_dirs(".warp"),
        }
        facts = gather_facts(self.conn, self.opts["python"], request)
        options = BuildOptions(
            project=project,
            env_dir=".warp",
            envs_dir=self.layout.envs,
            installer=self.opts.get("installer") or "auto",
            install_env=install_env,
        )
        plan = plan_build(spec, facts, options)
        quiet = _Quiet(self.conn)
        try:
            execute(plan, quiet, say=self.say)
        except StepFailed as failed:
            failed.output = failed.output or quiet.last_output()
            raise
        self.facts = gather_facts(self.conn, self.opts["python"], request)
        self.env = self.facts.current or ""
        values = {
            "status": "built",
            "env": self.env,
            "commit": self.opts.get("commit"),
            "source": self.opts.get("source"),
            "deps": self.opts.get("deps"),
        }
        self.agent("mark", release=self.release, values=values)

    def migrate(self, spec: AppSpec) -> None:
        self.phase = "migrate"
        step = migrate_step(spec, self.layout.release(self.release), self.env, self.layout)
        if step is not None:
            self.say(f"{step.name}: {step.why} (once, on this host)")
            self.run(step)

    def start(self, spec: AppSpec) -> None:
        self.phase = "start"
        project = self.layout.release(self.release)
        record = self.info.get("current_record") or {}
        port = backend_port(self.public_port, record.get("port") if self.info.get("current") else None)
        options = StartOptions(
            project=project,
            env_dir=".warp",
            host="127.0.0.1",
            port=port,
            processes=_int(self.opts.get("processes")),
            threads=_int(self.opts.get("threads")),
            user=self.opts.get("user"),
            group=self.opts.get("group"),
        )
        assert self.facts is not None, "start follows build"
        plan = plan_start(spec, self.facts, options)
        before = tuple(with_shared_environment(s, self.layout) for s in plan.before)
        run_checks(_Quiet(self.conn), replace(plan, before=before), say=self.say)
        command = command_line(with_shared_environment(plan.server, self.layout))
        self.agent("mark", release=self.release, values={"command": command, "server": plan.server.name})
        self.agent("start", release=self.release, port=port, command=command, systemd=bool(self.opts["systemd"]))
        self.started = True
        self.say(f"started {plan.server.name} on 127.0.0.1:{port}; checking {self.opts['health']}")
        self.agent(
            "health",
            release=self.release,
            path=self.opts["health"],
            host_header=self.opts.get("health_host"),
            timeout=self.opts["health_timeout"],
        )

    def switch(self) -> None:
        self.phase = "switch"
        self.agent(
            "proxy",
            listen=self.target.listen or self.opts["listen"],
            port=self.public_port,
            source=PROXY,
            systemd=bool(self.opts["systemd"]),
        )
        previous = self.info.get("current")
        self.agent("switch", release=self.release)
        self.switched = True
        self.say(f"current -> {self.release}")
        if previous and previous != self.release:
            stopped = self.agent("stop", release=previous, drain=self.opts["drain"])
            self.say(f"old server of {previous}: {stopped['server']} ({stopped['seconds']}s)")

    def prune(self) -> None:
        self.phase = "prune"
        answer = self.agent("prune", keep=self.opts["keep"], protect=[self.release])
        if answer.get("removed"):
            self.say(f"removed old releases: {', '.join(answer['removed'])}")

    def abort(self) -> None:
        """Leave the host as it was: the new server stopped, the release marked failed, the lock released."""
        if self.conn is None or self.switched:
            return
        if not self.release:
            return
        try:
            self._ensure_connected()
            self.agent("stop", release=self.release, status="failed")
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the first failure
            self.say(f"could not mark {self.release} failed: {error}")

    def unlock(self) -> None:
        if not self.locked:
            return
        try:
            self._ensure_connected()
            self.agent("unlock", token=self.token)
            self.locked = False
        except Exception as error:  # noqa: BLE001
            self.say(f"could not release the deploy lock: {error}; the next deploy may need --break-lock")

    def _ensure_connected(self) -> None:
        transport = self.conn.client.get_transport() if self.conn else None
        if transport is None or not transport.is_active():
            self.conn.close()
            self.conn = connect(self.target, self.opts)
            open_checked(self.conn)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class _Quiet:
    """A runner that hides step output (hosts run in parallel) and keeps it for the error."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.last: Any = None

    def run(self, command: str, **kwargs: Any) -> Any:
        kwargs["hide"] = True
        self.last = self.conn.run(command, **kwargs)
        return self.last

    def last_output(self) -> str:
        if self.last is None:
            return ""
        return tail((self.last.stderr or "") + "\n" + (self.last.stdout or ""))


def _int(value: Any) -> int | None:
    return int(value) if value else None


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    release: str
    phase: str
    message: str
    timings: dict[str, float]


def _parallel(hosts: list[HostDeploy], work: Callable[[HostDeploy], None]) -> None:
    """Run ``work`` on every host still in the deploy, in threads; a failure is recorded on its host."""
    active = [h for h in hosts if not h.error and not h.unchanged]

    def guarded(host: HostDeploy) -> None:
        begin = time.monotonic()
        try:
            work(host)
        except StepFailed as failed:
            host.error = f"{failed.message}\n{failed.output}".strip()
        except Exception as error:  # noqa: BLE001 - a lost connection is a host failure, reported
            host.error = f"{type(error).__name__}: {error}" if not isinstance(error, WarpError) else str(error)
        finally:
            host.timings[host.phase] = host.timings.get(host.phase, 0.0) + time.monotonic() - begin

    if len(active) <= 1:
        for host in active:
            guarded(host)
        return
    with ThreadPoolExecutor(max_workers=min(len(active), 8)) as pool:
        list(pool.map(guarded, active))


def owner_label() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


def deploy_opts(config: Any, **given: Any) -> dict[str, Any]:
    """Task options over ``warp: deploy:`` config over :data:`DEPLOY_DEFAULTS` (and ``warp:``'s server settings)."""
    merged = dict(DEPLOY_DEFAULTS)
    section = (config.get("warp", {}) or {}) if config is not None else {}
    for key in ("server", "installer", "processes", "threads", "user", "group"):
        merged[key] = section.get(key)
    merged.update({k: v for k, v in (section.get("deploy") or {}).items() if v is not None})
    merged.update({k: v for k, v in given.items() if v is not None and v != []})
    if merged.get("upload") not in ("auto", "rsync", "sftp"):
        raise ConfigError(f"unknown upload method {merged.get('upload')!r}", "use auto, rsync or sftp")
    if not str(merged["path"]).startswith("/"):
        raise ConfigError(f"deploy path {merged['path']!r} is not absolute", "set an absolute path, e.g. --path /srv/myapp")
    return merged


def deploy(targets: list[HostTarget], project: str, opts: dict[str, Any], *, say: Say, config: Any = None) -> list[HostResult]:
    """Deploy ``project`` to every target; a result per host."""
    if not targets:
        raise ConfigError("no host to deploy to", "pass --host (repeatable), set warp.deploy.hosts, or use fab -H")
    begin = time.monotonic()
    spec = detect_app(project, server=opts.get("server"))
    names, why = source_files(spec.root)
    rid = release_id(spec.root)
    digest = content_digest(spec.root, names, __version__, str(opts.get("server")), str(opts.get("wheels")))
    opts = dict(opts, commit=commit_of(spec.root), source=digest)
    payload = archive(spec.root, names)
    say(f"release {rid}: {len(names)} files ({why}), {len(payload) // 1024} KiB compressed")
    scratch = tempfile.mkdtemp(prefix="warp-deploy-")
    list_file = os.path.join(scratch, "files")
    with open(list_file, "w", encoding="utf-8") as handle:
        handle.write("\0".join(names) + "\0")
    source = Source(spec.root, list_file, payload)
    lock = threading.Lock()

    def synced(text: str) -> None:
        with lock:
            say(text)

    hosts = [HostDeploy(t, opts, synced) for t in targets]
    wheels_dir: str | None = None
    try:
        _parallel(hosts, lambda h: h.connect(config))
        _parallel(hosts, lambda h: h.lock(owner_label()))
        _stop_unless_partial(hosts, opts)
        for h in hosts:
            if not h.error and not opts.get("force") and h.same_as_live(digest):
                h.unchanged = True
                h.say(f"unchanged: the live release {h.info['current']} is this source (--force deploys anyway)")
        install_env: dict[str, str] = {}
        deps = _deps_digest(spec)
        opts["deps"] = deps
        # Hosts whose live environment has these dependencies reuse it: nothing to ship.
        need_wheels = [
            h for h in hosts if not h.error and not h.unchanged and (h.info.get("current_record") or {}).get("deps") != deps
        ]
        if opts["wheels"] and need_wheels:
            wheels_dir = os.path.join(scratch, "wheels")
            os.mkdir(wheels_dir)
            _download_wheels(spec, wheels_dir, need_wheels[0].info, synced)
            install_env = offline_install_env(Layout(opts["path"]).wheels)
        _parallel(hosts, lambda h: h.upload(rid, source, wheels_dir))
        _stop_unless_partial(hosts, opts)
        _parallel(hosts, lambda h: h.build(spec, install_env))
        _stop_unless_partial(hosts, opts)
        first = next((h for h in hosts if not h.error and not h.unchanged), None)
        if first is not None and opts.get("migrate", True):
            _parallel([first], lambda h: h.migrate(spec))
            if first.error:
                for h in hosts:
                    h.error = h.error or f"not switched: the migration failed on {first.target.label}"
        _stop_unless_partial(hosts, opts)
        _parallel(hosts, lambda h: h.start(spec))
        _stop_unless_partial(hosts, opts)
        _parallel(hosts, lambda h: h.switch())
        _parallel(hosts, lambda h: h.prune())
    finally:
        for h in hosts:
            if h.error:
                h.abort()
        _parallel_cleanup(hosts)
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"deploy took {time.monotonic() - begin:.1f}s")
    return [_result(h) for h in hosts]


def _deps_digest(spec: AppSpec) -> str:
    d = spec.dependencies
    return json.dumps([d.kind, d.digest, list(d.packages), list(server(resolve_server(spec)[0]).packages)])


def _parallel_cleanup(hosts: list[HostDeploy]) -> None:
    for h in hosts:
        h.unlock()
        h.close()


def _result(h: HostDeploy) -> HostResult:
    if h.error:
        return HostResult(h.target.label, False, h.release, h.phase, h.error, h.timings)
    if h.unchanged:
        live = h.info["current"]
        return HostResult(h.target.label, True, live, "lock", f"unchanged: {live} stays live", h.timings)
    return HostResult(h.target.label, True, h.release, h.phase, f"live: {h.release}" if h.release else "ok", h.timings)


def _stop_unless_partial(hosts: list[HostDeploy], opts: dict[str, Any]) -> None:
    failed = [h for h in hosts if h.error]
    if not failed or opts["allow_partial"]:
        return
    names = ", ".join(h.target.label for h in failed)
    for h in hosts:
        if not h.error and not h.unchanged:
            h.error = f"not switched: the deploy failed on {names} (--allow-partial switches the others anyway)"


def _download_wheels(spec: AppSpec, dest: str, host_info: dict[str, Any], say: Say) -> None:
    for step in download_steps(spec, dest, host_info):
        say(f"wheels: {step.why}")
        run_step(Context(), step, hide=True)
    say(f"wheels: {len(os.listdir(dest))} files to ship")


def summary(results: list[HostResult]) -> str:
    lines = []
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
        detail = r.message if r.ok else f"failed at {r.phase}: {r.message}"
        lines.append(f"{mark} {r.host}: {detail}" + (f" ({timing})" if timing and r.ok else ""))
    return "\n".join(lines)


# -- status and rollback ---------------------------------------------------


def status(targets: list[HostTarget], opts: dict[str, Any], *, config: Any = None) -> dict[str, Any]:
    answers: dict[str, Any] = {}

    def one(h: HostDeploy) -> None:
        h.connect(config)
        answers[h.target.label] = h.agent("status", path=opts["health"], host_header=opts.get("health_host"))

    hosts = [HostDeploy(t, opts, lambda _t: None) for t in targets]
    _parallel(hosts, one)
    for h in hosts:
        if h.error:
            answers[h.target.label] = {"error": h.error}
        h.close()
    return answers


def rollback(
    targets: list[HostTarget], opts: dict[str, Any], *, say: Say, to: str | None = None, config: Any = None
) -> list[HostResult]:
    """Back to the previous good release on each host: started, checked, switched, the bad one stopped."""
    lock = threading.Lock()

    def synced(text: str) -> None:
        with lock:
            say(text)

    hosts = [HostDeploy(t, opts, synced) for t in targets]

    def prepare(h: HostDeploy) -> None:
        h.lock(owner_label() + " rollback")
        state = h.agent("status")
        chosen = to or _previous_good(state)
        if not chosen:
            raise DeployFailed("no earlier good release to roll back to")
        h.release = chosen
        record = h.agent("mark", release=h.release, values={})
        if not record.get("command"):
            raise DeployFailed(f"release {h.release} has no recorded server command")
        h.say(f"rolling back {state['current']} -> {h.release}")
        h.agent("start", release=h.release, port=record["port"], command=record["command"], systemd=bool(opts["systemd"]))
        h.started = True
        h.agent(
            "health", release=h.release, path=opts["health"], host_header=opts.get("health_host"), timeout=opts["health_timeout"]
        )

    def finish(h: HostDeploy) -> None:
        previous = h.info.get("current")
        h.agent("switch", release=h.release)
        h.switched = True
        h.say(f"current -> {h.release}")
        if previous and previous != h.release:
            h.agent("stop", release=previous, drain=opts["drain"], status="rolled-back")

    try:
        _parallel(hosts, lambda h: h.connect(config))
        _parallel(hosts, prepare)
        _stop_unless_partial(hosts, opts)
        _parallel(hosts, finish)
    finally:
        for h in hosts:
            if h.error and h.started and not h.switched:
                try:
                    h.agent("stop", release=h.release)
                except Exception:  # noqa: BLE001
                    pass
        _parallel_cleanup(hosts)
    return [_result(h) for h in hosts]


def _previous_good(state: dict[str, Any]) -> str | None:
    current = state.get("current")
    older = [r for r in state.get("releases", []) if current and r["id"] < current and r["status"] in ("retired", "live")]
    return older[-1]["id"] if older else None
