"""The deploy's hands on a host: lock, start, health-check, switch, stop, prune.

Like :mod:`warptasks.probe`, this file is sent as source to the host's
``python3 -c SOURCE`` through the runner, its request one JSON line on its
stdin (``python3 -c SOURCE JSON`` works too), so the host needs nothing of
ours installed. It must stay self-contained and standard-library only. Each
action prints one JSON object on its last line (``logs`` prints the log's
lines instead); a failure exits non-zero with a message on stderr.

Layout under ``root``: ``releases/<id>/`` (one per deploy, with its own
``.warp/`` environment link, ``deploy.json`` record and ``server.pid``),
``shared/`` (``environment`` mode 0600, ``envs/``, ``wheels/``, ``logs/``,
``front.json``: where the live backend is published) and ``current`` -> the
live release.

The front (Caddy, run by the front script, or the user's own proxy) reads the
live backend, ``127.0.0.1:PORT``, from one file per app: ``switch`` rewrites
it atomically with ``current``, and ``lock`` puts it back to ``current``'s
server when a deploy that died half-way through a switch left it elsewhere.

The deploy lock is ``.warp-deploy.lock/owner.json`` (0600, in a 0700
folder): a lease its holder renews (``renew``) while it works, taken over
by the next deploy once it has expired, so a deploy killed anywhere does not
lock the host for good. Every change to it happens under an ``flock`` of
``.warp-deploy.guard``. Actions that change the host accept the holder's
``token`` and then refuse to act for a deploy that has lost the lock.

Why one long file (against the project's ~400-line rule): it travels as one
``python3 -c`` source, so a host needs nothing of ours installed and runs
exactly the version the deploying machine has; split into modules, it would
have to be installed on every host, or reassembled on the way.
"""

import functools
import hashlib
import http.client
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

LOCK = ".warp-deploy.lock"
GUARD = ".warp-deploy.guard"
UNIT_DIR = "/etc/systemd/system"
SYSTEMD_RUNNING = "/run/systemd/system"  # exists where systemd is the init system
USER_RUNTIME = "/run/user"  # <uid>/: a user's runtime folder, with its manager's bus, while the manager runs
LINGER_DIR = "/var/lib/systemd/linger"  # <user>: lingering is on for that user
ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
DEFAULT_LEASE = 60.0
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_KEEP = 3
MAX_LOCK_AGE = 3600.0
NO_SYSTEMD = "started with --no-systemd"
JSON_ANSWER = True  # an action answers one JSON line, a failure too; not ``logs``, whose output is the log's lines
FALLBACK = "warptasks' own supervisor"
RESTART_KEYS = ("backoff_start", "backoff_max", "reset_after", "leftover_timeout")  # start's restart settings (tests)
FRONT_HOME = "/var/lib/warp-front"  # root's front (Caddy); another account's is ~/.local/share/warp-front


def _write(path, text, mode=0o644):
    tmp = "{}.tmp{}".format(path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _fail(message, code=1, **data):
    sys.stderr.write(message + "\n")
    if JSON_ANSWER:
        print(json.dumps(dict(data, error=message)))
    sys.exit(code)


def _record_path(root, release):
    return os.path.join(root, "releases", release, ".warp", "deploy.json")


def _record(root, release):
    return _json(_record_path(root, release)) or {}


def _missing(root, release):
    """Why ``release`` cannot be recorded or acted on: its folder ``releases/<id>`` does not exist; None if it does."""
    if os.path.isdir(os.path.join(root, "releases", release)):
        return None
    return f"release {release} does not exist (no folder {os.path.join(root, 'releases', release)})"


def _update(root, release, **values):
    """Merge ``values`` into the release's record; never for a release whose folder does not exist (none is made)."""
    why = _missing(root, release)
    if why:
        _fail(why)
    path = _record_path(root, release)
    try:
        os.mkdir(os.path.dirname(path), 0o755)
    except FileExistsError:
        pass
    data = _record(root, release)
    data.update(values)
    _write(path, json.dumps(data, sort_keys=True))
    return data


def _alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own unreaped child) is not serving.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _stat(pid):
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _starttime(pid):
    """When ``pid`` started (clock ticks since boot): with the pid, it names one process, never a reused pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _group_alive(pgid):
    """Whether any process of group ``pgid``, or of the session it leads, is still running (zombies do not count).

    The session counts for a supervised server (see :func:`supervise`): it runs in a group of its own, in its
    supervisor's session.
    """
    if not pgid:
        return False
    if os.path.isdir("/proc/self"):
        return bool(_members(pgid))
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _members(pgid):
    """The running processes (zombies aside) of group ``pgid`` or of the session ``pgid`` leads, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(name)
            if fields and len(fields) > 3 and str(pgid) in (fields[2], fields[3]) and fields[0] != "Z":
                found.append(int(name))
    return found


# -- signals that never reach a process given a pid again -------------------------------------------------------------
#
# A pid checked as ours (its start time, /proc's field 22, as recorded) may end and be given to another process before
# the signal that follows the check: 50-100 ms while a stop waits between signals. Where the kernel has pidfds (Linux
# 5.3, Python 3.9) the leader is held by one, opened and then verified: a signal through it reaches that process or
# nothing ("no such process": it is gone). A process group cannot be signalled through a pidfd, so the group is
# signalled only while it is provably the same one: while its leader's pidfd shows the leader not yet reaped (its pid,
# and so its group's number, cannot be given again), or while one of its members seen then, verified by its start
# time, still runs in it, or while no process has its pid and the pid was not given out since the last look that found
# it ours (pids are given in turn: /proc/sys/kernel/ns_last_pid did not go past it), so that a process forked as
# another exited between two looks still counts; once none, each member seen is signalled alone, through its own
# verified pidfd. Where pidfds are unavailable everything works as before (the check, then the pid's signal).


def _pidfd(pid, start=None):
    """A pidfd for ``pid``, opened and then verified to be the process that started at ``start`` (the one there now
    when None). None where pidfds are unavailable (the caller falls back to the pid); raises ProcessLookupError when no
    such process, or another one, has the pid."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or not hasattr(signal, "pidfd_send_signal") or not pid or pid <= 0:
        return None
    try:
        fd = opener(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None  # ENOSYS (kernel before 5.3), EMFILE...: the pid, as before
    now = _starttime(pid)
    if now is None or (start is not None and now != start):
        os.close(fd)
        raise ProcessLookupError(pid)
    return fd


def _pidfd_signal(fd, sig):
    """``sig`` through pidfd ``fd`` (0: only whether its process is not yet reaped); False when it is gone."""
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another account's: it exists
    return True


def _signal_one(pid, start, sig):
    """``sig`` to the process ``pid`` that started at ``start``, through a pidfd where there are pidfds; False when it
    is gone (or the pid names another process now)."""
    try:
        fd = _pidfd(pid, start)
    except ProcessLookupError:
        return False
    if fd is None:
        if _starttime(pid) != start:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    try:
        return _pidfd_signal(fd, sig)
    finally:
        os.close(fd)


def _member_starts(pgid):
    """{pid: start time} of the running processes of group ``pgid`` or of the session it leads, from /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(name)
            if fields and len(fields) > 19 and str(pgid) in (fields[2], fields[3]) and fields[0] != "Z":
                found[int(name)] = int(fields[19])
    return found


def _last_pid():
    """The last pid given out in this pid namespace (None: unknown)."""
    try:
        with open("/proc/sys/kernel/ns_last_pid") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def _given_since(pid, before, now):
    """Whether ``pid`` may have been given out since the last pid given was ``before``; it is ``now``. Pids are given
    in turn, wrapping round: only one in (before, now] was (a whole round between two looks 50 ms apart would take
    hundreds of thousands of new processes a second)."""
    if before <= now:
        return before < pid <= now
    return pid > before or pid <= now


class _Group(object):
    """The process group (and session) ``pid`` leads, signalled only while provably the one verified (see above).

    ``start``: the leader's start time as recorded (None: the process that has the pid now). ``pinned`` is False
    where pidfds are unavailable: then every method does what the agent always did, by the pid. Raises
    ProcessLookupError when the pid names another process than the one that started at ``start``.
    """

    def __init__(self, pid, start=None):
        self.pid = pid
        self.members = {}  # pid -> start time: the group's processes seen while it was provably ours
        self.last = _last_pid()  # the last pid given out, read before the last look that found the group ours
        try:
            self.fd = _pidfd(pid, start)
        except ProcessLookupError:
            if _starttime(pid) is not None or not _group_alive(pid):
                raise  # another process has the pid: ours ended, and its group with it
            # The leader ended, its group runs on (a shell wrapper's server): the pid is nobody's while the group
            # holds its number, so what runs in the group now is ours, as the caller just checked.
            self.fd = None
            self.pinned = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")
            self.members = _member_starts(pid)
            return
        self.pinned = self.fd is not None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _ours(self, pid, start):
        """Whether ``pid`` is the member seen then, running still in the group (or session)."""
        fields = _stat(pid)
        if not fields or len(fields) <= 19 or fields[0] == "Z" or int(fields[19]) != start:
            return False
        return str(self.pid) in (fields[2], fields[3])

    def held(self):
        """Whether the group's number is still ours (its leader not reaped, a member seen while it was ours still runs
        in it, or no process was given its pid since the last look); its members seen are brought up to date when it
        is."""
        last, reaped = _last_pid(), False
        if self.fd is not None and not _pidfd_signal(self.fd, 0):
            self.close()  # the leader is gone for good: its pid may be given again
            reaped = True
        if self.fd is None and not any(self._ours(p, s) for p, s in self.members.items()):
            # None seen runs in it any more, yet what runs in it now holds the number it never gave up (a child the
            # leader or a member forked as it exited, unseen), unless the pid was given again since the last look:
            # pids are given in turn, so only if the last pid given went past it. Unknown (no such file): only right
            # after the leader was reaped, one look ago (as when it had ended before the stop began: see __init__).
            now = _last_pid()
            if now is None or self.last is None:
                given = not reaped
            else:
                given = _given_since(self.pid, self.last, now)
            if given or _starttime(self.pid) is not None or not _group_alive(self.pid):
                return False
        self.last = last
        # A member that ran in it then and runs in it still holds its number: whatever is in it now is ours.
        self.members.update(_member_starts(self.pid))
        return True

    def alive(self):
        """Whether the leader or any process of its group (or session) still runs (zombies do not count)."""
        if not self.pinned:
            return _alive(self.pid) or _group_alive(self.pid)
        # Not held: none of it runs in it any more, and whatever has its number now is another's.
        return self.held() and (_alive(self.pid) or _group_alive(self.pid))

    def signal(self, sig, each=False):
        """``sig`` to the group (``each``: to each of its members too, as SIGKILL must reach a supervised server's own
        group in the session); to each member seen alone once the group's number is no longer provably ours."""
        if not self.pinned:
            _signal_group(self.pid, sig)
            if each and os.path.isdir("/proc/self"):
                for member in _members(self.pid):
                    try:
                        os.kill(member, sig)
                    except OSError:
                        pass
            return
        if self.held():
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                if self.fd is not None:
                    _pidfd_signal(self.fd, sig)  # the leader alone (it left its group, or the group is another's)
            if not each:
                return
        for member, start in list(self.members.items()):
            if not _signal_one(member, start, sig):
                self.members.pop(member, None)


def _signal_number(value, what="stop_signal"):
    """A signal from its name ("SIGWINCH", "WINCH") or number; a clear failure for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        number = getattr(signal, name, None)
        if isinstance(number, signal.Signals) and not name.startswith("SIG_"):
            return number
    _fail(f"{what} {value!r} is not a signal this host knows (e.g. SIGTERM, SIGWINCH, SIGQUIT, SIGINT)")


def _current(root):
    link = os.path.join(root, "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.path.realpath(link))


def _releases(root):
    base = os.path.join(root, "releases")
    try:
        return sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n)))
    except OSError:
        return []


def _free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _quiet(holder):
    """The lock holder as told to others: without its token, which would let them release or renew it."""
    return {k: v for k, v in (holder or {}).items() if k != "token"}


def _clock(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


class _Guard(object):
    """An exclusive ``flock`` on ``<root>/.warp-deploy.guard`` around every change to the lock.

    Reading the lock, deciding and writing it happen under it, so two agents
    never both take over the same expired lease. The file is 0600: another
    account on the host cannot open it, let alone hold it. Waits at most
    ``timeout`` seconds.
    """

    def __init__(self, root, timeout=10.0):
        self.path = os.path.join(root, GUARD)
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            _fail(f"cannot open the deploy lock's guard {self.path}: {error}")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    _fail(f"the deploy lock's guard {self.path} stayed taken for {self.timeout:.0f}s")
                time.sleep(0.05)

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


def _holder(root):
    """The lock's holder record; None when nobody holds the lock."""
    path = os.path.join(root, LOCK)
    if not os.path.isdir(path):
        return None
    return _json(os.path.join(path, "owner.json")) or {"owner": "unknown (no owner.json)"}


def _expired(holder, now):
    expires = holder.get("expires")
    return isinstance(expires, (int, float)) and now > expires


def _describe(holder, now):
    text = "deploy lock held by {} since {}".format(holder.get("owner"), holder.get("since", "?"))
    expires = holder.get("expires")
    if isinstance(expires, (int, float)):
        if now > expires:
            return text + f"; its lease expired at {_clock(expires)}"
        return text + f"; its lease runs until {_clock(expires)} ({expires - now:.0f}s from now) unless renewed"
    return text + " (it has no lease: it is held until released, or broken with --break-lock)"


def _take(root, req, now, since=None):
    lease = req.get("lease")
    record = {
        "owner": req["owner"],
        "token": req["token"],
        "since": _clock(now if since is None else since),
        "since_ts": now if since is None else since,
        "heartbeat": now,
        "lease": float(lease) if lease else None,
        "expires": now + float(lease) if lease else None,
        "hostname": socket.gethostname(),
    }
    path = os.path.join(root, LOCK)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    _write(os.path.join(path, "owner.json"), json.dumps(record, sort_keys=True), 0o600)
    return record


def _listeners(port):
    """The sockets listening on ``port``: {"socket:[inode]": uid}; None when /proc/net/tcp{,6} cannot be read."""
    found, readable = {}, False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found["socket:[{}]".format(fields[9])] = int(fields[7])
    return found if readable else None


def _holders(inodes, pids=None):
    """{inode: pids with it open}, looking at ``pids`` (default: every process /proc lets this account see)."""
    held = {}
    if not inodes or not os.path.isdir("/proc/self"):
        return held
    if pids is None:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in inodes:
                held.setdefault(target, set()).add(pid)
    return held


def _port_holders(port):
    """The pids with a socket listening on ``port`` (this host's, as far as /proc lets us see)."""
    pids = set()
    for found in _holders(set(_listeners(port) or ())).values():
        pids |= found
    return pids


def _family(pid):
    """The processes of the server ``pid`` started: its process group, its session and every descendant of them."""
    procs = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc/self") else []:
        if name.isdigit():
            fields = _stat(name)
            if fields and len(fields) > 3:
                procs[int(name)] = fields
    family = {pid} | {p for p, fields in procs.items() if str(pid) in (fields[2], fields[3])}
    grown = True
    while grown:
        grown = False
        for p, fields in procs.items():
            if p not in family and fields[1].isdigit() and int(fields[1]) in family:
                family.add(p)
                grown = True
    return family


def _in_unit(pid, unit):
    """Whether ``pid`` runs in the cgroup of systemd unit ``unit``."""
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            return any(line.rstrip().endswith("/" + unit) for line in handle)
    except OSError:
        return False


def _user(uid):
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return f"uid {uid}"


