"""Running a phase on every host at once, holding back the others when one failed, and a line per host at the end."""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from paramiko.ssh_exception import SSHException

from ..errors import StepFailed, WarpError
from ..run.executor import Say
from .host import HostDeploy
from .interrupt import Caught, Interrupted, signals_as_interrupts


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    release: str
    phase: str
    message: str
    timings: dict[str, float]


def one_at_a_time(say: Say) -> Say:
    """``say`` for hosts that run in threads: whole lines, never interleaved."""
    lock = threading.Lock()

    def synced(text: str) -> None:
        with lock:
            say(text)

    return synced


def parallel(hosts: list[HostDeploy], work: Callable[[HostDeploy], None]) -> None:
    """Run ``work`` on every host still in the deploy, in threads; a failure is recorded on its host."""
    active = [h for h in hosts if not h.error and not h.unchanged]

    def guarded(host: HostDeploy) -> None:
        begin = time.monotonic()
        try:
            work(host)
        except StepFailed as failed:
            host.error = f"{failed.message}\n{failed.output}".strip()
        except Exception as error:  # noqa: BLE001 - any failure is this host's, reported
            host.error = f"{type(error).__name__}: {error}" if not isinstance(error, WarpError) else str(error)
            if _connection_lost(host, error):
                host.error = f"the SSH connection dropped during {host.phase} ({host.error})"
        finally:
            host.timings[host.phase] = host.timings.get(host.phase, 0.0) + time.monotonic() - begin

    if len(active) <= 1:
        for host in active:
            guarded(host)
        return
    pool = ThreadPoolExecutor(max_workers=min(len(active), 8))
    try:
        list(pool.map(guarded, active))
    except BaseException:
        # An interrupt reaches the main thread only; the hosts' threads wait in SSH calls it does not reach.
        # Closing their connections ends those calls, so the cleanup does not wait for a whole build.
        for host in active:
            host.stopping = True
            host.session.close()
        raise
    finally:
        pool.shutdown(wait=True)


def _connection_lost(host: HostDeploy, error: Exception) -> bool:
    """Whether ``error`` is the host's SSH connection dropping (not, say, a local file that is missing)."""
    if isinstance(error, (SSHException, EOFError, ConnectionError)):
        return True
    conn = host.session.conn
    transport = conn.client.get_transport() if conn is not None else None
    return isinstance(error, OSError) and not isinstance(error, WarpError) and (transport is None or not transport.is_active())


def stop_unless_partial(hosts: list[HostDeploy], allow_partial: bool) -> None:
    """When a host failed, the others go no further (no host switches to a release that failed elsewhere)."""
    failed = [h for h in hosts if h.error]
    if not failed or allow_partial:
        return
    names = ", ".join(h.target.label for h in failed)
    for h in hosts:
        if not h.error and not h.unchanged:
            h.error = f"not switched: the deploy failed on {names} (--allow-partial switches the others anyway)"


def release_all(hosts: list[HostDeploy]) -> None:
    """Each host's lock released and its connection closed."""
    for h in hosts:
        h.unlock()
        h.close()


@contextmanager
def cleaned_up_after(hosts: list[HostDeploy], say: Say) -> Iterator[Caught]:
    """Whatever ends the work inside (success, a failure, Ctrl-C, SIGTERM): every host cleaned up, its lock released.

    An interrupt fails every host that had not switched yet, as an error would, and is raised again once the hosts
    are clean, after a line per host. Any other exception that ends the work early (SystemExit, a bug) does too:
    a host not failed has nothing to clean up, so the server it started would be left running.
    """
    with signals_as_interrupts() as came:
        try:
            yield came
        except KeyboardInterrupt as stop:
            why = str(stop) if isinstance(stop, Interrupted) else "interrupted (Ctrl-C)"
            _fail_unswitched(hosts, why)
            say(f"{why}: cleaning up (interrupt again to leave it to the next deploy)")
            _clean(hosts)
            say(summary([result(h) for h in hosts]))
            raise
        except BaseException as stop:
            _fail_unswitched(hosts, f"stopped by {type(stop).__name__}: {stop}".rstrip(": "))
            _clean(hosts)
            raise
        _clean(hosts)


def _fail_unswitched(hosts: list[HostDeploy], why: str) -> None:
    """Every host that had not switched fails with ``why`` (its cleanup then stops what it started)."""
    for h in hosts:
        h.stopping = True
        if not h.switched and not h.unchanged:
            h.error = f"{why}; {h.error}" if h.error else why


def _clean(hosts: list[HostDeploy]) -> None:
    for h in hosts:
        h.clean_up()
    release_all(hosts)


def result(h: HostDeploy) -> HostResult:
    if h.error:
        return HostResult(h.target.label, False, h.release, h.phase, h.error, h.timings)
    if h.unchanged:
        live = h.info["current"]
        return HostResult(h.target.label, True, live, "lock", f"unchanged: {live} stays live", h.timings)
    return HostResult(h.target.label, True, h.release, h.phase, f"live: {h.release}" if h.release else "ok", h.timings)


def summary(results: list[HostResult]) -> str:
    lines = []
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
        detail = r.message if r.ok else f"failed at {r.phase}: {r.message}"
        lines.append(f"{mark} {r.host}: {detail}" + (f" ({timing})" if timing and r.ok else ""))
    return "\n".join(lines)


def owner_label() -> str:
    """Who holds a deploy lock: user, machine and process, for the message another deploy shows."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"
