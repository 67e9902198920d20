"""warp exec, shell, the hook tasks and logs on deployed hosts: each runs on a host's live release.

exec, shell and the hooks run the command the deploy recorded with the live
release (:meth:`~.host.HostDeploy._commands`): planned as the local task plans
it, its environment read from the release's values file and the host's
shared/environment, exactly as the server's is. The line sent over SSH is a
:func:`~warptasks.plan.command_line`: every word quoted, no value of the
environment on it.

With one host its output is passed through as it is (``warp exec --host web1 --
python manage.py dumpdata > data.json`` works) and its exit code is the
command's; with several, each line is prefixed ``[label] `` and any failure
makes the exit code 1.
"""

from __future__ import annotations

import codecs
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any

from ..errors import ConfigError
from ..plan import Step, command_line
from ..settings import DeploySettings
from .fleet import one_at_a_time, parallel
from .front import app_id
from .host import HOOKS, HostDeploy
from .hosts import HostTarget
from .rollback import RELEASE_ID
from .session import DeployFailed, agent_call

ACTIONS = ("exec", "shell", *HOOKS)
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def recorded_command(record: dict[str, Any], action: str, argv: tuple[str, ...] = (), as_root: bool = False) -> str:
    """The shell line that runs ``action`` as ``record`` (a release's) recorded it; ``exec``: ``argv`` appended.

    On a host deployed as root it runs as the app's own account, as the server does; ``as_root`` runs it as the SSH
    account (root) instead, where the release recorded that (``root_argv``: a release whose commands run as the
    deploy's account anyway has none, and needs none).
    """
    release = record.get("id") or "the live release"
    commands = record.get("commands")
    if not isinstance(commands, dict):
        raise DeployFailed(
            f"{release} was deployed by an earlier warptasks, which recorded no commands to run on it",
            "deploy again (warp deploy), then run this again",
        )
    recorded = commands.get(action)
    if recorded is None:
        raise ConfigError(
            f"{release} has no {action} action hook",
            f"add an executable .warpdrive/action_hooks/{action} (or .s2i/action_hooks/{action}) and deploy again",
        )
    words = recorded.get("root_argv") if as_root and recorded.get("root_argv") else recorded["argv"]
    step = Step(action, (*words, *argv), recorded.get("cwd") or "", action, path=tuple(recorded.get("path") or ()))
    return command_line(step)


def parse_since(text: str, now: datetime | None = None) -> dict[str, float]:
    """``--since``: a duration (``30s``, ``10m``, ``2h``, ``1d``: counted back on the host's clock) or an ISO time
    (UTC unless it names its offset); the agent's request keys."""
    found = _SINCE.match(text)
    if found:
        return {"since_seconds": float(found.group(1)) * _UNITS[found.group(2)]}
    value = text.strip()
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a duration nor a time",
            "write a duration such as 30s, 10m, 2h, 1d, or a time such as 2026-12-01T16:30 (UTC) or 2026-12-01T17:30+01:00",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if now is not None and when > now:
        raise ConfigError(f"--since {text} is in the future")
    return {"since": when.timestamp()}


def check_grep(pattern: str | None) -> None:
    """Refuse a --grep the host could not compile, before connecting (the host applies it: Python's syntax)."""
    if pattern:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"--grep {pattern!r} is not a regular expression: {error}") from None


class Prefixed:
    """A text stream that writes each whole line to ``out`` as ``[label] line`` (``say``: one line at a time)."""

    def __init__(self, label: str, say: Callable[[str], None]) -> None:
        self.label, self.say, self.pending = label, say, ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.say(f"[{self.label}] {line.rstrip(chr(13))}")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.say(f"[{self.label}] {self.pending}")
            self.pending = ""