def _uid(pid):
    """The effective uid ``pid`` runs as (from its status, which every account may read); None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, IndexError, ValueError):
        pass
    return None


def _who(pid):
    """``pid P (user U, cmd ...)``: a process named for a message."""
    uid = _uid(pid)
    if uid is None:
        return f"pid {pid} (gone, cmd ?)"
    return f"pid {pid} (user {_user(uid)}, cmd {_cmdline(pid)})"


def _intruders(port, pid, unit=None):
    """Who listens on ``port`` besides the server ``pid`` (its group, session, descendants; ``unit``'s cgroup).

    Answer: None when nothing listens on the port; [] when every listener is
    the server's (or /proc cannot tell: not Linux); else one description per
    other listener, ``pid P (user U, cmd ...)``, or its owner alone when this
    account cannot see the process. Another account may bind a port on
    127.0.0.1 before the server does: whatever answers there is the server
    only when this says so.

    A process of another account whose open files this one cannot read
    (root without CAP_SYS_PTRACE, in a container, looking at a server that
    runs as www-data) is told by the socket's owner instead: its listener is
    the server's when a process of the server runs as that account.
    """
    listeners = _listeners(port)
    if listeners is None or not os.path.isdir("/proc/self"):
        return []
    if not listeners:
        return None
    family = _family(pid) if pid else set()
    ours = _holders(set(listeners), family)
    others = [inode for inode in listeners if inode not in ours]
    held = _holders(set(others))
    accounts = {_uid(p) for p in family} if others else set()
    found = []
    for inode in others:
        pids = sorted(held.get(inode, ()))
        if unit and pids and all(_in_unit(p, unit) for p in pids):
            continue
        if not pids and listeners[inode] in accounts:
            continue
        if pids:
            found.extend(_who(p) for p in pids)
        else:
            found.append(f"a process of user {_user(listeners[inode])} that this account cannot see")
    return found


def _held_by(port, intruders):
    """The message for a port another process holds: ``port N is held by pid P (user U, cmd ...)``."""
    return "port {} is held by {}".format(port, "; ".join(intruders))


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            text = " ".join(handle.read().replace(b"\0", b" ").decode("utf-8", "replace").split())
    except OSError:
        return "?"
    return text if len(text) <= 160 else text[:157] + "..."


SUBFOLDERS = ("releases", "shared", "shared/logs", "shared/envs", "shared/wheels")


def _unsafe(path, st, last):
    """Why the folder ``path`` (its ``lstat``) lets another account change what a deploy runs; None if it does not.

    A deploy runs what is under its path (``shared/envs/*/bin/python``, the
    release's code) as this account, root included: the path and every
    folder above it must be real folders, owned by root or this account,
    writable by nobody else. A sticky folder (``/tmp``) may be
    world-writable above the deploy path (``last`` false), never as the
    deploy path itself. A symbolic link above it, owned by root or this
    account, is followed (and its target checked by the caller).
    """
    me = _user(os.geteuid())
    owners = "root" if os.geteuid() == 0 else f"root or {me}"
    if stat.S_ISLNK(st.st_mode):
        if last:
            return f"{path} is a symbolic link: give the real folder it points to as the deploy path"
        if st.st_uid not in (0, os.geteuid()):
            return f"{path} is a symbolic link owned by {_user(st.st_uid)}, not by {owners}: give the real path"
        return None
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    quoted = shlex.quote(path)
    if st.st_uid not in (0, os.geteuid()):
        fix = f"chown {me} {quoted}" if last else f"chown {me} {quoted}, or deploy under folders only {owners} can change"
        return (
            f"{path} is owned by {_user(st.st_uid)}, not by {owners} (who runs the deploy): that account could "
            f"change what the deploy runs; fix it with: {fix}"
        )
    writable = st.st_mode & 0o022
    if writable and (last or not st.st_mode & stat.S_ISVTX):
        who = "its group and others" if writable == 0o022 else "its group" if writable == 0o020 else "others"
        return (
            f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): another account could replace what the "
            f"deploy runs; fix it with: chmod go-w {quoted}"
        )
    return None


def _chain(path):
    """``path`` and every folder above it, top first: "/", "/srv", "/srv/app"."""
    chain = []
    while True:
        chain.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return chain[::-1]
        path = parent


def _check_tree(root):
    """Fail unless ``root``, the folders above it and its existing subfolders are safe (see :func:`_unsafe`).

    The path as given is checked, then the real path it resolves to; a
    folder not made yet ends the walk (what is above it was checked).
    """
    subfolders = [os.path.join(root, sub) for sub in SUBFOLDERS]
    for chain in (_chain(root), _chain(os.path.realpath(root)), subfolders):
        for path in chain:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if chain is subfolders:
                    continue
                break
            except OSError as error:
                _fail(f"deploy path {root} refused: cannot check {path}: {error}")
            why = _unsafe(path, st, chain is subfolders or path == chain[-1])
            if why:
                _fail(f"deploy path {root} refused: {why}")


def _safe_tree(root):
    """Refuse a deploy path another account could change, before anything is made in it; make what is missing.

    Missing folders are made 0755 one by one (``os.makedirs`` gives the
    ones above the last the umask's mode), then everything is checked
    again: a folder another account made first in a sticky ``/tmp`` is
    refused, never used.
    """
    root = os.path.normpath(root)
    _check_tree(root)
    for path in _chain(root):
        _safe_mkdir(path, 0o755)
    _check_tree(root)


def _safe_mkdir(path, mode):
    """Make the folder ``path`` with ``mode`` (whatever the umask) unless it exists; an existing one is left as it is."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    except OSError as error:
        _fail(f"cannot make the folder {path}: {error}")
    os.chmod(path, mode)


def lock(req):
    """Take the deploy lock of ``root``: a lease, renewed by its holder, taken over once it expires.

    Request keys: ``owner`` (who, shown to others), ``token`` (the holder's
    secret), ``wait`` (seconds to wait for a held lock, default 0),
    ``lease`` (seconds the lock holds without a ``renew``; none given: the
    lock never expires, as before leases, and only ``break`` frees it),
    ``break`` (take the lock from a holder whose lease has expired, who
    has no lease, or who has held it longer than ``max_age``; a live lease
    is never broken), ``max_age`` (seconds, default 3600).

    Answer: ``locked``, ``info``, ``lease``, ``expires`` (epoch seconds or
    null), ``took_over`` (the expired holder replaced, or null), ``broke``
    (the holder broken with ``break``, or null), ``settled`` (a restart cut
    off that it ended, see :func:`_settle`). Exit 3 while held.

    ``audit`` (optional: ``action``, ``by``, ``release``, ``details``): a
    "begun" line written to ``shared/audit.log`` once the lock is taken.

    First of all, a deploy path another account could change is refused
    (see :func:`_unsafe`), before anything is made in it; an existing deploy
    path keeps its mode.
    """
    root = req["root"]
    _safe_tree(root)
    for sub in SUBFOLDERS:
        _safe_mkdir(os.path.join(root, sub), 0o750 if sub == "shared/logs" else 0o755)
    os.chmod(os.path.join(root, "shared", "logs"), 0o750)
    _safe_mkdir(os.path.join(root, "shared", "data"), 0o750)  # the app's writable folder (see ``account``)
    env_file = os.path.join(root, "shared", "environment")
    if not os.path.exists(env_file):
        _write(env_file, "# KEY=VALUE lines: the app's secrets, read literally (no shell) by the server and hooks\n", 0o600)
    deadline = time.monotonic() + float(req.get("wait", 0))
    max_age = float(req.get("max_age", MAX_LOCK_AGE))
    took_over = broke = None
    while True:
        with _Guard(root):
            now = time.time()
            holder = _holder(root)
            if holder is None or holder.get("token") == req["token"]:
                since = holder.get("since_ts") if holder else None
                record = _take(root, req, now, since if isinstance(since, (int, float)) else None)
                break
            if _expired(holder, now):
                took_over = _quiet(holder)
                record = _take(root, req, now)
                break
            if req.get("break"):
                since = holder.get("since_ts")
                too_old = isinstance(since, (int, float)) and now - since > max_age
                if holder.get("expires") is None or too_old:
                    broke = _quiet(holder)
                    record = _take(root, req, now)
                    break
                _fail(_describe(holder, now) + ": not breaking a live lease", 3, holder=_quiet(holder))
        if time.monotonic() >= deadline:
            _fail(_describe(holder, now), 3, holder=_quiet(holder))
        time.sleep(0.2)
    answer = {"locked": True, "lease": record["lease"], "expires": record["expires"], "took_over": took_over, "broke": broke}
    current = _current(root)
    if isinstance(req.get("audit"), dict):
        _audit_append(root, dict(req["audit"], result="begun", release=req["audit"].get("release") or current))
    answer["settled"] = _settle(root, current) if current and not _missing(root, current) else {}
    # A deploy that died after handing the live server's files to the app's new account, before it switched: they go
    # back to the account the live server runs as.
    answer["handed_back"] = _hand_back(root, only_if_live=True) if os.geteuid() == 0 else None
    answer["resynced"] = _resync_upstream(root)
    answer["info"] = _info(req)
    print(json.dumps(answer))


def _held(root, token, renew=None):
    """Under the guard: the holder's record if ``token`` holds the lock (its lease renewed), else fail with exit 3."""
    now = time.time()
    holder = _holder(root)
    if holder is None:
        _fail("the deploy lock of {} is not held by this deploy: nobody holds it".format(root), 3, holder=None)
    if holder.get("token") != token:
        _fail("the deploy lock is no longer held by this deploy: " + _describe(holder, now), 3, holder=_quiet(holder))
    lease = float(renew) if renew else holder.get("lease")
    if lease:
        holder.update(heartbeat=now, lease=lease, expires=now + lease)
        _write(os.path.join(root, LOCK, "owner.json"), json.dumps(holder, sort_keys=True), 0o600)
    return holder


def renew(req):
    """Extend the lease of the lock ``token`` holds; fails (exit 3) if it no longer holds it.

    Request keys: ``token``, ``lease`` (seconds from now; default the
    lease the lock was taken with, or 60 for a lock taken without one).
    The deploy side calls it well within every lease period (a third of
    it, say) for as long as it holds the lock.

    Answer: ``renewed`` (true), ``lease``, ``expires`` (epoch seconds).
    """
    root = req["root"]
    with _Guard(root):
        holder = _holder(root) or {}
        lease = req.get("lease") or holder.get("lease") or DEFAULT_LEASE
        record = _held(root, req["token"], lease)
    print(json.dumps({"renewed": True, "lease": record["lease"], "expires": record["expires"]}))


def check(req):
    """Whether ``token`` still holds the lock (exit 3 if not); a lease it holds is renewed.

    Request keys: ``token``. Answer: ``held`` (true), ``owner``, ``since``,
    ``expires``.
    """
    root = req["root"]
    with _Guard(root):
        record = _held(root, req["token"])
    print(
        json.dumps({"held": True, "owner": record.get("owner"), "since": record.get("since"), "expires": record.get("expires")})
    )


def _require(req):
    """Fail unless the request's ``token`` (when it has one) holds the lock."""
    if req.get("token"):
        with _Guard(req["root"]):
            _held(req["root"], req["token"])


def unlock(req):
    root = req["root"]
    if not os.path.isdir(os.path.join(root, LOCK)):
        print(json.dumps({"unlocked": False}))
        return
    with _Guard(root):
        holder = _holder(root) or {}
        mine = holder.get("token") == req["token"]
        if mine:
            shutil.rmtree(os.path.join(root, LOCK), ignore_errors=True)
    print(json.dumps({"unlocked": mine}))


# -- capped logs -----------------------------------------------------------------
#
# A server's output goes through a pipe to this same
# agent, run as ``python3 shared/warp-agent.py '{"action": "logpipe", ...}'``
# (the agent writes its own source there), which appends it to
# ``shared/logs/<release>.log`` and rotates that file at ``log_max_bytes``,
# keeping ``log_keep`` older ones (``.1`` the newest): a log never takes more
# than (log_keep + 1) x log_max_bytes. The writer ignores the stop signals and
# ends when the server's side of the pipe closes, so it writes the server's
# last words. Under systemd the same writer reads a FIFO, so the server stays
# the unit's main process. Logs are 0640 in a 0750 folder: a server's output
# may hold secrets.


def _open_log(path):
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)


def _own_source():
    """This agent's source: as the deploy sent it on stdin, its file, or the ``-c`` argument it was started with."""
    if globals().get("__warp_source__"):
        return globals()["__warp_source__"]
    path = globals().get("__file__")
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return None
    if b"-c" not in args or args.index(b"-c") + 1 >= len(args):
        return None
    text = args[args.index(b"-c") + 1].decode("utf-8", "replace")
    return text if "def logpipe(" in text else None


def _agent_copy(shared):
    """This agent copied to ``<shared>/warp-agent.py`` (for the log writer and the supervisor); its path, or None
    when it cannot read its own source."""
    text = _own_source()
    if not text:
        return None
    script = os.path.join(shared, "warp-agent.py")
    _write_if_changed(script, text)
    return script


def _log_writer(root, log, req):
    """The argv of the capped writer for ``log``; None when the request turns the cap off or this agent cannot copy itself."""
    max_bytes = int(req.get("log_max_bytes", LOG_MAX_BYTES) or 0)
    if max_bytes <= 0:
        return None
    script = _agent_copy(os.path.join(root, "shared"))
    if not script:
        return None
    config = {"action": "logpipe", "path": log, "max_bytes": max_bytes, "keep": int(req.get("log_keep", LOG_KEEP))}
    config["timestamps"] = True
    return [sys.executable or "python3", "-I", script, json.dumps(config, sort_keys=True)]  # -I: as every host script


def _spawn(argv, log, writer, supervise=True, state=None, stop_signal=None, restart=None):
    """Start ``argv`` in a session of its own, its output to ``log`` through ``writer``; (process, writer's pid).

    ``supervise`` (default): the process started is warptasks' own supervisor
    (see :func:`supervise`), running ``argv`` as its child and starting it
    again when it exits on its own; ``proc.pid`` is then the supervisor's, and
    ``proc.warp_supervised`` says so (false when this agent cannot copy itself
    to ``shared/warp-agent.py``: a plain process, as before). ``log`` is under
    ``<root>/shared/logs``. ``state``: the file the supervisor keeps its
    child's pid and restarts in; ``stop_signal``: the server's graceful
    signal (it and SIGTERM, SIGINT, SIGQUIT stop the supervisor for good);
    ``restart``: overrides of ``backoff_start``, ``backoff_max``,
    ``reset_after``, ``leftover_timeout`` (tests).
    """
    script = _agent_copy(os.path.dirname(os.path.dirname(log))) if supervise else None
    request = None
    if script:
        request = dict(restart or {}, action="supervise", argv=list(argv), state=state, stop_signal=stop_signal or "SIGTERM")
        argv = [sys.executable or "python3", "-I", script]
    with open(os.devnull, "rb") as devnull:
        stdin = subprocess.PIPE if request else devnull
        if writer is None:
            out = _open_log(log)
            try:
                proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
            finally:
                os.close(out)
            pipe_pid = None
        else:
            read_end, write_end = os.pipe()
            try:
                pipe = subprocess.Popen(
                    writer, stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/"
                )
            finally:
                os.close(read_end)
            try:
                # A new session: the server outlives this SSH command and its
                # process group can be stopped as a whole (Apache's workers too).
                proc = subprocess.Popen(
                    argv, stdin=stdin, stdout=write_end, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
                )
            finally:
                os.close(write_end)
            pipe_pid = pipe.pid
    proc.warp_supervised = request is not None
    if request:
        # The request on stdin, never in argv: ``ps`` shows argv to every account.
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass
    return proc, pipe_pid


def _run_script(command, log, writer, fifo):
    """The shell script a systemd unit runs: ``command`` as the main process, its output capped by ``writer``."""
    quote = shlex.quote
    if writer is None:
        return f"exec >>{quote(log)} 2>&1 </dev/null\nexec sh -c {quote(command)}\n"
    return (
        f"rm -f {quote(fifo)} && mkfifo -m 600 {quote(fifo)} || exit 1\n"
        f"{' '.join(quote(a) for a in writer)} <{quote(fifo)} >/dev/null 2>&1 &\n"
        f"exec sh -c {quote(command)} >{quote(fifo)} 2>&1 </dev/null\n"
    )


def _rotate(path, keep):
    for index in range(keep, 0, -1):
        older = path if index == 1 else f"{path}.{index - 1}"
        if os.path.exists(older):
            os.replace(older, f"{path}.{index}")
    if keep <= 0 and os.path.exists(path):
        os.unlink(path)


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


def _log_time(seconds):
    """``seconds`` since the epoch as a log line's time: UTC, to the millisecond (text order is time order)."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % int((seconds - whole) * 1000)


def _stamp_lines(chunk, at_line_start, stamp):
    """``chunk`` with ``stamp`` before each line that begins in it (the first only if ``at_line_start``: a read may
    end inside a line); and whether the next chunk begins a line."""
    parts = chunk.split(b"\n")
    out = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if last and not part:
            break
        if index or at_line_start:
            out.append(stamp)
        out.append(part if last else part + b"\n")
    return b"".join(out), chunk.endswith(b"\n")


def logpipe(req):
    """Copy stdin to ``path``, rotating it at ``max_bytes`` and keeping ``keep`` older files; until end of input.

    Request keys: ``path``, ``max_bytes`` (0: no cap), ``keep``, ``timestamps`` (true: each line begins with the UTC
    time it was read, ``2026-12-01T16:36:28.123Z ``, which ``logs --since`` reads; the cap counts it). Ignores
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1 and SIGUSR2 (under
    systemd it gets the server's stop signal too): it ends when every writer
    has closed the pipe. A full disk loses lines, never blocks the server.
    Files are cut at a line end where a line fits.
    """
    path, max_bytes, keep = req["path"], int(req.get("max_bytes") or 0), int(req.get("keep", LOG_KEEP))
    stamped, at_line_start = bool(req.get("timestamps")), True
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGWINCH", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    out, size = None, 0

    def reopen(rotate):
        if out is not None:
            os.close(out)
        if rotate:
            _rotate(path, keep)
        fd = _open_log(path)
        return fd, os.fstat(fd).st_size

    try:
        out, size = reopen(False)
        if max_bytes and size >= max_bytes:
            out, size = reopen(True)
    except OSError:
        out, size = None, 0
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            break
        if not chunk:
            break
        if stamped:
            chunk, at_line_start = _stamp_lines(chunk, at_line_start, _log_time(time.time()).encode() + b" ")
        try:
            if out is None:
                out, size = reopen(False)
            while chunk:
                if max_bytes and size + len(chunk) > max_bytes:
                    room = max(max_bytes - size, 0)
                    cut = chunk.rfind(b"\n", 0, room) + 1
                    if cut == 0 and size == 0:
                        cut = room  # one line longer than the cap: cut it
                    _write_all(out, chunk[:cut])
                    chunk = chunk[cut:]
                    out, size = reopen(True)
                else:
                    _write_all(out, chunk)
                    size += len(chunk)
                    chunk = b""
        except OSError:
            # Disk full or the folder gone: this chunk is lost; the next one tries again.
            if out is not None:
                try:
                    os.close(out)
                except OSError:
                    pass
            out = None
    print(json.dumps({"path": path, "bytes": size}))


# -- warptasks' own supervisor ------------------------------------------------------------
#
# Where no systemd manager supervises the servers (systemd does not run on the
# host, an account without lingering, ``--no-systemd``), ``_spawn`` starts
# ``supervise`` from the agent's copy in ``shared/warp-agent.py``: it runs the
# server as its child and starts it again whenever it exits on its own (a
# crash, an OOM kill, a ``kill -9``), after a pause that doubles from 1s up to
# 30s, back to 1s once a run lasted 60s. It never gives up: a server that
# cannot start (its database down at boot...) is tried every 30s, each try a
# line in the log, rather than left down for good. Nothing starts it at boot:
# that takes systemd (as root, or an account with lingering).
#
# Its pid is the server's as far as everything else goes (``server.pid``,
# the record's ``pid``/``pid_start``): it leads the session and the process
# group ``stop`` signals, while the server runs in a process group of its
# own in the same session. So every signal the supervisor gets, sent to its
# group or to its pid alone, reaches the server exactly once: relayed to the
# server's group. The server's stop signal, SIGTERM, SIGINT and SIGQUIT also
# stop the supervisor for good: it lets the server finish its requests (it
# never kills it itself) and exits once no process of the server's group
# runs. SIGKILL cannot be relayed: the server is killed with its supervisor
# (PR_SET_PDEATHSIG), and ``_stop_group`` kills the rest of the session.

SUPERVISOR_SAYS = "[warp supervisor]"
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0  # a run this long (seconds) was no crash loop: the next pause is BACKOFF_START again
LEFTOVER_TIMEOUT = 3.0  # what is left of a crashed server's group (orphaned workers) gets SIGTERM, then SIGKILL
SUPERVISOR_STOPS = ("SIGTERM", "SIGINT", "SIGQUIT")
SUPERVISOR_RELAYS = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU")
PR_SET_PDEATHSIG = 1


def _exit_words(code):
    """How a child ended, from its ``returncode``: "exited with code 1", "was killed by SIGKILL"."""
    if code is not None and code < 0:
        try:
            return "was killed by " + signal.Signals(-code).name
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _death_signal():
    """A function giving the calling process SIGKILL when its parent dies (Linux), or None."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class _Supervisor(object):
    """The loop of :func:`supervise`: one child at a time, its exits, its restarts, the signals relayed to it."""

    def __init__(self, req):
        self.argv = [str(a) for a in req["argv"]]
        self.state_path = req.get("state")
        self.stops = {_signal_number(req.get("stop_signal") or "SIGTERM")}
        self.stops |= {getattr(signal, name) for name in SUPERVISOR_STOPS}
        self.relays = self.stops | {getattr(signal, n) for n in SUPERVISOR_RELAYS if hasattr(signal, n)}
        self.first = float(req.get("backoff_start", BACKOFF_START))
        self.most = float(req.get("backoff_max", BACKOFF_MAX))
        self.reset_after = float(req.get("reset_after", BACKOFF_RESET))
        self.leftover_timeout = float(req.get("leftover_timeout", LEFTOVER_TIMEOUT))
        self.pending = []
        self.child = None  # the server's Popen while it runs
        self.group = 0  # its process group while any process of it runs
        self.held = None  # that group, held (see _Group) where pidfds are available
        self.began = 0.0
        self.pause = self.first
        self.next_start = 0.0
        self.leftovers_until = None
        self.restarts = 0
        self.last_exit = None
        self.stopping = None
        self.death_signal = _death_signal()

    def _note(self, signum, frame):
        self.pending.append(signum)

    def _say(self, text):
        try:
            sys.stdout.write(f"{SUPERVISOR_SAYS} {text}\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass

    def _save(self, state):
        if not self.state_path:
            return
        pid = self.child.pid if self.child else None
        data = {
            "state": state,
            "supervisor": os.getpid(),
            "pid": pid,
            "pid_start": _starttime(pid) if pid else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "next_start": time.time() + max(self.next_start - time.monotonic(), 0) if state == "waiting" else None,
            "stopping": self.stopping,
            "updated": time.time(),
        }
        try:
            _write(self.state_path, json.dumps(data, sort_keys=True))
        except OSError:
            pass  # the release's folder is gone: the log still says it all

    def _start(self):
        parent, death = os.getpid(), self.death_signal

        def setup():
            os.setpgid(0, 0)
            if death:
                death()
            if os.getppid() != parent:
                os._exit(1)  # the supervisor died before the death signal was set

        try:
            self.child = subprocess.Popen(self.argv, stderr=subprocess.STDOUT, cwd="/", preexec_fn=setup)
        except (OSError, subprocess.SubprocessError) as error:
            self.child = None
            self._exited(None, f"could not be started ({error})", 0.0)
            return
        self.group, self.began = self.child.pid, time.monotonic()
        self._hold()
        if self.restarts:
            self._say(f"the server started again: pid {self.child.pid} (restart {self.restarts})")
        self._save("running")

    def _exited(self, pid, how, ran):
        self.last_exit = {"pid": pid, "how": how, "after": round(ran, 1), "at": time.time()}
        if self.stopping:
            self._say(f"the server (pid {pid}) {how} after {self.stopping}: stopped, not started again")
            return
        if ran >= self.reset_after:
            self.pause = self.first
        wait, self.pause = self.pause, min(self.pause * 2, self.most)
        self.next_start = time.monotonic() + wait
        self.restarts += 1
        if self.group and self._group_alive():
            # Its orphaned workers may still hold the port: they finish what they do, or are killed.
            self._signal_group(signal.SIGTERM)
            self.leftovers_until = time.monotonic() + self.leftover_timeout
        self._say(f"the server (pid {pid}) {how} after {ran:.1f}s, on its own: starting it again in {wait:g}s")
        self._save("waiting")

    def _signal(self, signum):
        if signum not in self.relays:
            return
        name = signal.Signals(signum).name
        if signum in self.stops and not self.stopping:
            self.stopping = name
            self._say(
                "{}: stopping the server{}; it is not started again".format(
                    name, f" (pid {self.child.pid})" if self.child else ""
                )
            )
            self._save("stopping")
        if self.group:
            self._signal_group(signum)

    def _hold(self):
        """Hold the new child's group: the child is ours until we reap it, so its pidfd is verified by that."""
        self._release()
        try:
            held = _Group(self.group)
        except ProcessLookupError:
            held = None
        self.held = held if held is not None and held.pinned else None

    def _release(self):
        if self.held is not None:
            self.held.close()
            self.held = None

    def _group_alive(self):
        return self.held.alive() if self.held is not None else _group_alive(self.group)

    def _signal_group(self, signum):
        if self.held is not None:
            self.held.signal(signum)
        else:
            _signal_group(self.group, signum)

    def _child_ended(self):
        """Whether the child exited (reaped now). Before it is reaped its pid, and so its group's number, is still
        ours: the group's members are seen then, so that its leftovers are known by their start times."""
        try:
            if os.waitid(os.P_PID, self.child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return False
        except (AttributeError, OSError):
            pass  # no waitid: poll() says
        else:
            if self.held is not None:
                self.held.held()
        return self.child.poll() is not None

    def run(self):
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)  # drained each turn; a full pipe loses nothing
        for signum in self.relays | {signal.SIGCHLD}:
            signal.signal(signum, self._note)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the request came on stdin; the server reads nothing
        os.close(devnull)
        self._start()
        while True:
            while self.pending:
                self._signal(self.pending.pop(0))
            now = time.monotonic()
            if self.child is not None and self._child_ended():
                pid, code = self.child.pid, self.child.returncode
                self.child = None
                self._exited(pid, _exit_words(code), now - self.began)
                continue
            if self.child is None and self.group:
                if not self._group_alive():
                    self.group, self.leftovers_until = 0, None
                    self._release()
                elif self.leftovers_until and now >= self.leftovers_until and not self.stopping:
                    self._signal_group(signal.SIGKILL)
                    self.leftovers_until = None
            if self.child is None and not self.group:
                if self.stopping:
                    break
                if now >= self.next_start:
                    self._start()
                    continue
            if self.child is None:
                timeout = 0.1 if self.group else self.next_start - now
            else:
                timeout = 5.0  # SIGCHLD wakes it at once; this bounds a missed one
            try:
                select.select([wake_read], [], [], max(min(timeout, 5.0), 0.0))
                os.read(wake_read, 4096)
            except (BlockingIOError, InterruptedError):
                pass
        self._save("stopped")
        self._say("stopped")


def supervise(req):
    """Run ``argv`` as a child and start it again whenever it exits on its own, until told to stop (see above).

    Request keys (on stdin: see :func:`_spawn`): ``argv``, ``state`` (a file
    kept up to date with ``state`` ("running", "waiting", "stopping",
    "stopped"), ``pid`` and ``pid_start`` of the child, ``restarts``,
    ``last_exit``, ``next_start``), ``stop_signal``; ``backoff_start``,
    ``backoff_max``, ``reset_after``, ``leftover_timeout`` (seconds). Its
    output and the child's go where its stdout goes: the server's log, one
    ``[warp supervisor] ...`` line for each exit, restart and stop.
    """
    _Supervisor(req).run()


def _wait_writer(record, seconds):
    """Wait up to ``seconds`` for a server's log writer to write the last lines and end; whether it ended."""
    pid, pid_start = record.get("log_writer_pid"), record.get("log_writer_start")
    if not pid or (pid_start is not None and _starttime(pid) != pid_start):
        return True
    end = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not _alive(pid)


def _end_writer(record):
    """After its server stopped: let the log writer finish (3s at most), then kill it if it lingers."""
    if not _wait_writer(record, 3):
        try:
            os.kill(record["log_writer_pid"], signal.SIGKILL)
        except OSError:
            pass


def _info(req):
    import platform

    root = req["root"]
    current = _current(root)
    wheels = os.path.join(root, "shared", "wheels")
    manager, why = _supervisor(dict(req, systemd=req.get("systemd", True)))
    return {
        "current": current,
        "current_record": _record(root, current) if current else None,
        "current_alive": bool(current) and _alive(_server_pid(root, current)),
        "releases": _releases(root),
        "rsync": bool(shutil.which("rsync")),
        "systemd": os.path.isdir("/run/systemd/system") and bool(shutil.which("systemctl")),
        "supervised": not why,
        "supervision": why or ("systemd --user" if manager == "user" else "systemd"),
        "machine": platform.machine(),
        "libc": list(platform.libc_ver()),
        "python": "{}.{}".format(*sys.version_info[:2]),
        "wheels": sorted(os.listdir(wheels)) if os.path.isdir(wheels) else [],
        "hostname": socket.gethostname(),
        "euid": os.geteuid(),
        "front_home": _front_home(),
        "relay": _relay_running(root),
    }


def info(req):
    print(json.dumps(_info(req)))


# -- supervision -----------------------------------------------------------------
#
# As root, each server is an instance of a system unit template in
# /etc/systemd/system. As another account, it is a user unit in
# ~/.config/systemd/user, run by that account's own systemd manager: only
# where lingering is on (``loginctl enable-linger USER``), since without it
# the manager, and every unit, ends with the account's last session, and
# does not start at boot. Without either (or with ``--no-systemd``), a server
# runs under warptasks' own supervisor (see ``supervise``), with a pidfile: it
# is started again when it crashes, but not at boot, and ``status`` says why
# systemd does not supervise it and what would (``supervision``). A unit is
# always the agent's own account's: a deploy path belongs to one account.


def _user_units():
    """Whether units are this account's user units (``systemctl --user``) rather than the system's."""
    return os.geteuid() != 0


def _user_bus():
    """Point ``systemctl --user`` at this account's manager: an SSH command may come without XDG_RUNTIME_DIR and the
    user bus, which exist (under /run/user/<uid>) wherever the manager runs."""
    run = os.path.join(USER_RUNTIME, str(os.geteuid()))
    if os.path.isdir(run):
        os.environ.setdefault("XDG_RUNTIME_DIR", run)
        if os.path.exists(os.path.join(run, "bus")):
            os.environ.setdefault("DBUS_SESSION_BUS_ADDRESS", "unix:path=" + os.path.join(run, "bus"))


def _systemctl_argv(*args):
    """``systemctl ARGS`` for the manager of this account's units: the system's as root, else its own."""
    if not _user_units():
        return ["systemctl", *args]
    _user_bus()
    return ["systemctl", "--user", *args]


def _lingering(name):
    """Whether ``name``'s systemd manager runs without a session of it (and from boot): lingering is on."""
    if os.path.exists(os.path.join(LINGER_DIR, name)):
        return True
    if not shutil.which("loginctl"):
        return False
    result = subprocess.run(["loginctl", "show-user", name, "--property=Linger"], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "Linger=yes"


def _supervisor(req):
    """Which systemd manager runs the servers, and why none does: ("system", None), ("user", None) or (None, why).

    As root: the system's, where systemd runs. As another account: its own,
    where lingering is on and ``systemctl --user`` answers.
    """
    if not req.get("systemd"):
        return None, NO_SYSTEMD
    if not os.path.isdir(SYSTEMD_RUNNING):
        return None, "systemd does not run on this host"
    if not _user_units():
        return "system", None
    name = _user(os.geteuid())
    if not shutil.which("systemctl"):
        return None, "systemctl is not installed"
    if not _lingering(name):
        return None, f"enable lingering: loginctl enable-linger {name}"
    result = subprocess.run(_systemctl_argv("show", "--property=Version"), capture_output=True, text=True)
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        return None, "the systemd manager of {} does not answer: {}".format(name, why[-1] if why else "no reason given")
    return "user", None


def _bad_path(text):
    """Why ``text`` cannot be a deploy path: not absolute, or holding a control character.

    A newline in a path written into a unit file would add a line, a directive, of its own.
    """
    if not isinstance(text, str) or not text.startswith("/"):
        return "is not an absolute path"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "holds a control character (a newline, a tab...)"
    return None


def _unit_name(root, prefix):
    """The template unit of ``prefix`` ("server") for the deploy at ``root``.

    ``warp-<readable path>-<hash>-<prefix>@.service``: the readable part keeps
    letters and digits (everything else becomes "-"), the hash of the whole
    normalised path tells ``/srv/a.b``, ``/srv/a-b`` and ``/srv/a b`` apart,
    so two apps never share (and overwrite) a unit.
    """
    path = os.path.normpath(root)
    path = "/" if path == "//" else path
    readable = "".join(c if c in ALNUM else "-" for c in path.strip("/"))[:80] or "root"
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"warp-{readable}-{digest}-{prefix}@.service"


def _unit_quote(text):
    """``text`` as one word of a systemd command line: double-quoted, C escapes, ``%`` and ``$`` doubled."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{text}"'


def _unit_text(root, prefix, what, user=False):
    """The template unit running ``<root>/shared/run/<prefix>-<instance>.sh``, with ``root`` quoted for systemd.

    ``user``: a user unit, wanted by ``default.target`` (the user manager's
    boot), without ``PrivateTmp=``, which a user manager can only give with
    unprivileged user namespaces (often refused, in containers and by
    AppArmor) and which fails the unit where it cannot.
    """
    why = _bad_path(root)
    if why:
        _fail(f"deploy path {root!r} {why}")
    script = _unit_quote(os.path.join(root, "shared", "run", prefix + "-"))[:-1] + '%i.sh"'
    text = UNIT.format(what=what, root=root.replace("%", "%%"), script=script)
    if user:
        text = text.replace("PrivateTmp=yes\n", "").replace("WantedBy=multi-user.target", "WantedBy=default.target")
    return text


def _unit_dir():
    """Where this account's units are written: /etc/systemd/system as root, else ``~/.config/systemd/user``."""
    if not _user_units():
        return UNIT_DIR
    import pwd

    return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".config", "systemd", "user")


def _systemctl(*args):
    result = subprocess.run(_systemctl_argv(*args), capture_output=True, text=True)
    if result.returncode != 0:
        _fail("systemctl {} failed: {}".format(" ".join(args), (result.stderr or result.stdout).strip()))
    return result.stdout.strip()


# PrivateTmp: a /tmp no other account (nor another app) shares, so no name there can be made first or read by them.
# NoNewPrivileges: nothing the app runs gains privileges from a setuid binary or file capabilities; dropping them
# (run_as.py, Apache's workers) still works.
UNIT = """[Unit]
Description=warptasks: {what} of {root} (%i)
After=network.target

[Service]
Type=simple
ExecStart=/bin/sh {script}
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
PrivateTmp=yes
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def _write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it already holds it; whether it was written."""
    try:
        with open(path) as handle:
            if handle.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    _write(path, text)
    return True


def _stop_dropin(sig, timeout):
    """The drop-in giving one unit instance its server's graceful stop: that signal, then SIGKILL after ``timeout``."""
    return "[Service]\nKillSignal={}\nTimeoutStopSec={}\n".format(signal.Signals(sig).name, max(1, int(round(timeout))))


def _write_stop_dropin(unit, sig, timeout):
    path = os.path.join(_unit_dir(), unit + ".d", "warp-stop.conf")
    if _write_if_changed(path, _stop_dropin(sig, timeout)):
        _systemctl("daemon-reload")


def _unit_start(root, prefix, instance, command, log, what, stop=None, writer=None):
    """Run ``command`` as ``warp-<path>-<prefix>@<instance>``: started now, and again at boot.

    ``stop`` is (signal, timeout): written into the instance's drop-in, so
    ``systemctl stop`` stops it gracefully too. ``writer``: the capped log
    writer its output goes through (see :func:`_run_script`).
    """
    run = os.path.join(root, "shared", "run")
    os.makedirs(run, mode=0o755, exist_ok=True)
    fifo = os.path.join(run, f"{prefix}-{instance}.log.fifo")
    _write(os.path.join(run, f"{prefix}-{instance}.sh"), _run_script(command, log, writer, fifo))
    template, folder = _unit_name(root, prefix), _unit_dir()
    changed = _write_if_changed(os.path.join(folder, template), _unit_text(root, prefix, what, _user_units()))
    unit = template.replace("@.service", f"@{instance}.service")
    sig, timeout = stop or (signal.SIGTERM, 20)
    changed = _write_if_changed(os.path.join(folder, unit + ".d", "warp-stop.conf"), _stop_dropin(sig, timeout)) or changed
    if changed:
        _systemctl("daemon-reload")
    _systemctl("enable", "--quiet", unit)
    _systemctl("restart", unit)
    return unit, int(_systemctl("show", "--property=MainPID", "--value", unit) or 0)


def _unit_pid(unit):
    result = subprocess.run(_systemctl_argv("show", "--property=MainPID", "--value", unit), capture_output=True, text=True)
    return int(result.stdout.strip() or 0) if result.returncode == 0 else 0


def _server_pid(root, release):
    """The pid serving ``release``: its systemd unit's main process, or the pidfile's.

    A pidfile's pid whose process started at another time than the recorded
    ``pid_start`` is some other process that got the pid after a reboot or a
    crash: 0, never to be signalled.
    """
    record = _record(root, release)
    if record.get("unit"):
        return _unit_pid(record["unit"])
    pid = _pid(os.path.join(root, "releases", release, ".warp", "server.pid"))
    if pid and record.get("pid") == pid and record.get("pid_start") is not None and _starttime(pid) != record["pid_start"]:
        return 0
    return pid


def start(req):
    """Start the release's server: as a systemd unit where one can supervise it, else under warptasks' own supervisor
    (:func:`supervise`, which starts it again when it crashes) in a session of its own, with a pidfile naming the
    supervisor. As root the unit is the system's; as another account, its own user unit where lingering is on.

    Request keys: ``release``, ``port``, ``command`` (a shell command line),
    ``systemd``, ``token`` (optional: fail unless it holds the deploy lock),
    ``stop_signal`` (the signal that stops this server gracefully, by name:
    "SIGTERM" for gunicorn and uvicorn, "SIGWINCH" for Apache/mod_wsgi-express's
    graceful-stop; default SIGTERM) and ``stop_timeout`` (seconds it gets to
    finish its requests before SIGTERM/SIGKILL, default 20); both are
    recorded with the release and used by ``stop``. ``health`` (optional:
    ``path``, ``host_header``, ``timeout``): the release's health check
    settings, recorded with it for ``health`` to fall back on. ``ports``
    (optional): the two backend ports the app alternates on, recorded for
    ``restart``. ``beside_live`` (a rollback's): when ``port`` is the one the
    live server runs on (a restart moved it there), the other one of the pair.

    A port held by the server of a release that is not live (a deploy cut
    off between its start and its stop) is taken back first; see
    :func:`_reclaim`. A port held by the live release or by anything else
    is an error naming the holder.

    Its output goes to ``shared/logs/<release>.log`` through the capped
    writer (see ``logpipe``): request keys ``log_max_bytes`` (default 10 MiB;
    0 turns the cap off) and ``log_keep`` (rotated files kept, default 3).

    Under warptasks' supervisor, the record gets ``supervisor`` ("warp") and
    ``supervisor_state`` (``.warp/supervisor-<port>.json``: the server's own pid,
    its restarts); a record without them (an older deploy) is a plain
    process. ``backoff_start``, ``backoff_max``, ``reset_after``,
    ``leftover_timeout``: the supervisor's restart settings (tests).

    Answer: ``pid`` (the supervisor's, under warptasks' supervisor), ``log``,
    ``log_capped`` (false when the output goes to the file uncapped),
    ``unit``, ``stop_signal``, ``stop_timeout``, ``supervised``,
    ``supervisor`` (see :func:`_manager`), ``supervision`` (the manager, or
    why systemd does not supervise it: see :func:`_supervision`), ``reclaimed`` (a list, one entry per release
    whose server was stopped to free the port: ``release``, ``pid``,
    ``server``, ``signals``, ``status`` (its status now: "abandoned", or
    "retired"/"rolled-back" kept)).
    """
    _require(req)
    root, release, port = req["root"], req["release"], int(req["port"])
    record = _record(root, release)
    _health_values(req.get("health"))  # a health setting no check could use is refused before anything starts
    current, command = _current(root), req["command"]
    if req.get("beside_live") and current and current != release:
        live = _record(root, current)
        if _same_port(live, port) and _serving(root, current):
            port = _other_port(root, live, req.get("ports"))  # a restart moved the live server to this one's port
            command = _command_for(release, record, port)
    values, answer = _launch(root, release, port, command, req, record)
    values["status"] = "started"
    if isinstance(req.get("ports"), list) and len(req["ports"]) == 2:
        values["ports"] = [int(p) for p in req["ports"]]
    # What the release was before this start (a rollback target: "retired"),
    # given back by a failed health check that must not mark it failed.
    if record.get("status") != "started" or "status_before_start" not in record:
        values["status_before_start"] = record.get("status")
    _update(root, release, **values)
    _record_health(root, release, req.get("health"))
    print(json.dumps(answer))


# What a release's record says about its running server: one instance of it. A restart starts a second instance on
# the other backend port and keeps the first one's under "replaced" until it is stopped (see ``restart``).
INSTANCE_KEYS = (
    "port",
    "command",
    "pid",
    "pid_start",
    "log",
    "unit",
    "log_writer_pid",
    "log_writer_start",
    "log_capped",
    "unsupervised",
    "supervisor",
    "supervisor_state",
)


def _launch(root, release, port, command, req, record):
    """Start one server of ``release`` on ``port`` (its pidfile written); the record's values for it and the answer.

    Nothing is recorded here: the caller merges the values (an instance of :data:`INSTANCE_KEYS`, the stop
    settings, ``stopped`` cleared).
    """
    sig = _signal_number(req.get("stop_signal") or record.get("stop_signal") or "SIGTERM")
    stop_timeout = float(req.get("stop_timeout") or record.get("stop_timeout") or 20)
    reclaimed = [] if _free(port) else _reclaim(root, release, port)
    if reclaimed:
        end = time.monotonic() + 5
        while not _free(port) and time.monotonic() < end:
            time.sleep(0.05)
    if not _free(port):
        _fail(_port_taken(root, port), reclaimed=reclaimed)
    warp = os.path.join(root, "releases", release, ".warp")
    pidfile = os.path.join(warp, "server.pid")
    log = os.path.join(root, "shared", "logs", release + ".log")
    unit = writer_pid = None
    writer = _log_writer(root, log, req)
    manager, unsupervised = _supervisor(req)
    supervisor = state = None
    if manager:
        unit, pid = _unit_start(root, "server", port, command, log, "app server", (sig, stop_timeout), writer)
    else:
        # One per port: a release started again on its other port while the first server still runs keeps both.
        state = os.path.join(warp, f"supervisor-{port}.json")
        if os.path.lexists(state):
            os.unlink(state)  # a stopped supervisor's: the new one writes its own
        restart = {k: req[k] for k in RESTART_KEYS if req.get(k) is not None}
        proc, writer_pid = _spawn(["sh", "-c", command], log, writer, state=state, stop_signal=sig.name, restart=restart)
        pid = proc.pid
        supervisor = "warp" if proc.warp_supervised else None
    _write(pidfile, str(pid))
    values = {"port": port, "command": command, "pid": pid, "pid_start": None if unit else _starttime(pid), "log": log}
    values["unit"] = unit
    values.update(supervisor=supervisor, supervisor_state=state if supervisor else None)
    values.update(log_writer_pid=writer_pid, log_writer_start=_starttime(writer_pid) if writer_pid else None)
    values.update(log_capped=writer is not None)
    values.update(stop_signal=sig.name, stop_timeout=stop_timeout, unsupervised=unsupervised, stopped=None)
    answer = {"pid": pid, "port": port, "log": log, "unit": unit, "stop_signal": sig.name, "stop_timeout": stop_timeout}
    answer["reclaimed"] = reclaimed
    answer.update(log_capped=writer is not None, supervised=bool(unit or supervisor), supervisor=_manager(values))
    answer.update(supervision=_supervision(values) if supervisor else unsupervised or _supervision(values))
    return values, answer


def _manager(record):
    """What supervises a release's server: "systemd", "systemd --user", "warp" (warptasks' own supervisor) or None
    (a plain process: a release deployed before warptasks had a supervisor of its own)."""
    if record.get("unit"):
        return "systemd --user" if _user_units() else "systemd"
    return "warp" if record.get("supervisor") == "warp" else None


def _supervision(record):
    """How a release's server is supervised, in words: by which manager, or why by none (and what to do about it)."""
    manager = _manager(record)
    if manager and manager != "warp":
        return manager
    # Why systemd does not: what the host lacks now (when it lacks nothing any more, the next deploy makes it a unit).
    why = NO_SYSTEMD if record.get("unsupervised") == NO_SYSTEMD else _supervisor({"systemd": True})[1]
    if manager != "warp":
        return why or "a plain process, started before systemd could supervise it: deploy again"
    own = f"{FALLBACK}: started again when it crashes, but not at boot"
    if why == NO_SYSTEMD:
        return f"{own} (started with --no-systemd: without it, where systemd runs, servers are units started at boot)"
    if why and why.startswith("enable lingering"):
        return f"{own} (to have it started at boot: {why}, then deploy again)"
    if why == "systemd does not run on this host":
        return f"{own} ({why}: where it does, servers are units started at boot)"
    if why:
        return f"{own} ({why}: with it, servers are units started at boot)"
    return f"{own} (systemd can supervise it now: deploy again to have it started at boot)"


def _child_state(record, pid):
    """What warptasks' supervisor ``pid`` of a release (its ``record``) says of its server: the state file's
    ``state``, ``pid`` (the server's own, while it runs), ``restarts``, ``last_exit``...; {} for a server no
    supervisor of ours runs, or a file another (older) supervisor wrote."""
    if record.get("supervisor") != "warp" or not record.get("supervisor_state") or not pid:
        return {}
    state = _json(record["supervisor_state"])
    if not isinstance(state, dict) or state.get("supervisor") != pid:
        return {}
    child = state.get("pid")
    if child and (not _alive(child) or _starttime(child) != state.get("pid_start")):
        state = dict(state, pid=None)
    return state


def _serving(root, name):
    """The pid of ``name``'s running server, or 0."""
    pid = _server_pid(root, name)
    return pid if pid and (_alive(pid) or _group_alive(pid)) else 0


def _reclaim(root, release, port):
    """Stop the servers of releases that are not live but still hold ``port`` (a deploy that died before its stop).

    A release qualifies when its record names ``port``, ``current`` does not
    point at it and its server runs (and, where /proc shows who listens,
    it is that server's process group that listens). Its server is stopped
    as ``stop`` would; a release that never went live is marked
    "abandoned", one that did ("retired", "rolled-back") keeps its status,
    so it stays a rollback target.
    """
    current = _current(root)
    if current and _same_port(_record(root, current), port) and _serving(root, current):
        return []  # the live release holds it (under systemd, the unit of that port runs it): never touched
    holders = _port_holders(port)
    groups = set()  # the process groups and sessions of the listeners (a supervised server: its supervisor's session)
    for pid in holders:
        fields = _stat(pid)
        if fields and len(fields) > 3:
            groups.update((int(fields[2]), int(fields[3])))
    reclaimed, units = [], set()
    # Newest first: releases on one port share its systemd unit, which runs the newest of them.
    for name in reversed(_releases(root)):
        record = _record(root, name)
        if name == current or not _same_port(record, port) or record.get("unit") in units:
            continue
        pid = _serving(root, name)
        if not pid or (holders and not record.get("unit") and pid not in groups):
            continue
        if record.get("unit"):
            units.add(record["unit"])
        state, sent = _stop_release(root, name, {})
        status = record.get("status") if record.get("status") in ("retired", "rolled-back") else "abandoned"
        _update(root, name, status=status, reclaimed_by=release, reclaimed_at=time.time())
        reclaimed.append({"release": name, "pid": pid, "server": state, "signals": sent, "status": status})
    return reclaimed


def _same_port(record, port):
    try:
        return int(record.get("port") or 0) == port
    except (TypeError, ValueError):
        return False


def _port_taken(root, port):
    """Why ``port`` cannot be had: the live release holds it, or something that is not one of our servers."""
    current = _current(root)
    if current and _same_port(_record(root, current), port) and _serving(root, current):
        return (
            f"port {port} on 127.0.0.1 is held by the live release {current} (pid {_serving(root, current)}); "
            "a new release starts on the other backend port"
        )
    who = "; ".join(_intruders(port, 0) or ()) or "a process this account cannot see"
    return (
        f"port {port} is held by {who}: not a server of a release under {root}; stop what holds it, or give this app "
        "ports of its own (each app on a host needs its own pair: --backend-port N uses N and N+1)"
    )


def _tail(path, lines=20):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is the server's own answer: following it would check another server (with Django's
    SECURE_SSL_REDIRECT, the public https name), not the one just started."""

    def redirect_request(self, *args, **kwargs):
        return None


# No proxy either: the check is of this host's 127.0.0.1, whatever http_proxy the account has set.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def _get(url, host_header, timeout):
    """The HTTP status ``url`` answers, redirects not followed (a 3xx is the answer)."""
    request = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def _get_public(public, path, timeout):
    """The HTTP status the front answers for the app on this host: ``public`` has ``scheme``, ``port``, ``host``.

    Over HTTPS the certificate is checked for the host name (sent as SNI, as a browser does): an error here says the
    certificate is not there yet or not trusted.
    """
    port, host = int(public["port"]), public.get("host")
    if public.get("scheme") != "https":
        return _get("http://127.0.0.1:{}{}".format(port, path), host, timeout)
    context = ssl.create_default_context()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        connection.sock = context.wrap_socket(raw, server_hostname=host)
        connection.request("GET", path, headers={"Host": host} if host else {})
        return connection.getresponse().status
    finally:
        connection.close()


HEALTH_KEYS = ("path", "host_header", "timeout", "accept")
# What a check accepts: a path given on purpose must answer 2xx or 3xx; the default check of "/" only proves the
# app loaded and answers (a fresh Django project with DEBUG off answers 404 there).
ACCEPT = {"2xx-3xx": lambda status: 200 <= status < 400, "any-below-500": lambda status: status < 500}
# Answers that settle a check at once when given this many times in a row: they will not change by waiting (a
# server still starting refuses the connection instead, and is waited for).
DEFINITE_4XX = 3
DEFINITE_5XX = 5


def _health_values(given):
    """The health settings in ``given`` (a request's ``health``): path, host_header, timeout; others dropped."""
    if not isinstance(given, dict):
        return {}
    values = {k: given[k] for k in HEALTH_KEYS if given.get(k) is not None}
    if values.get("accept", "2xx-3xx") not in ACCEPT:
        _fail("health accept {!r} is not one of {}".format(values["accept"], ", ".join(sorted(ACCEPT))))
    return values


def _record_health(root, release, given):
    """Merge health settings into the release's record (``health``); the record."""
    values = _health_values(given)
    if not values:
        return _record(root, release)
    merged = dict(_record(root, release).get("health") or {})
    merged.update(values)
    return _update(root, release, health=merged)


def health(req):
    """Poll the release's server over HTTP until its answer is accepted; a definite refusal ends it at once.

    Request keys: ``release``; ``path``, ``host_header``, ``timeout``
    (seconds), ``accept`` ("2xx-3xx", or "any-below-500": any answer but a
    server error proves the app loaded): each one omitted (or null) is
    taken from the settings recorded with the release (see ``start`` and
    ``mark``), else "/", no Host header, 60s, "2xx-3xx"; the settings of a
    check that passed are recorded with the release, so a rollback checks
    it as its deploy did. Redirects are not followed: a 3xx is the answer.
    A 4xx not accepted (3 in a row) or a 5xx (5 in a row) fails the check
    without waiting for the timeout; a refused connection (a server still
    starting) is retried. ``mark_failed`` (default true): false leaves the
    release's status as it was before ``start`` (a rollback target stays
    "retired") instead of marking it "failed".

    Answer: ``url``, ``status`` (HTTP), ``health`` (the settings used). On
    failure, exit 1 with ``error`` and ``release_status``.
    """
    root, release = req["root"], req["release"]
    record = _record(root, release)
    if not record.get("port"):
        _fail(f"release {release} has no recorded port: was it started?")
    used = _health_settings(req, record.get("health") or {})

    def failed(message):
        if req.get("mark_failed", True):
            after = "failed"
        else:
            after = _record(root, release).get("status_before_start") or _record(root, release).get("status")
        _update(root, release, status=after)
        _fail("{}; the server's log ends:\n{}".format(message, _tail(record.get("log", ""))), release_status=after)

    problem, status = _poll_health(root, release, record, used)
    if problem:
        failed(problem)
    _record_health(root, release, used)
    _update(root, release, status="healthy")
    url = "http://127.0.0.1:{}{}".format(record["port"], used["path"])
    print(json.dumps({"url": url, "status": status, "health": used}))


def _poll_health(root, release, record, used):
    """Poll ``release``'s server (as ``record`` names it) until ``used`` accepts its answer: (None, HTTP status), or
    (why it failed, None) once it definitely did or the time ran out."""
    url = "http://127.0.0.1:{}{}".format(record["port"], used["path"])
    deadline = time.monotonic() + float(used["timeout"])
    last, streak, previous = "no answer", 0, None
    # A server just started has not been started again yet; another (a rollback target) counts from now.
    restarts = 0 if record.get("status") == "started" else None
    while time.monotonic() < deadline:
        pid = _server_pid(root, release)
        if not _alive(pid):
            _wait_writer(record, 2)  # the server's last words, before its log is quoted
            return f"the server exited before answering {url}", None
        child = _child_state(record, pid)
        if child:
            # Under warptasks' supervisor: the server exited if it is waiting to start again, or started again since.
            restarts = child.get("restarts") if restarts is None else restarts
            if child.get("state") == "waiting" or child.get("restarts") != restarts:
                time.sleep(0.3)  # the server's last words through the log writer, before its log is quoted
                how = (child.get("last_exit") or {}).get("how") or "exited"
                return f"the server {how} before answering {url} (its supervisor starts it again, until stopped)", None
        try:
            status = _get(url, used["host_header"], 5)
        except (OSError, ValueError) as error:
            last, streak, previous = str(getattr(error, "reason", error)), 0, None
        else:
            # Whoever listens there answered: the server's own answer only if the port is its.
            intruders = _intruders(record["port"], pid, record.get("unit"))
            if intruders:
                return (
                    f"{_held_by(record['port'], intruders)}, not by the server of release {release} (pid {pid}): "
                    "another process took the port before the server could; this release is not used"
                ), None
            if intruders is None:
                last, streak, previous = "an answer from a listener that is gone", 0, None
                time.sleep(0.3)
                continue
            if ACCEPT[used["accept"]](status):
                return None, status
            streak = streak + 1 if status // 100 == previous else 1
            last, previous = f"HTTP {status}", status // 100
            definite = _definite(url, status, streak, used["accept"])
            if definite:
                return definite, None
        time.sleep(0.3)
    return "health check of {} failed: {} within {}s".format(url, last, used["timeout"]), None


def _health_settings(req, recorded):
    """The check's settings: the request's, else those recorded with the release, else the defaults."""
    used = {}
    for key, default in (("path", "/"), ("host_header", None), ("timeout", 60), ("accept", "2xx-3xx")):
        value = req.get(key)
        used[key] = value if value is not None else recorded.get(key, default)
    if used["accept"] not in ACCEPT:
        _fail("health accept {!r} is not one of {}".format(used["accept"], ", ".join(sorted(ACCEPT))))
    return used


def _definite(url, status, streak, accept):
    """Why ``streak`` answers like ``status`` in a row end the check now, or None to keep trying."""
    if status >= 500 and streak >= DEFINITE_5XX:
        return (
            f"health check of {url} answered HTTP {status} {streak} times in a row: the app fails there "
            "(if only that page does, pass --health PATH naming one that works)"
        )
    if 400 <= status < 500 and accept == "2xx-3xx" and streak >= DEFINITE_4XX:
        return (
            f"health check of {url} answered HTTP {status} {streak} times in a row: a health path must answer 2xx "
            "or 3xx; pass --health PATH naming a page the app serves (without --health, / may answer anything below 500)"
        )
    return None


def switch(req):
    """Point the front and ``current`` at the release: its backend file rewritten, then ``current``; both atomic.

    Request keys: ``release``, ``retire`` (the status given to the release
    that was live, default "retired"), ``upstream`` (optional: the file the
    front reads the live backend from; recorded in ``shared/front.json`` and
    used by later switches that name none), ``token`` (optional: the lock
    holder's token; the switch happens only if it still holds the lock,
    checked and done under the lock's guard so no other deploy takes it in
    between). Switching to the live release again only rewrites the file.
    """
    root = req["root"]
    if req.get("token"):
        with _Guard(root):
            _held(root, req["token"])
            _switch(req)
    else:
        _switch(req)


def _switch(req):
    root, release = req["root"], req["release"]
    target = os.path.join(root, "releases", release)
    if not os.path.isdir(target):
        _fail(f"release {release} does not exist")
    if req.get("upstream") is not None:
        _front_record(root, req["upstream"], req.get("public"))
    backend = _publish(root, release)
    link = os.path.join(root, "current")
    previous = _current(root)
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, link)
    if previous != release:
        _update(root, release, status="live", live_since=time.time())
    if previous and previous != release and not _missing(root, previous):
        _update(root, previous, status="retired" if req.get("retire", "retired") == "retired" else req["retire"])
    _drop_handover(root)  # switched: the files are the new account's for good
    print(json.dumps({"current": release, "previous": previous, "backend": backend}))


# -- the front's backend file -------------------------------------------------------------


def _upstream_ok(root, path):
    """Why ``path`` cannot be the file a front reads this app's backend from, or None.

    Either the deploy's own ``shared/upstream`` (``--proxy none``), or an app's file in a front's ``upstreams/``
    (the front script makes it; its name is the app id).
    """
    if path == os.path.join(root, "shared", "upstream"):
        return None
    folder, name = os.path.split(path) if isinstance(path, str) else ("", "")
    if _bad_path(path) or os.path.basename(folder) != "upstreams" or not name.startswith("warp-"):
        return "is neither shared/upstream nor a front's upstreams/warp-* file"
    if not all(c in ALNUM or c == "-" for c in name):
        return "is not an app id"
    return None


def _front_record(root, upstream, public):
    """Remember the front's upstream file, and where the front serves the app (for ``status``)."""
    why = _upstream_ok(root, upstream)
    if why:
        _fail("upstream file {!r} {}".format(upstream, why))
    path = os.path.join(root, "shared", "front.json")
    record = {"upstream": upstream, "public": public}
    if _json(path) != record:
        _write(path, json.dumps(record))


def _publish(root, release):
    """Write the release's backend, ``127.0.0.1:PORT``, to the recorded upstream file (a new file renamed over the
    old: the front reads the one or the other, never half); the backend, or None without a file or a port."""
    upstream = (_json(os.path.join(root, "shared", "front.json")) or {}).get("upstream")
    port = _record(root, release).get("port")
    if not upstream or not port or _upstream_ok(root, upstream):
        return None
    backend = "127.0.0.1:{}".format(int(port))
    if not os.path.isdir(os.path.dirname(upstream)):
        return None  # the front was removed: nothing reads the file any more
    _write(upstream, backend)
    return backend


def resync(req):
    """Put the front's backend file back on ``current``'s server (after a deploy failed around its switch)."""
    print(json.dumps({"current": _current(req["root"]), "resynced": _resync_upstream(req["root"])}))


def _resync_upstream(root):
    """Put the front back on ``current``'s server if a deploy that died mid-switch left it on another; what it
    pointed at, or None when it was right."""
    current = _current(root)
    upstream = (_json(os.path.join(root, "shared", "front.json")) or {}).get("upstream")
    if not current or not upstream or _missing(root, current):
        return None
    try:
        with open(upstream, encoding="utf-8") as handle:
            named = handle.read().strip()
    except OSError:
        named = None
    port = _record(root, current).get("port")
    if not port or named == "127.0.0.1:{}".format(int(port)):
        return None
    _publish(root, current)
    return named or "nothing"


def _signal_group(pid, sig):
    """Send ``sig`` to the process group ``pid`` leads (the server and its workers), else to ``pid`` alone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_group(pid, first=signal.SIGTERM, timeout=20.0, term_timeout=5.0, kill_timeout=5.0, start=None):
    """Stop the process group ``pid`` leads: ``first``, then SIGTERM, then SIGKILL, each given its time to work.

    The group is done when no process of it runs any more (not only ``pid``:
    a shell wrapper may die at once while the server it started still
    finishes its requests). ``start``: the leader's recorded start time
    (None: the process that has the pid now). Every signal reaches only that
    process and its group (see :class:`_Group`). Returns how it ended and the
    signals sent.
    """
    sent = []
    if not pid or pid <= 1:
        return "not running", sent
    try:
        group = _Group(pid, start)
    except ProcessLookupError:
        return "not running", sent  # ours ended: the pid is another process's now, or nobody's
    try:
        if not group.alive():
            return "not running", sent
        steps = [(first, timeout)]
        if first != signal.SIGTERM:
            steps.append((signal.SIGTERM, term_timeout))
        steps.append((signal.SIGKILL, kill_timeout))
        for index, (sig, wait) in enumerate(steps):
            # SIGKILL: a supervised server runs in a group of its own in the session ``pid`` leads: killed too.
            group.signal(sig, each=sig == signal.SIGKILL)
            sent.append(signal.Signals(sig).name)
            end = time.monotonic() + max(float(wait), 0.0)
            while True:
                if not group.alive():
                    if index == 0:
                        return "stopped", sent
                    return ("killed" if sig == signal.SIGKILL else "stopped by SIGTERM"), sent
                if time.monotonic() >= end:
                    break
                time.sleep(0.05)
        return "still running", sent
    finally:
        group.close()


def _stop_settings(req, record):
    """The stop signal and timeouts: the request's, else those recorded when the server started, else SIGTERM and 20s."""
    sig = req.get("stop_signal") or record.get("stop_signal") or "SIGTERM"
    timeout = req.get("stop_timeout", req.get("timeout"))
    if timeout is None:
        timeout = record.get("stop_timeout", 20)
    return _signal_number(sig), float(timeout), float(req.get("term_timeout", 5))


def stop(req):
    """Stop the release's server: its stop signal to its process group, then SIGTERM, then SIGKILL.

    Request keys: ``release``; ``drain`` (seconds the server keeps running
    first, for connections the front sent before the switch);
    ``stop_signal`` and ``stop_timeout`` (override what ``start`` recorded:
    the signal that stops the server gracefully and the seconds it gets to
    finish its requests; ``timeout`` is an older name of ``stop_timeout``);
    ``term_timeout`` (seconds after the SIGTERM that follows a stop signal
    other than SIGTERM, default 5); ``status`` (recorded for the release
    afterwards); ``token`` (optional: fail unless it holds the deploy lock);
    ``stopped`` (optional, an object: ``by``): recorded as ``stopped`` (with
    ``at``), the server stopped on purpose; a start clears it.

    A systemd unit is stopped by systemd with the unit's ``KillSignal=`` and
    ``TimeoutStopSec=`` (written from the same settings), then SIGKILL.

    Answer: ``release``, ``server`` ("stopped": gone after the stop signal;
    "stopped by SIGTERM"; "killed"; "still running"; "not running"),
    ``signals`` (names of the signals sent, in order), ``seconds``.
    """
    _require(req)
    root, release = req["root"], req["release"]
    begin = time.monotonic()
    if _serving(root, release):
        time.sleep(float(req.get("drain", 0)))
    state, sent = _stop_release(root, release, req)
    if req.get("status"):
        _update(root, release, status=req["status"])
    if isinstance(req.get("stopped"), dict):
        # Stopped on purpose (warp stop): nothing starts it again until ``restart`` with mode "start" does.
        _update(root, release, stopped=dict(req["stopped"], at=time.time()))
    print(json.dumps({"release": release, "server": state, "signals": sent, "seconds": round(time.monotonic() - begin, 1)}))


def _stop_release(root, release, req):
    """Stop ``release``'s server as its settings say; its pidfile removed. Returns (state, signals sent)."""
    pidfile = os.path.join(root, "releases", release, ".warp", "server.pid")
    record = _record(root, release)
    sig, timeout, term_timeout = _stop_settings(req, record)
    unit = record.get("unit")
    if unit:
        if req.get("stop_signal") or req.get("stop_timeout") or req.get("timeout"):
            _write_stop_dropin(unit, sig, timeout)
        subprocess.run(_systemctl_argv("disable", "--quiet", "--now", unit), capture_output=True)
        state, sent = ("stopped" if not _unit_pid(unit) else "still running"), [signal.Signals(sig).name]
    else:
        pid = _server_pid(root, release)
        start = record.get("pid_start") if record.get("pid") == pid else None
        state, sent = _stop_group(pid, sig, timeout, term_timeout, start=start)
        _end_writer(record)
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    return state, sent


def mark(req):
    """Record ``values`` (a dict) with the release; answer its whole record.

    Request keys: ``release``, ``values``, ``health`` (optional: path,
    host_header, timeout, merged into the record's ``health``), ``create``
    (true: make the release's folder if it does not exist, as for a new
    upload; without it, a release that does not exist is an error and
    nothing is made).
    """
    if req.get("create"):
        _safe_mkdir(os.path.join(req["root"], "releases", req["release"]), 0o755)
    _update(req["root"], req["release"], **(req.get("values") or {}))
    print(json.dumps(_record_health(req["root"], req["release"], req.get("health"))))


def prune(req):
    """Keep the newest ``keep`` good releases (and the live one); drop failed ones and unused environments.

    Request keys: ``keep``, ``protect`` (release ids kept whatever their
    status), ``token`` (optional: fail unless it holds the deploy lock).

    Answer: ``kept``, ``removed``, ``envs_removed``, ``logs_removed`` (the
    log files of the removed releases, rotated ones included).
    """
    _require(req)
    root, keep = req["root"], int(req["keep"])
    current = _current(root)
    protect = set(req.get("protect", [])) | {current}
    good, removed = [], []
    for name in reversed(_releases(root)):
        status = _record(root, name).get("status")
        if name in protect:
            good.append(name)
            continue
        if status in ("live", "retired") and len(good) < keep:
            good.append(name)
            continue
        if _alive(_server_pid(root, name)) or any(p["running"] for p in _process_states(root, name).values()):
            continue
        shutil.rmtree(os.path.join(root, "releases", name), ignore_errors=True)
        removed.append(name)
    used = set()
    for name in _releases(root):
        env = os.path.join(root, "releases", name, ".warp", "current")
        if os.path.islink(env):
            used.add(os.path.basename(os.path.realpath(env)))
    envs = os.path.join(root, "shared", "envs")
    dropped = []
    for name in os.listdir(envs) if os.path.isdir(envs) else []:
        if name not in used:
            shutil.rmtree(os.path.join(envs, name), ignore_errors=True)
            dropped.append(name)
    logs = os.path.join(root, "shared", "logs")
    logs_removed = []
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        # <release>.log and its rotated files, and <release>.<type>.<n>.log, the process types' (rotated too).
        if any(name == f"{r}.log" or name.startswith(f"{r}.") for r in removed):
            os.unlink(os.path.join(logs, name))
            logs_removed.append(name)
    print(json.dumps({"kept": sorted(good), "removed": removed, "envs_removed": dropped, "logs_removed": logs_removed}))


def status(req):
    """The host's releases, the front, and what the public port answers.

    Request keys: ``path``, ``public`` (``scheme``, ``port``, ``host``: where
    the front serves the app on this host; by default where the last switch
    said; none: no public check). Answer:
    ``current``, ``releases`` (each: ``id``, ``status``, ``port``, ``pid``,
    ``commit``, ``health`` (recorded settings or null), ``stop_signal``,
    ``stop_timeout``, ``supervisor`` (while it runs: see :func:`_manager`),
    ``server_pid``, ``restarts``, ``last_exit`` (under warptasks' supervisor:
    the server's own pid, how often it was started again, how it last
    exited; else null)), ``front`` (``upstream``: the file the front reads,
    ``backend``: what it names, ``relay``: the old relay's port while one
    still runs), ``health`` (the public answer), ``hostname``, ``supervised``
    (whether anything starts the live release's server again if it dies: a
    systemd unit or warptasks' supervisor; null without a live release),
    ``supervisor`` (which) and ``supervision`` (in words: by which manager,
    and why not by systemd, with what would start it at boot).
    """
    root = req["root"]
    current = _current(root)
    live_unit = _record(root, current).get("unit") if current else None
    releases = []
    for name in _releases(root):
        record = _record(root, name)
        # Units are per port: an older release recorded on the unit the live server runs in now (a restart moved it
        # there) does not run.
        shared = name != current and live_unit and record.get("unit") == live_unit
        pid = 0 if shared else _server_pid(root, name)
        alive = _alive(pid)
        child = _child_state(record, pid) if alive else {}
        releases.append(
            {
                "id": name,
                "status": record.get("status", "incomplete"),
                "port": record.get("port"),
                "pid": pid if alive else None,
                "commit": record.get("commit"),
                "health": record.get("health"),
                "stop_signal": record.get("stop_signal"),
                "stop_timeout": record.get("stop_timeout"),
                "processes": _process_states(root, name),
                "supervisor": _manager(record) if alive else None,
                "server_pid": child.get("pid") if child else None,
                "restarts": child.get("restarts") if child else None,
                "last_exit": child.get("last_exit") if child else None,
                "stopped": record.get("stopped"),
                "restarted_at": record.get("restarted_at"),
            }
        )
    recorded = _json(os.path.join(root, "shared", "front.json")) or {}
    upstream = recorded.get("upstream")
    backend = None
    if upstream:
        try:
            with open(upstream, encoding="utf-8") as handle:
                backend = handle.read().strip()
        except OSError:
            backend = None
    front = {"upstream": upstream, "backend": backend, "relay": _relay_running(root)}
    public = req.get("public") or recorded.get("public")
    answer = None
    if current and public:
        try:
            answer = _get_public(public, req.get("path", "/"), 5)
        except (OSError, ValueError) as error:
            answer = str(getattr(error, "reason", error))
    live = _record(root, current) if current else None
    state = {"current": current, "releases": releases, "front": front, "health": answer, "hostname": socket.gethostname()}
    state.update(supervised=None if live is None else bool(_manager(live)), supervision=live and _supervision(live))
    state.update(supervisor=live and _manager(live))
    print(json.dumps(state))


def _relay_pid(shared, record):
    """The old relay's pid (deploys before the Caddy front); 0 when the pidfile's pid now names another process."""
    if record.get("unit"):
        return _unit_pid(record["unit"])
    pid = _pid(os.path.join(shared, "proxy.pid"))
    if pid and record.get("pid_start") is not None and _starttime(pid) != record["pid_start"]:
        return 0
    if pid and record.get("pid_start") is None and "warp-proxy.py" not in _cmdline(pid):
        return 0  # a record without pid_start: the pid must at least still be the relay's
    return pid


def _relay_running(root):
    """The old relay's port while it runs, else None."""
    shared = os.path.join(root, "shared")
    record = _json(os.path.join(shared, "proxy.json"))
    if not record or record.get("retired"):
        return None
    return record.get("port") if _alive(_relay_pid(shared, record)) else None


def remove(req):
    """Take the app at ``root`` off this host: every release's server stopped (units disabled), ``current`` and the
    front's backend file removed; the releases, environments, secrets and logs stay (``purge``: the whole deploy
    path goes). The front's site is removed by the deploy, through the front script, before this.
    Answer: ``stopped`` (release ids whose server was running), ``purged``.
    """
    _require(req)
    root = req["root"]
    stopped = []
    for name in _releases(root):
        if any(state != "not running" for state in _stop_processes(root, name).values()):
            stopped.append(f"{name} (process types)")
        if _alive(_server_pid(root, name)) or _record(root, name).get("unit"):
            if _stop_release(root, name, req)[0] != "not running":
                stopped.append(name)
        if _record(root, name).get("status") == "live":
            _update(root, name, status="removed")
    front = _json(os.path.join(root, "shared", "front.json")) or {}
    upstream = front.get("upstream")
    for path in (
        upstream if upstream and not _upstream_ok(root, upstream) else None,
        os.path.join(root, "shared", "front.json"),
        os.path.join(root, "current"),
    ):
        if path and os.path.lexists(path):
            os.unlink(path)
    purged = False
    if req.get("purge"):
        for name in os.listdir(root):
            if name in (LOCK, GUARD):
                continue  # the lock this removal holds goes last, with unlock
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        purged = True
    print(json.dumps({"stopped": stopped, "purged": purged}))


def _retire(root):
    """Stop the relay earlier versions ran on the public port; its files stay, marked retired, so it can be started
    again (:func:`_start_relay`). Returns its record ({} without one) and whether it was stopped."""
    shared = os.path.join(root, "shared")
    record = _json(os.path.join(shared, "proxy.json")) or {}
    pid = _relay_pid(shared, record)
    stopped = False
    if record.get("unit"):
        subprocess.run(_systemctl_argv("disable", "--quiet", "--now", record["unit"]), capture_output=True)
        stopped = True
    elif _alive(pid):
        # Bytes in flight are relayed until the sockets close; new connections are the new front's.
        stopped = _stop_group(pid, signal.SIGTERM, 10, start=record.get("pid_start"))[0] != "still running"
    if record:
        _write(os.path.join(shared, "proxy.json"), json.dumps(dict(record, retired=time.time(), unit=None)))
    return record, stopped


def retire_relay(req):
    """Stop the old relay for a front of the user's own (``--proxy none``). Answer: ``port`` (the one it held, or
    null), ``stopped``."""
    _require(req)
    record, stopped = _retire(req["root"])
    print(json.dumps({"port": record.get("port"), "stopped": stopped}))


def handover(req):
    """The old relay's port to the front, in one action on the host, so no cut connection can split it: the relay
    stopped, the front script run with ``site`` (its request, and its ``source``), and the relay started again if
    the front could not take the port (this fails either way, saying whether the relay serves again).
    Answer: the front's answer, with ``relay`` (the port handed over).
    """
    _require(req)
    root = req["root"]
    record, _ = _retire(root)
    front = subprocess.run(
        [sys.executable or "python3", "-I", "-c", req["source"]],
        input=(json.dumps(req["site"]) + "\n").encode(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = front.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if front.returncode != 0:
        why = answer.get("error") or front.stderr.decode("utf-8", "replace").strip()[-2000:]
        if record and _start_relay(root):
            after = "the old relay serves it again"
        else:
            held = _intruders(int(record["port"]), 0) if record.get("port") else None
            after = "the old relay could not listen on it again" + (": held by " + "; ".join(held) if held else "")
        _fail("the front could not take port {} over: {}; {}".format(record.get("port"), why, after))
    print(json.dumps(dict(answer, relay=record.get("port"))))


def _start_relay(root):
    """The retired relay started again, as a process; its pid once it listens on its port, else None."""
    shared = os.path.join(root, "shared")
    record = _json(os.path.join(shared, "proxy.json")) or {}
    script = os.path.join(shared, "warp-proxy.py")
    if not record.get("retired") or not os.path.isfile(script):
        return None
    argv = [sys.executable, script, record["listen"], str(int(record["port"])), root]
    proc, _ = _spawn(argv, os.path.join(shared, "logs", "proxy.log"), None, supervise=False)
    _write(os.path.join(shared, "proxy.pid"), str(proc.pid))
    _write(os.path.join(shared, "proxy.json"), json.dumps(dict(record, retired=None, pid_start=_starttime(proc.pid))))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if not _intruders(int(record["port"]), proc.pid) and not _free(int(record["port"])):
            return proc.pid
        time.sleep(0.05)
    return None


# -- logs ----------------------------------------------------------------------------------
#
# ``logs`` shows a release's output: its server's (shared/logs/<release>.log,
# then .1, .2 ... older), its process types' (<release>.<type>.<n>.log) and
# the lines of the front's access log that Caddy tagged with this app's id
# (``warp_app``: other apps' requests are never shown). Unlike the other
# actions it prints the lines themselves, not one JSON object.

LOG_TIME = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")
FOLLOW_POLL = 0.2  # seconds between two looks at the files while following
DISCOVER_EVERY = 1.0  # seconds between two looks for new logs (a new live release, a process type's)


class _Log:
    """One source of lines: its label, its file (the newest) and the older ones; while following, where it is."""

    def __init__(self, label, path, app=None):
        self.label, self.path, self.app = label, path, app
        self.handle, self.inode, self.partial, self.key = None, None, b"", ""

    def files(self):
        """The log's files, oldest first: ``path.N`` ... ``path.1`` then ``path`` (Caddy: ``access-<time>.log``)."""
        folder, base = os.path.split(self.path)
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        if self.app:
            stem = base[: -len(".log")] + "-"
            older = sorted(n for n in names if n.startswith(stem) and (n.endswith(".log") or n.endswith(".log.gz")))
        else:
            numbered = [n for n in names if n.startswith(base + ".") and n[len(base) + 1 :].isdigit()]
            older = sorted(numbered, key=lambda n: -int(n[len(base) + 1 :]))
        return [os.path.join(folder, n) for n in older] + ([self.path] if base in names else [])

    def entries(self, data, fallback):
        """(time, line) for each line of ``data``: a line without a time of its own gets the one before it (the
        file's modification time for the first); the front's lines are this app's only, made readable."""
        self.key = self.key or fallback
        for raw in data.split(b"\n"):
            if not raw:
                continue
            if self.app:
                line = _access_line(raw, self.app)
                if line is None:
                    continue
                self.key, raw = line
            else:
                found = LOG_TIME.match(raw)
                if found:
                    self.key = found.group(1).decode()
            yield self.key, raw

    def read_new(self):
        """What was written since the last look (following the file when it is rotated): whole lines only."""
        chunks = []
        for _ in range(3):  # the rest of a rotated file, then the new one
            if self.handle is None:
                try:
                    self.handle = open(self.path, "rb")
                except OSError:
                    break
                self.inode = os.fstat(self.handle.fileno()).st_ino
            data = self.handle.read()
            if data:
                chunks.append(data)
                continue
            try:
                moved = os.stat(self.path).st_ino != self.inode
            except OSError:
                moved = False  # between a rename and the new file: the old one may still grow
            if not moved:
                break
            self.handle.close()
            self.handle = None
        data = self.partial + b"".join(chunks)
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        return data[:cut]


def _access_line(raw, app):
    """A line of Caddy's JSON access log as (time, readable line) if it is ``app``'s, else None."""
    if b'"warp_app"' not in raw:
        return None
    try:
        entry = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("warp_app") != app:
        return None
    request = entry.get("request") or {}
    when = _log_time(float(entry.get("ts") or 0))
    text = '{} {} "{} {}{} {}" {} {}B {:.1f}ms'.format(
        when,
        request.get("client_ip") or request.get("remote_ip") or "-",
        request.get("method"),
        request.get("host") or "",
        request.get("uri"),
        request.get("proto"),
        entry.get("status"),
        entry.get("size"),
        float(entry.get("duration") or 0) * 1000,
    )
    return when, text.encode("utf-8", "replace")


def _read_log(path):
    import gzip

    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as handle:
        return handle.read()


def _app_logs(root, release):
    """The release's logs: its server's (``web``) and its process types' (``<type>.<n>``)."""
    folder = os.path.join(root, "shared", "logs")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    found = [_Log("web", os.path.join(folder, release + ".log"))]
    for name in names:
        middle = name[len(release) + 1 : -len(".log")]
        if name.startswith(release + ".") and name.endswith(".log") and middle:
            found.append(_Log(middle, os.path.join(folder, name)))
    return found


def _proxy_log(req, say):
    """The front's access log, when this account can read it (once said why not, when it cannot)."""
    if not req.get("app"):
        return None
    home = req.get("front_home") or _front_home()
    path = os.path.join(home, "logs", "access.log")
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return None
    except OSError as error:
        say("proxy: cannot read {} as {} ({}); its lines are left out".format(path, _user(os.geteuid()), error.strerror))
        return None
    return _Log("proxy", path, app=req["app"])


def _front_home():
    """The front's home of this account: root's, or its own under ~/.local/share."""
    return FRONT_HOME if os.geteuid() == 0 else os.path.join(os.path.expanduser("~"), ".local", "share", "warp-front")


def _history(log, since, match, count, follow):
    """The last ``count`` lines of ``log`` at or after ``since`` that ``match``; while following, its file stays open
    at its end."""
    picked = []
    for path in reversed(log.files()):
        try:
            handle = open(path, "rb") if path == log.path else None
            modified = os.stat(path).st_mtime
        except OSError:
            continue
        if since and _log_time(modified) < since:
            if handle is not None:
                handle.seek(0, os.SEEK_END)
                _keep_open(log, handle, follow)
            break  # this file and the older ones hold nothing as recent
        log.key = ""
        if handle is not None:
            data = handle.read()
            if follow and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                data, log.partial = data[:cut], data[cut:]
            _keep_open(log, handle, follow)
        else:
            try:
                data = _read_log(path)
            except OSError:
                continue
        lines = [e for e in log.entries(data, _log_time(modified)) if (not since or e[0] >= since) and match(e[1])]
        picked[:0] = lines[-count:]
        if len(picked) >= count:
            break
    return picked[-count:]


def _keep_open(log, handle, follow):
    if follow:
        log.handle, log.inode = handle, os.fstat(handle.fileno()).st_ino
    else:
        handle.close()


def _stdout_gone():
    """Whether nobody reads our output any more (the SSH channel closed): the pipe's other end is gone."""
    import select

    poller = select.poll()
    poller.register(1, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _printable(text):
    """A log line as bytes safe for a terminal: control characters (C0 but tab, DEL, C1: ESC sequences that would
    retitle, recolour or rewrite the operator's terminal, a CR that hides what came before it) shown as ``\\xNN``;
    a CRLF line's CR dropped. Anyone who sends the app a request can put them in what it logs."""
    line = text.decode("utf-8", "replace")
    line = line[:-1] if line.endswith("\r") else line
    return CONTROL.sub(lambda found: "\\x{:02x}".format(ord(found.group())), line).encode("utf-8")


def logs(req):
    """Print the live release's (or ``release``'s) log lines; with ``follow``, then the new ones as they come.

    Request keys: ``release``, ``lines`` (the last N, default 100), ``since`` (seconds since the epoch) or
    ``since_seconds`` (that long ago, by this host's clock), ``grep`` (a regular expression a line must match),
    ``follow``, ``app`` (the app's id: its lines of the front's access log; none: no proxy lines), ``front_home``.
    Lines carry the time they were written (the capped writer's); a log written without (uncapped) is dated by its
    file's modification time for ``since``. With several sources each line starts with ``<label> | ``. Following
    ends when our output can no longer be written (the SSH channel closed).
    """
    root = req["root"]
    release = req.get("release") or _current(root)
    if not release:
        _fail("no release is live under {}; deploy first, or name one with --release".format(root))
    count = max(int(req["lines"] if req.get("lines") is not None else 100), 0)
    since = ""
    if req.get("since") is not None:
        since = _log_time(float(req["since"]))
    elif req.get("since_seconds") is not None:
        since = _log_time(time.time() - float(req["since_seconds"]))
    try:
        pattern = re.compile(req["grep"]) if req.get("grep") else None
    except re.error as error:
        _fail("--grep {!r} is not a regular expression: {}".format(req["grep"], error))

    def match(line):
        return pattern is None or pattern.search(line.decode("utf-8", "replace")) is not None

    def say(text):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    follow = bool(req.get("follow"))
    sources = [s for s in _app_logs(root, release) if s.files()]
    proxy = _proxy_log(req, say)
    if proxy is not None:
        sources.append(proxy)
    if not sources:
        say("release {} has no log yet".format(release))
    out = sys.stdout.buffer
    labelled = [len(sources) > 1]

    def emit(lines):
        width = max((len(s.label) for s in sources), default=0)
        for label, text in lines:
            text = _printable(text)
            out.write((label.ljust(width) + " | ").encode() + text + b"\n" if labelled[0] else text + b"\n")

    merged = []
    for number, source in enumerate(sources if count else ()):
        merged += [
            (key, number, seq, source.label, text)
            for seq, (key, text) in enumerate(_history(source, since, match, count, follow))
        ]
    merged.sort()
    try:
        emit([(label, text) for _, _, _, label, text in (merged[-count:] if count else [])])
        out.flush()
        if not follow:
            return
        for source in sources:
            if source.handle is None and os.path.exists(source.path):
                _keep_open(source, open(source.path, "rb"), True)
                source.handle.seek(0, os.SEEK_END)
        looked = time.monotonic()
        while not _stdout_gone():
            for source in sources:
                emit([(source.label, text) for _, text in source.entries(source.read_new(), "") if match(text)])
            out.flush()
            if time.monotonic() - looked >= DISCOVER_EVERY:
                looked = time.monotonic()
                live = req.get("release") or _current(root) or release
                known = {s.path for s in sources}
                for new in _app_logs(root, live):
                    if new.path not in known and os.path.exists(new.path):
                        sources.append(new)
                        labelled[0] = labelled[0] or len(sources) > 1
            time.sleep(FOLLOW_POLL)
    except (BrokenPipeError, ConnectionError):
        pass
    finally:
        try:
            out.flush()
        except OSError:
            pass
        # Nobody reads any more: the interpreter's own flush at exit would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


# -- process types ---------------------------------------------------------------
#
# A Procfile's process types other than web and release (worker, clock...)
# run beside the release's server: instance ``<type>.<n>`` of each, as a
# systemd unit instance ``warp-<path>-proc@<type>.<n>`` where one can
# supervise them, else a process in a session of its own, its output through
# the capped writer to ``shared/logs/<release>.<type>.<n>.log``. The release
# record holds what to run (``process_types``: type -> command, count,
# stop_timeout, written by the deploy) and what runs (``processes``:
# instance -> pid, unit, log...). A unit instance is shared by the releases
# (as the server's port units are): ``shared/run/proc-<instance>.release``
# names the one it runs now, and only that one's stop stops it.

PROCESS_STOP_TIMEOUT = 30.0
PROCESS_SETTLE = 1.0  # seconds a started process must keep running to count as started


def _process_name(name):
    return isinstance(name, str) and bool(name) and all(c in ALNUM or c in "_-" for c in name)


def _owner_file(root, instance):
    return os.path.join(root, "shared", "run", f"proc-{instance}.release")


def _owner(root, instance):
    try:
        with open(_owner_file(root, instance), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _process_pid(root, release, instance, entry):
    """The running pid of one process instance of ``release``, or 0 (its unit runs another release's: 0 too)."""
    if entry.get("unit"):
        if _owner(root, instance) != release:
            return 0
        pid = _unit_pid(entry["unit"])
        return pid if _alive(pid) else 0
    pid = entry.get("pid")
    if not pid or (entry.get("pid_start") is not None and _starttime(pid) != entry["pid_start"]):
        return 0
    return pid if _alive(pid) or _group_alive(pid) else 0


def _process_states(root, release):
    """Each process instance recorded for ``release``: pid (running: else null), running, unit, log."""
    states = {}
    for instance, entry in sorted((_record(root, release).get("processes") or {}).items()):
        pid = _process_pid(root, release, instance, entry)
        states[instance] = {
            "type": entry.get("type"),
            "pid": pid or None,
            "running": bool(pid),
            "unit": entry.get("unit"),
            "log": entry.get("log"),
            "stop_timeout": entry.get("stop_timeout"),
        }
    return states


def _stop_processes(root, release):
    """Stop ``release``'s process instances gracefully: SIGTERM to all at once, SIGKILL to any still running after its
    type's stop timeout; their records kept, marked stopped. Returns {instance: how it ended}."""
    record = _record(root, release)
    entries = record.get("processes") or {}
    ended, units, plain = {}, [], []
    for instance, entry in entries.items():
        if entry.get("stopped"):
            continue
        pid = _process_pid(root, release, instance, entry)
        if entry.get("unit") and _owner(root, instance) == release:
            units.append((instance, entry))
        elif pid:
            plain.append((instance, entry, pid, _starttime(pid)))
        else:
            ended[instance] = "not running"
    if units:
        # systemd stops them together, each with its drop-in's SIGTERM and TimeoutStopSec, then SIGKILL.
        names = [entry["unit"] for _, entry in units]
        subprocess.run(_systemctl_argv("disable", "--quiet", "--now", *names), capture_output=True)
        for instance, entry in units:
            ended[instance] = "stopped" if not _unit_pid(entry["unit"]) else "still running"
            try:
                os.unlink(_owner_file(root, instance))
            except OSError:
                pass
    groups = {}
    for instance, _, pid, start in plain:
        try:
            groups[instance] = _Group(pid, start)
        except ProcessLookupError:
            continue  # ended since: its pid is another's, or nobody's
        groups[instance].signal(signal.SIGTERM)
    # Each waited for in turn: meanwhile one that ended may have its pid given to another process (``start`` tells).
    for instance, entry, pid, start in plain:
        group = groups.get(instance)
        running = functools.partial(_group_running, group, pid, start)
        end = time.monotonic() + float(entry.get("stop_timeout") or PROCESS_STOP_TIMEOUT)
        while running() and time.monotonic() < end:
            time.sleep(0.05)
        if running():
            # Under warptasks' supervisor, the process's own group in its session too.
            group.signal(signal.SIGKILL, each=True)
            end = time.monotonic() + 5
            while running() and time.monotonic() < end:
                time.sleep(0.05)
            ended[instance] = "still running" if running() else "killed"
        else:
            ended[instance] = "stopped"
        if group is not None:
            group.close()
        _end_writer(entry)
    if entries:
        stopped = {i: dict(e, stopped=e.get("stopped") or time.time()) for i, e in entries.items()}
        for instance, state in ended.items():
            if state == "still running":
                stopped[instance]["stopped"] = None
        _update(root, release, processes=stopped)
    return ended


def _group_running(group, pid, start):
    """Whether a process instance (held as ``group``: None when it had ended) still runs: by its pid only where there
    are no pidfds; else the process held, and its group while provably its own."""
    if group is None:
        return False
    return group.alive() if group.pinned else _still_ours(pid, start)


def _still_ours(pid, start):
    """Whether the process ``pid`` that started at ``start`` (its starttime; None: unknown), or what is left of its
    process group, still runs. A pid that names a process started at another time is another's: ours ended, and its
    group with it (the kernel gives a pid again only once no process has it as its group or session)."""
    now = _starttime(pid)
    if now is not None and start is not None and now != start:
        return False
    return _alive(pid) or _group_alive(pid)


def _start_processes(root, release, req):
    """Start ``release``'s process types as recorded (``process_types``); their instances recorded under ``processes``.

    Returns (started: {instance: state}, failed: [why...]).
    """
    record = _record(root, release)
    types = record.get("process_types") or {}
    manager, unsupervised = _supervisor(req)
    running = {}
    for name, spec in sorted(types.items()):
        if not _process_name(name):
            _fail(f"process type {name!r} is not a name of letters, digits, _ and -")
        timeout = float(spec.get("stop_timeout") or PROCESS_STOP_TIMEOUT)
        for number in range(1, int(spec.get("count", 1)) + 1):
            instance = f"{name}.{number}"
            log = os.path.join(root, "shared", "logs", f"{release}.{instance}.log")
            writer = _log_writer(root, log, req)
            entry = {"type": name, "log": log, "stop_timeout": timeout, "started": time.time(), "stopped": None}
            if manager:
                os.makedirs(os.path.dirname(_owner_file(root, instance)), mode=0o755, exist_ok=True)
                _write(_owner_file(root, instance), release)
                what = f"process {instance}"
                unit, pid = _unit_start(root, "proc", instance, spec["command"], log, what, (signal.SIGTERM, timeout), writer)
                entry.update(unit=unit, pid=pid, pid_start=None)
            else:
                # Under warptasks' supervisor (started again when it crashes), its state in a file of its own.
                state = os.path.join(root, "releases", release, ".warp", f"supervisor-{instance}.json")
                if os.path.lexists(state):
                    os.unlink(state)
                proc, writer_pid = _spawn(["sh", "-c", spec["command"]], log, writer, state=state, stop_signal="SIGTERM")
                supervised = bool(getattr(proc, "warp_supervised", False))
                entry.update(unit=None, pid=proc.pid, pid_start=_starttime(proc.pid), unsupervised=unsupervised)
                entry.update(supervisor="warp" if supervised else None, supervisor_state=state if supervised else None)
                entry.update(log_writer_pid=writer_pid, log_writer_start=_starttime(writer_pid) if writer_pid else None)
            running[instance] = entry
            # Recorded as soon as it runs: an agent killed before the next one starts leaves none that the next
            # start or stop does not know of (and so cannot stop: a second clock).
            _update(root, release, processes=running)
    _update(root, release, processes=running)
    failed = []
    if running:
        time.sleep(float(req.get("settle", PROCESS_SETTLE)))
        entries = _record(root, release).get("processes") or {}
        for instance, state in _process_states(root, release).items():
            # Under warptasks' supervisor a process that exits at once is being started again: it failed all the same.
            if state["running"] and _child_state(entries.get(instance) or {}, state["pid"]).get("restarts"):
                entry = entries.get(instance) or {}
                start = entry.get("pid_start") if entry.get("pid") == state["pid"] else None
                _stop_group(state["pid"], signal.SIGTERM, timeout=2.0, term_timeout=0.0, kill_timeout=3.0, start=start)
                state["running"] = False
            if not state["running"]:
                failed.append(f"{instance} exited at once; its output: {_tail(state['log'], 5).strip() or '(none)'}")
                if state["unit"]:
                    # Not left restarting every RestartSec: it fails the same way until the next deploy.
                    subprocess.run(_systemctl_argv("disable", "--quiet", "--now", state["unit"]), capture_output=True)
    return running, failed


def processes(req):
    """The release's Procfile process types: ``op`` "start", "stop" or "status".

    start: every other release's processes stopped first (so no two clocks run at once, whatever a cut-off deploy
    left), then ``release``'s started from its record's ``process_types`` (``systemd`` as for ``start``). stop:
    ``release``'s stopped gracefully (SIGTERM, then SIGKILL after each type's stop_timeout). status: each instance
    of ``release``. start and stop take ``token`` (fail unless it holds the deploy lock).

    Answer: ``release``, ``stopped`` ({release: {instance: how it ended}}), ``processes`` (each instance's ``pid``,
    ``running``, ``unit``, ``log``), ``failed`` (start: why an instance did not keep running; the answer then
    comes with a non-zero exit).
    """
    root, release, op = req["root"], req["release"], req.get("op")
    if op not in ("start", "stop", "status"):
        _fail(f"unknown processes op {op!r}: start, stop or status")
    answer = {"release": release, "stopped": {}, "failed": []}
    if op in ("start", "stop"):
        _require(req)
    if op == "start":
        for name in _releases(root):
            if name != release and (_record(root, name).get("processes") or {}):
                ended = _stop_processes(root, name)
                if any(state != "not running" for state in ended.values()):
                    answer["stopped"][name] = ended
        _stop_processes(root, release)  # a start again (a rollback back to it) replaces what runs
        _, answer["failed"] = _start_processes(root, release, req)
    elif op == "stop":
        answer["stopped"][release] = _stop_processes(root, release)
    answer["processes"] = _process_states(root, release)
    if answer["failed"]:
        _fail("process types of {} did not start: {}".format(release, "; ".join(answer["failed"])), **answer)
    print(json.dumps(answer))


# -- day-2 operations: restart, stop/start on purpose, config, audit ----------------------------------------
#
# A restart starts a second server of the live release on the other backend port beside the one serving, checks
# it, points the front at it (``switch`` to the same release: only the backend file changes) and stops the first
# one. While it runs, the release's record names the new instance (``port``, ``pid``, ``unit``...) and keeps the
# one it replaces under ``replaced``; :func:`_settle` ends a restart that was cut off (``lock`` calls it), by what
# the front reads: switched, the replaced one is stopped; not switched while it still serves, the new one is.


def _pair(root, record, given=None):
    """The two backend ports the release's servers alternate on: recorded with it, else read from the host's
    releases (one port seen: it is the first of the pair), else ``given`` (the client's settings); None if unknown."""
    ports = record.get("ports")
    if isinstance(ports, list) and len(ports) == 2:
        return [int(p) for p in ports]
    port = int(record.get("port") or 0)
    seen = sorted({int(r["port"]) for r in (_record(root, n) for n in _releases(root)) if r.get("port")})
    if len(seen) == 2 and seen[1] - seen[0] == 1 and port in seen:
        return seen
    if isinstance(given, list) and len(given) == 2 and port in [int(p) for p in given]:
        return [int(p) for p in given]
    if seen == [port] and port:
        return [port, port + 1]
    return None


def _other_port(root, record, given=None):
    """The backend port a second server of the release starts on: the one of its pair it is not on."""
    pair = _pair(root, record, given)
    if not pair:
        _fail(
            "cannot tell the backend ports of this app from its releases: pass the --port (or --backend-port) it was "
            "deployed with, or deploy again"
        )
    port = int(record.get("port") or 0)
    return pair[1] if port == pair[0] else pair[0]


def _command_for(release, record, port):
    """The release's server command for ``port`` (recorded per port by the deploy: a command names its port)."""
    if int(record.get("port") or 0) == port and record.get("command"):
        return record["command"]
    command = (record.get("server_commands") or {}).get(str(port))
    if not command:
        _fail(
            f"release {release} has no server command for port {port} (it was deployed by an older warptasks, "
            "which recorded one port's only): deploy again"
        )
    return command


def _instance(record):
    return {k: record.get(k) for k in INSTANCE_KEYS}


def _instance_pid(inst):
    """The pid of one recorded server instance while it runs (its unit's main process, or its own pid), else 0."""
    if inst.get("unit"):
        return _unit_pid(inst["unit"])
    pid = inst.get("pid")
    if not pid or (inst.get("pid_start") is not None and _starttime(pid) != inst["pid_start"]):
        return 0
    return pid if _alive(pid) or _group_alive(pid) else 0


def _stop_instance(inst, record, req=None):
    """Stop one recorded server instance gracefully (its unit disabled): (state, signals sent)."""
    sig, timeout, term_timeout = _stop_settings(req or {}, record)
    if inst.get("unit"):
        subprocess.run(_systemctl_argv("disable", "--quiet", "--now", inst["unit"]), capture_output=True)
        return ("stopped" if not _unit_pid(inst["unit"]) else "still running"), [signal.Signals(sig).name]
    pid = _instance_pid(inst)
    if not pid:
        return "not running", []
    start = inst.get("pid_start") if inst.get("pid") == pid else None
    state, sent = _stop_group(pid, sig, timeout, term_timeout, start=start)
    _end_writer(inst)
    return state, sent


def _restore(root, release, inst, **values):
    """The record (and pidfile) naming ``inst`` again as the release's server."""
    _update(root, release, **dict(inst, replaced=None, restarting=None, **values))
    if inst.get("pid"):
        _write(os.path.join(root, "releases", release, ".warp", "server.pid"), str(inst["pid"]))


def _front_names(root):
    """The backend the front's file names now (None without a file the front reads)."""
    upstream = (_json(os.path.join(root, "shared", "front.json")) or {}).get("upstream")
    if not upstream or _upstream_ok(root, upstream):
        return None
    try:
        with open(upstream, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _stop_unrecorded(root, release, record):
    """Stop the server a restart started on its other port (``restarting``) and was killed before recording: its
    unit instance (the live server is a unit), or the supervisor its state file names (a file written since the
    restart began, by a process running this deploy's agent copy)."""
    restarting = record.get("restarting")
    port = int(restarting.get("port") or 0) if isinstance(restarting, dict) else 0
    if not port or port == int(record.get("port") or 0):
        return
    if record.get("unit"):
        unit = _unit_name(root, "server").replace("@.service", "@{}.service".format(port))
        subprocess.run(_systemctl_argv("disable", "--quiet", "--now", unit), capture_output=True)
        return
    state = _json(os.path.join(root, "releases", release, ".warp", "supervisor-{}.json".format(port))) or {}
    pid = state.get("supervisor")
    if float(state.get("updated") or 0) < float(restarting.get("since") or 0) or pid == record.get("pid"):
        return  # an older server's file: the restart never got to start one
    try:
        # Its start time read before its command line: the stop then reaches that process only (see _Group), not one
        # given its pid after the look.
        start = _starttime(int(pid or 0))
        with open("/proc/{}/cmdline".format(int(pid or 0)), "rb") as handle:
            args = handle.read().split(b"\0")
    except (OSError, ValueError):
        return
    if start is not None and os.path.join(root, "shared", "warp-agent.py").encode() in args:
        _stop_group(int(pid), _signal_number(record.get("stop_signal") or "SIGTERM"), start=start)


def _settle(root, release, drain=0.0, req=None):
    """End the restart of ``release`` (nothing to do without one): see the section's comment. What was done."""
    record = _record(root, release)
    old = record.get("replaced")
    if not release or not isinstance(old, dict):
        return {}
    if _instance(record) == _instance(old):
        # The restart ended (failed, or was killed) before it recorded a new server: the one "replaced" is the one
        # that serves. A server it started unrecorded is stopped; the record and pidfile name the live one again.
        _stop_unrecorded(root, release, record)
        _restore(root, release, old)
        return {}
    named = _front_names(root)
    switched = named is None or named == "127.0.0.1:{}".format(int(record.get("port") or 0))
    if switched or not _instance_pid(old):
        if not switched:
            _publish(root, release)  # the one it replaced is gone: the new one serves
        if drain and _instance_pid(old):
            time.sleep(drain)  # requests the front sent it before the switch
        state, sent = _stop_instance(old, record, req)
        _update(root, release, replaced=None)
        return {"stopped_port": old.get("port"), "server": state, "signals": sent}
    state, sent = _stop_instance(_instance(record), record, req)
    _restore(root, release, old)
    return {"restored_port": old.get("port"), "server": state, "signals": sent}


def restart(req):
    """Restart the live release's server with no failed request, or start it again after ``stop``.

    Request keys: ``token`` (required: the deploy lock's), ``op``:

    - ``begin``: a new server of the live release from its recorded command,
      health-checked with its recorded settings (``path``, ``host_header``,
      ``timeout``, ``accept`` given override them). ``mode`` "restart"
      (default): beside the running one, on the other backend port
      (``ports``: the client's pair, used when the host's records cannot tell);
      refused for a server stopped on purpose. Supervised as the release's
      server was (a systemd unit unless it was started with --no-systemd;
      ``systemd`` given decides). ``mode`` "start": on its
      recorded port, when it does not run (its unit enabled again); a running
      one is left as it is (``already``). A failed check stops the new server
      and leaves the record naming the old one, which never stopped serving.
      Answer: ``release``, ``port``, ``previous_port`` (the running one it is
      to replace, or null), ``status`` (HTTP), ``pid``, ``unit``.
    - then ``switch`` to the same release points the front at it;
    - ``finish``: the server it replaced stopped gracefully after ``drain``
      seconds (or, when the front was never switched, the new one stopped and
      the old one named again). Answer: ``stopped_port`` or ``restored_port``,
      ``server``, ``signals``.
    """
    root = req["root"]
    if not req.get("token"):
        _fail("restart acts only under the deploy lock: its request needs the lock's token")
    _require(req)
    current = _current(root)
    if not current:
        _fail("no release is live on this host: deploy one first")
    op = req.get("op")
    if op == "finish":
        print(json.dumps(dict(_settle(root, current, float(req.get("drain") or 0), req), release=current)))
        return
    if op != "begin":
        _fail("restart op {!r} is not one of begin, finish".format(op))
    _settle(root, current)  # a restart cut off before its end is ended first
    record = _record(root, current)
    if not record.get("command") or not record.get("port"):
        _fail(f"release {current} has no recorded server command: deploy again")
    mode = req.get("mode") or "restart"
    running = _serving(root, current)
    if mode == "start" and running:
        print(json.dumps({"release": current, "already": True, "port": record["port"], "pid": running}))
        return
    if mode == "restart" and record.get("stopped") and not running:
        _fail(f"the server of {current} was stopped on purpose: `warp start` starts it again")
    _health_values(req.get("health"))
    old = _instance(record)
    port = _other_port(root, record, req.get("ports")) if running else int(record["port"])
    if running:
        _update(root, current, replaced=old, restarting={"port": port, "since": time.time()})
    # Supervised as it was: a unit where systemd runs it, unless its deploy said --no-systemd.
    how = dict(req, systemd=req.get("systemd", record.get("unsupervised") != NO_SYSTEMD))
    values, answer = _launch(root, current, port, _command_for(current, record, port), how, record)
    values["ports"] = _pair(root, record, req.get("ports"))
    _update(root, current, restarted_at=time.time(), restarting=None, **values)
    used = _health_settings(req, record.get("health") or {})
    problem, status = _poll_health(root, current, _record(root, current), used)
    if problem:
        _stop_instance(_instance(values), values)
        _restore(root, current, old, stopped=record.get("stopped"), restarted_at=record.get("restarted_at"))
        kept = "the server that was running keeps serving" if running else "the server stays stopped"
        _fail("{}; {}; the new server's log ends:\n{}".format(problem, kept, _tail(values["log"])))
    answer.update(release=current, port=port, previous_port=old["port"] if running else None, status=status)
    print(json.dumps(answer))


def _write_private(path, data):
    """``data`` as the file ``path``, atomically: a new file only this account can open (0600 from its creation),
    synced, renamed over the old one, the folder synced."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, ".{}.new{}".format(os.path.basename(path), os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _envfile(req):
    """envfile.py, sent as source with the request (the one parser and writer of environment files) as a namespace."""
    text = req.get("envfile")
    if not isinstance(text, str) or "def parse(" not in text:
        _fail("config needs envfile.py's source in its request")
    space = {"__name__": "warp_envfile"}
    exec(compile(text, "envfile.py", "exec"), space)
    return space


def _edited(text, sets, unsets, env, path):
    """``text`` with the names of ``sets`` given their values (in the place of their first line, or added at the
    end) and the names of ``unsets`` removed; every other line (comments too) kept as it is."""
    out, placed = [], set()
    for raw in text.splitlines(True):
        name = next(iter(env["parse"](raw, path)), None)
        if name is None or (name not in sets and name not in unsets):
            out.append(raw)
        elif name in sets and name not in placed:
            out.append(env["render"]({name: sets[name]}))
            placed.add(name)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.extend(env["render"]({name: sets[name]}) for name in sorted(sets) if name not in placed)
    return "".join(out)


def config(req):
    """The host's ``shared/environment``: its names (``op`` "list"; ``reveal``: their values too), or changed
    (``op`` "change", under the lock: ``token``): ``set`` ({name: value}) and ``unset`` ([names]), written
    atomically, 0600 (see :func:`_write_private`). Parsed and written by envfile.py (``envfile``: its source),
    values literal. A name that is not a variable name or a value with a line break is refused, nothing written.

    Answer: list: ``names``, ``values`` (null unless ``reveal``); change: ``set`` (names given a new value),
    ``unchanged`` (names that had that value), ``unset`` (names removed), ``absent`` (names to unset that were not
    there), ``changed`` (whether the file was written). Never a value.
    """
    root, op = req["root"], req.get("op") or "list"
    env = _envfile(req)
    path = os.path.join(root, "shared", "environment")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        text = ""
    except OSError as error:
        _fail("cannot read {}: {}".format(path, error.strerror))
    try:
        values = env["parse"](text, path)
    except ValueError as error:
        # The line itself is not quoted: it may hold a secret, and this error reaches the audit log.
        _fail(
            "{}, line {} is not NAME=VALUE: fix that line on the host, or replace the file with warp deploy --env-file".format(
                path, getattr(error, "number", "?")
            )
        )
    if op == "list":
        print(json.dumps({"names": sorted(values), "values": values if req.get("reveal") else None}))
        return
    if op != "change":
        _fail("config op {!r} is not one of list, change".format(op))
    if not req.get("token"):
        _fail("config changes only under the deploy lock: its request needs the lock's token")
    sets, unsets = req.get("set") or {}, req.get("unset") or []
    if not isinstance(sets, dict) or not isinstance(unsets, list):
        _fail("config: set is an object of names and values, unset a list of names")
    for name in list(sets) + list(unsets):
        if not isinstance(name, str) or not env["_NAME"].match(name):
            _fail("{!r} is not an environment variable name (letters, digits and _, not first a digit)".format(name))
    for name, value in sets.items():
        try:
            env["render"]({name: value if isinstance(value, str) else None})
        except (ValueError, TypeError):
            _fail("the value of {} cannot be written: it must be text on one line (no line break, no NUL byte)".format(name))
    both = sorted(set(sets) & set(unsets))
    if both:
        _fail("{} is both set and unset".format(", ".join(both)))
    with _Guard(root):
        _held(root, req["token"])
        new = _edited(text, sets, set(unsets), env, path)
        if new != text:
            _write_private(path, new.encode("utf-8"))
    answer = {
        "set": sorted(n for n in sets if values.get(n) != sets[n]),
        "unchanged": sorted(n for n in sets if values.get(n) == sets[n]),
        "unset": sorted(n for n in unsets if n in values),
        "absent": sorted(n for n in unsets if n not in values),
        "changed": new != text,
    }
    print(json.dumps(answer))


AUDIT = os.path.join("shared", "audit.log")
AUDIT_RESULTS = ("begun", "ok", "failed")


def _audit_append(root, entry):
    """One line of ``shared/audit.log`` (JSON, 0640): what was done, by whom, from where, how it ended; whether
    written (a deploy path purged has no ``shared`` any more). The caller never puts a secret value in it."""
    if not os.path.isdir(os.path.join(root, "shared")):
        return False
    now = time.time()
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".{:03d}Z".format(int(now % 1 * 1000)),
        "from": (os.environ.get("SSH_CLIENT") or "").split(" ")[0] or None,
    }
    for key in ("action", "by", "release", "result", "error", "details"):
        line[key] = entry.get(key)
    if line["result"] not in AUDIT_RESULTS:
        line["result"] = "failed"
    if isinstance(line["error"], str):
        line["error"] = line["error"][:2000]
    fd = os.open(os.path.join(root, AUDIT), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    try:
        _write_all(fd, (json.dumps(line, sort_keys=True) + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return True


def audit(req):
    """``shared/audit.log``: ``op`` "append" (default) adds ``entry`` (``action``, ``by``, ``release``,
    ``result``: begun/ok/failed, ``error``, ``details``; ``time`` and ``from``, the SSH client's address, are the
    host's); ``op`` "list" answers ``entries``, the newest last, at most ``limit`` (default 50)."""
    root = req["root"]
    if (req.get("op") or "append") == "list":
        entries = []
        try:
            with open(os.path.join(root, AUDIT), encoding="utf-8", errors="replace") as handle:
                for raw in handle:
                    try:
                        entries.append(json.loads(raw))
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        limit = max(int(req.get("limit") or 50), 0)
        print(json.dumps({"entries": entries[-limit:] if limit else []}))
        return
    _require(req)
    print(json.dumps({"written": _audit_append(root, req.get("entry") or {})}))


# -- the app's own account (a root deploy without --user) -------------------------------------------------------
#
# Each app on a host runs as a system account of its own, named from its deploy path (``warp-<slug>-<hash>``, see
# warptasks/remote/account.py) and marked as warptasks' by its comment: an account of that name without the mark is
# someone else's, and is refused rather than shared.

ACCOUNT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
ACCOUNT_MARK = re.compile(r"^warptasks app [0-9a-f]{16}$")
# shared/<this> (root's, 0600): the account a deploy took files from, until it switches (see ``account``, ``handback``).
HANDOVER = "account-handover.json"


def _make_account(name, mark):
    """``useradd`` a system account ``name`` and its group, no home, no login shell, marked with ``mark``."""
    useradd = shutil.which("useradd") or ("/usr/sbin/useradd" if os.path.exists("/usr/sbin/useradd") else None)
    shell = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)), "/bin/false")
    argv = [useradd or "useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", shell]
    argv += ["--user-group", "--comment", mark, name]
    if not useradd:
        _fail(
            "the app runs as the system account {}, which is missing, and this host has no useradd to make it: make it by "
            "hand ({}), or deploy with --user naming an account".format(name, " ".join(shlex.quote(a) for a in argv))
        )
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    return result.stdout.strip()


def _give(folder_fd, name, uids, gids, uid, gid):
    """Give ``name`` in the open folder ``folder_fd`` to ``uid``:``gid`` if it is one to hand over (see
    :func:`_reown`); True when given. A folder or a file is opened (never through a link) and changed through that
    descriptor, so a name swapped after it was looked at cannot take the change elsewhere; a link, socket or pipe is
    changed itself, never what it points to, through a descriptor of its own too (see :func:`_give_special`)."""
    st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
        flags |= os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0
        fd = os.open(name, flags, dir_fd=folder_fd)
        try:
            st = os.fstat(fd)
            if not _handed(st, uids, uid) or (not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode)):
                return False
            os.fchown(fd, uid, gid if gids is None or st.st_gid in gids else -1)
            return True
        finally:
            os.close(fd)
    if not _handed(st, uids, uid):
        return False
    return _give_special(folder_fd, name, uids, gids, uid, gid)


def _give_special(folder_fd, name, uids, gids, uid, gid):
    """:func:`_give` for a link, socket or pipe. Changed by name, it could be swapped, between the look and the change,
    for a hard link to any file elsewhere (any at all on a host without ``fs.protected_hardlinks``), and that file would
    change hands: so it is opened itself (``O_PATH``, never followed), looked at again through that descriptor, and
    changed through ``/proc/self/fd`` (``fchown`` refuses such a descriptor), which names that very one. Without either
    it is left as it is: its folder's owner can replace it."""
    if not hasattr(os, "O_PATH"):
        return False
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=folder_fd)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or not _handed(st, uids, uid):
            return False
        proc = "/proc/self/fd/{}".format(fd)
        if not os.path.samestat(os.stat(proc), st):  # no /proc here: left as it is
            return False
        os.chown(proc, uid, gid if gids is None or st.st_gid in gids else -1)
        return True
    finally:
        os.close(fd)


def _handed(st, uids, uid):
    """Whether a file of this stat is one :func:`_reown` hands over: one of ``uids``' (None: anyone's but ``uid``),
    and no other name (a hard link's other name may be outside the deploy path, someone else's)."""
    if (st.st_uid == uid) if uids is None else (st.st_uid not in uids):
        return False
    return stat.S_ISDIR(st.st_mode) or st.st_nlink == 1


def _reown(root, uids, gids, uid, gid):
    """Give the files under ``root`` owned by one of ``uids`` (None: by anyone but ``uid``) to ``uid``:``gid``, their
    group too where it was one of ``gids`` (None: any). Links are never followed, and a file with several hard links
    is left alone: its other name may be outside the deploy path, someone else's. The walk holds each folder open
    and works relative to it (``os.fwalk``): the app, which can write under ``root`` while this runs as root, cannot
    swap a folder for a link to elsewhere and have that given to it. Answer: how many were given."""
    count = 0
    skip = os.path.join(root, "shared", "wheels")
    for folder, dirs, names, folder_fd in os.fwalk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) != skip]
        for name in dirs + names:
            try:
                count += _give(folder_fd, name, uids, gids, uid, gid)
            except OSError:
                continue
    return count


def account(req):
    """Make sure the app's own account ``name`` exists (made if missing, marked ``mark``), its writable folder
    ``shared/data`` is its own (0750), and the files the app wrote under the deploy path as the account its live
    server ran as before (``www-data``, on a host deployed by an earlier warptasks) are now this account's.

    An existing account of that name is used only if it carries ``mark``: one without it is someone else's, and is
    refused with how to go on. Answer: ``user``, ``group``, ``uid``, ``gid``, ``made``, ``reowned`` (files given to
    it), ``previous`` (the account they were taken from, or null).
    """
    import grp
    import pwd

    root, name, mark = req["root"], req.get("name"), req.get("mark")
    if not isinstance(name, str) or not ACCOUNT_NAME.match(name) or not isinstance(mark, str) or not ACCOUNT_MARK.match(mark):
        _fail("account needs a name (lower case letters, digits and -, a letter first, at most 32) and warptasks' mark")
    if os.geteuid() != 0:
        _fail("an app gets an account of its own only on a deploy as root")
    if not req.get("token"):
        _fail("account only under the deploy lock: its request needs the lock's token")
    _require(req)
    made = False
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        try:
            grp.getgrnam(name)
            _fail(
                "the group {0} exists on this host, but no account {0}: warptasks makes the app's account and its group "
                "{0} together, and will not share a group it did not make. Remove that group if it is unused "
                "(groupdel {0}), or deploy with --user/--group naming the account the app should run as".format(name)
            )
        except KeyError:
            pass
        output = _make_account(name, mark)
        try:
            entry = pwd.getpwnam(name)  # made now, or by another deploy of this path at the same moment
        except KeyError:
            _fail("making the app's account {} failed: {}".format(name, output))
        made = True
    comment = entry.pw_gecos.split(",")[0]
    if comment != mark:
        _fail(
            "the account {0} exists on this host and warptasks did not make it for the deploy path {1} (its comment is "
            "{2!r}, not {3!r}): the app would share it with whatever else runs as {0}. Deploy with --user naming the "
            "account the app should run as, or, if {0} is an account warptasks made for this path and its comment was "
            "changed, set it back: usermod --comment {4} {0}".format(name, root, comment, mark, shlex.quote(mark))
        )
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        _fail("the account {} has root's uid or gid: refusing to run the app as it".format(name))
    uid, gid = entry.pw_uid, entry.pw_gid
    data = os.path.join(root, "shared", "data")
    _safe_mkdir(data, 0o750)
    st = os.lstat(data)
    if not stat.S_ISDIR(st.st_mode):
        _fail("{} is not a folder: the app's writable folder must be one (remove it, then deploy again)".format(data))
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.lchown(data, uid, gid)
    previous, uids, gids = None, set(), set()
    current = _current(root)
    if current and not _missing(root, current):
        # Who the live server runs as: its processes' (the supervisor and the wrappers before run_as.py are root),
        # else the account its release recorded.
        record = _record(root, current) or {}
        pid = _server_pid(root, current)
        running = [pid] + _members(pid) if pid and _alive(pid) else []
        uids = {_uid(p) for p in running} - {None, 0, uid, os.geteuid()}
        if not uids and record.get("account"):
            try:
                uids = {pwd.getpwnam(record["account"]).pw_uid} - {0, uid, os.geteuid()}
            except (KeyError, TypeError):
                pass
        for before in sorted(uids):
            previous = _user(before) if previous is None else "{}, {}".format(previous, _user(before))
            try:
                gids.add(pwd.getpwuid(before).pw_gid)
            except KeyError:
                pass
    if uids:
        # Remembered before anything moves: a deploy that ends without switching (or dies, see ``lock``) hands the
        # files back to the account the live server still runs as.
        back = sorted(uids)[0]
        try:
            back_gid = pwd.getpwuid(back).pw_gid
        except KeyError:
            back_gid = -1
        handover = {"live": current, "from": back, "from_gid": back_gid, "to": uid, "to_gid": gid, "since": time.time()}
        _write_private(_handover_path(root), json.dumps(handover, sort_keys=True).encode())
    # shared/data is the app's, all of it (a migration run as root by an earlier warptasks made files there too).
    reowned = _reown(data, None, None, uid, gid)
    reowned += _reown(root, uids, gids - {0}, uid, gid) if uids else 0
    group = grp.getgrgid(gid).gr_name
    print(
        json.dumps({"user": name, "group": group, "uid": uid, "gid": gid, "made": made, "reowned": reowned, "previous": previous})
    )


def _handover_path(root):
    return os.path.join(root, "shared", HANDOVER)


def _handover(root):
    """The pending hand-over ``account`` recorded (see :func:`_hand_back`), or None."""
    record = _json(_handover_path(root))
    keys = ("from", "from_gid", "to", "to_gid")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), int) for k in keys):
        return None
    return record


def _drop_handover(root):
    try:
        os.unlink(_handover_path(root))
    except FileNotFoundError:
        pass


def _hand_back(root, only_if_live=False):
    """Undo a hand-over of a deploy that ended without switching: the files under ``root`` owned by the app's new
    account go back to the account the live server still runs as (the same walk as :func:`_reown`), and the record
    goes. ``only_if_live`` (the next lock, after a deploy that died): only while ``current`` still names the release
    that was live at the hand-over; after a switch the record is stale, and dropped. Answer: how many were given back
    (None: there was nothing to undo)."""
    record = _handover(root)
    if record is None:
        _drop_handover(root)
        return None
    count = None
    if not only_if_live or _current(root) == record.get("live"):
        if record["from"] not in (0, record["to"]) and record["to"] != 0:
            gids = {record["to_gid"]} if record["from_gid"] >= 0 else set()
            count = _reown(root, {record["to"]}, gids, record["from"], record["from_gid"])
    _drop_handover(root)
    return count


def handback(req):
    """After a deploy that did not switch: the files ``account`` gave the app's new account are the live server's
    account's again, so the last good server, still running as it, writes them as before. Request keys: ``token``
    (required: the deploy lock's). Answer: ``handed_back`` (how many, or null: no hand-over was pending)."""
    root = req["root"]
    if not req.get("token"):
        _fail("handback acts only under the deploy lock: its request needs the lock's token")
    _require(req)
    if os.geteuid() != 0:
        print(json.dumps({"handed_back": None}))
        return
    print(json.dumps({"handed_back": _hand_back(root)}))


ACTIONS = {
    f.__name__: f
    for f in (lock, renew, check, unlock, info, start, health, switch, resync, stop, mark, prune, status, remove)
    + (retire_relay, handover, logpipe, logs, processes, supervise, restart, config, audit, account, handback)
}


def _check(req):
    """Refuse a request whose root or release could point anywhere but one release folder of one deploy."""
    if "root" in req:
        why = _bad_path(req["root"])
        if why:
            _fail("deploy path {!r} {}".format(req["root"], why))
    release = req.get("release")
    if release is not None:
        if not isinstance(release, str) or release in ("", ".", "..") or "/" in release or _bad_path("/" + release):
            _fail(f"release id {release!r} is not one plain folder name")
        # Every action on a release needs its folder: none is made for an id that is not there (mark's create aside).
        if "root" in req and not (req.get("action") == "mark" and req.get("create")):
            why = _missing(req["root"], release)
            if why:
                _fail(why)


def _request():
    """The request: one JSON line on stdin, or the first argument (older callers, and the log writer, whose stdin is
    the server's output). A command line is shown by ``ps`` to every account; stdin is not."""
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.buffer.readline().decode("utf-8", "replace")
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        _fail("the agent's request is one JSON object, on stdin or as its first argument; got {!r}".format(text[:80]))
    return request


if __name__ == "__main__":
    request = _request()
    JSON_ANSWER = request.get("action") != "logs"
    if request.get("action") not in ACTIONS:
        _fail("unknown action {!r}; this agent knows {}".format(request.get("action"), ", ".join(sorted(ACTIONS))))
    _check(request)
    ACTIONS[request["action"]](request)