def _printer(stream: IO[str]) -> Callable[[str], None]:
    def say(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return one_at_a_time(say)


def _connected(targets: list[HostTarget], settings: DeploySettings, config: Any, info: bool) -> list[HostDeploy]:
    """A session to each host (and, with ``info``, what the agent says of it: its live release and record)."""
    if not targets:
        raise ConfigError("no host given", "pass --host (repeatable), set warp.deploy.hosts, or use fab -H")
    hosts = [HostDeploy(t, settings, lambda _t: None) for t in targets]

    def one(h: HostDeploy) -> None:
        h.connect(config)
        if info:
            h.info = h.agent("info")

    parallel(hosts, one)
    return hosts


def _failed(hosts: list[HostDeploy], err: Callable[[str], None]) -> list[HostDeploy]:
    """Hosts that could not be reached: one raises its error, several say it per host; the others go on."""
    broken = [h for h in hosts if h.error]
    for h in broken:
        h.close()
    if broken and len(hosts) == 1:
        raise DeployFailed(broken[0].error)
    for h in broken:
        err(f"[{h.target.label}] error: {h.error}")
    return [h for h in hosts if not h.error]


def _live_command(h: HostDeploy, action: str, argv: tuple[str, ...], as_root: bool = False) -> str:
    current = h.info.get("current")
    if not current:
        raise DeployFailed(f"no release is live under {h.settings.path} on {h.target.label}", "deploy first (warp deploy)")
    record = dict(h.info.get("current_record") or {}, id=current)
    return recorded_command(record, action, argv, as_root)


def run_recorded(
    targets: list[HostTarget],
    settings: DeploySettings,
    action: str,
    argv: tuple[str, ...] = (),
    *,
    config: Any = None,
    interactive: bool = False,
    as_root: bool = False,
) -> int:
    """Run ``action`` (exec with ``argv``, a hook, the shell) on each host's live release; the exit code.

    One host: its output as it is, local stdin passed on, a PTY when ``interactive`` (exec from a terminal, shell);
    the command's exit code. Several: output lines prefixed, no stdin; 1 when any failed.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown recorded command {action!r}")
    if action == "shell" and len(targets) != 1:
        raise ConfigError("warp shell opens one interactive shell: give one host", "warp shell --host web1")
    err = _printer(sys.stderr)
    hosts = _failed(_connected(targets, settings, config, info=True), err)
    try:
        if len(targets) == 1:
            (h,) = hosts
            result = h.session.conn.run(
                _live_command(h, action, argv, as_root), warn=True, pty=interactive, hide=False, echo=False
            )
            return int(result.exited)
        out = _printer(sys.stdout)
        codes: dict[str, int] = {t.label: 1 for t in targets}

        def one(h: HostDeploy) -> None:
            line = _live_command(h, action, argv, as_root)
            code = stream_command(h.session.conn, line, b"", Prefixed(h.target.label, out), Prefixed(h.target.label, err))
            codes[h.target.label] = code
            if code:
                err(f"[{h.target.label}] exit code {code}")

        _in_threads(hosts, one)
        for h in hosts:
            if h.error:
                err(f"[{h.target.label}] error: {h.error}")
        return 0 if not any(codes.values()) else 1
    except KeyboardInterrupt:
        return 130  # as a shell reports a command ended by Ctrl-C; the connections close below
    finally:
        for h in hosts:
            h.close()


def logs(
    targets: list[HostTarget],
    settings: DeploySettings,
    *,
    lines: int = 100,
    since: str | None = None,
    grep: str | None = None,
    release: str | None = None,
    follow: bool = False,
    config: Any = None,
) -> int:
    """Each host's log lines (the agent's ``logs``: server, process types, the front's lines of this app); with
    ``follow``, until Ctrl-C (exit 0). The exit code: 1 when a host's could not be read."""
    if lines < 0:
        raise ConfigError(f"--lines {lines} is negative")
    check_grep(grep)
    if release and not RELEASE_ID.match(release):
        raise ConfigError(f"--release {release!r} is not a release id", "warp status lists each host's releases")
    request: dict[str, Any] = {"lines": lines, "grep": grep or None, "release": release or None, "follow": follow}
    if since:
        request.update(parse_since(since, datetime.now(timezone.utc)))
    if settings.proxy == "caddy":
        request["app"] = app_id(settings.path)
    err = _printer(sys.stderr)
    hosts = _failed(_connected(targets, settings, config, info=False), err)
    several = len(targets) > 1
    out = _printer(sys.stdout) if several else None
    codes: dict[str, int] = {t.label: 1 for t in targets}

    def one(h: HostDeploy) -> None:
        step, text = agent_call(settings.python, "logs", root=settings.path, **request)
        streams: tuple[Any, Any] = (sys.stdout, sys.stderr)
        if out is not None:
            streams = Prefixed(h.target.label, out), Prefixed(h.target.label, err)
        codes[h.target.label] = stream_command(h.session.conn, command_line(step), text.encode(), *streams)

    try:
        if not several:
            for h in hosts:
                one(h)
        else:
            _in_threads(hosts, one)
    except KeyboardInterrupt:
        return 0  # following ends with Ctrl-C: not a failure
    finally:
        for h in hosts:
            h.close()
    for h in hosts:
        if h.error:
            err(f"[{h.target.label}] error: {h.error}")
    return 0 if not any(codes.values()) else 1


def stream_command(conn: Any, line: str, stdin: bytes, out: Any, err: Any) -> int:
    """Run ``line`` over ``conn`` (a connected fabric Connection) with ``stdin``, its output written to the text
    streams ``out`` and ``err`` as it comes; its exit code.

    Not fabric's ``run``: that waits for the command's output to end even after Ctrl-C, which a follower never does.
    Here Ctrl-C closes the channel, which ends the command on the host (its output can no longer be written).
    """
    channel = conn.client.get_transport().open_session()
    decoders = codecs.getincrementaldecoder("utf-8")("replace"), codecs.getincrementaldecoder("utf-8")("replace")
    try:
        channel.exec_command(line)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        while True:
            select.select([channel], [], [], 0.2)
            got = False
            for ready, receive, stream, decoder in (
                (channel.recv_ready, channel.recv, out, decoders[0]),
                (channel.recv_stderr_ready, channel.recv_stderr, err, decoders[1]),
            ):
                if ready():
                    stream.write(decoder.decode(receive(65536)))
                    stream.flush()
                    got = True
            if not got and channel.exit_status_ready() and not (channel.recv_ready() or channel.recv_stderr_ready()):
                break
        for stream, decoder in ((out, decoders[0]), (err, decoders[1])):
            stream.write(decoder.decode(b"", final=True))
            stream.flush()
        return int(channel.recv_exit_status())
    finally:
        channel.close()


def _in_threads(hosts: list[HostDeploy], work: Callable[[HostDeploy], None]) -> None:
    """``work`` on every host in a thread of its own; the main thread waits where Ctrl-C reaches it."""

    def guarded(h: HostDeploy) -> None:
        try:
            work(h)
        except Exception as error:  # noqa: BLE001 - this host's, reported
            h.error = str(error) or type(error).__name__

    threads = [threading.Thread(target=guarded, args=(h,), daemon=True) for h in hosts]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.1)
