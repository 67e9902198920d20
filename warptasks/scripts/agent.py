"""The deploy's hands on a host: lock, start, health-check, switch, stop, prune.

Like :mod:`warptasks.probe`, this file is sent as source to the host's
``python3 -c SOURCE`` through the runner, its request one JSON line on its
stdin (``python3 -c SOURCE JSON`` works too), so the host needs nothing of
ours installed. It must stay self-contained and standard-library only. Each
action prints one JSON object on its last line; a failure exits non-zero
with a message on stderr.

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

import hashlib
import http.client
import json
import os
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
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    if not pgid:
        return False
    if os.path.isdir("/proc/self"):
        for name in os.listdir("/proc"):
            if name.isdigit():
                fields = _stat(name)
                if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                    return True
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


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
    """This agent's source: its file, or the ``-c`` argument it was started with (read from /proc)."""
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


def _log_writer(root, log, req):
    """The argv of the capped writer for ``log``; None when the request turns the cap off or this agent cannot copy itself."""
    max_bytes = int(req.get("log_max_bytes", LOG_MAX_BYTES) or 0)
    if max_bytes <= 0:
        return None
    text = _own_source()
    if not text:
        return None
    script = os.path.join(root, "shared", "warp-agent.py")
    _write_if_changed(script, text)
    config = {"action": "logpipe", "path": log, "max_bytes": max_bytes, "keep": int(req.get("log_keep", LOG_KEEP))}
    return [sys.executable or "python3", script, json.dumps(config, sort_keys=True)]


def _spawn(argv, log, writer):
    """Start ``argv`` in a session of its own, its output to ``log`` through ``writer``; (process, writer's pid)."""
    with open(os.devnull, "rb") as devnull:
        if writer is None:
            out = _open_log(log)
            try:
                proc = subprocess.Popen(
                    argv, stdin=devnull, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
                )
            finally:
                os.close(out)
            return proc, None
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
                argv, stdin=devnull, stdout=write_end, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
            )
        finally:
            os.close(write_end)
    return proc, pipe.pid


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


def logpipe(req):
    """Copy stdin to ``path``, rotating it at ``max_bytes`` and keeping ``keep`` older files; until end of input.

    Request keys: ``path``, ``max_bytes`` (0: no cap), ``keep``. Ignores
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1 and SIGUSR2 (under
    systemd it gets the server's stop signal too): it ends when every writer
    has closed the pipe. A full disk loses lines, never blocks the server.
    Files are cut at a line end where a line fits.
    """
    path, max_bytes, keep = req["path"], int(req.get("max_bytes") or 0), int(req.get("keep", LOG_KEEP))
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
        "front_home": FRONT_HOME if os.geteuid() == 0 else os.path.join(os.path.expanduser("~"), ".local", "share", "warp-front"),
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
# does not start at boot. Without either, a server is a plain process with a
# pidfile, and ``info``/``status`` say why (``supervision``). A unit is
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
    """Start the release's server: as a systemd unit where one can supervise it, else in a session of its own with a
    pidfile. As root the unit is the system's; as another account, its own user unit where lingering is on.

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

    Answer: ``pid``, ``log``, ``log_capped`` (false when the output goes to
    the file uncapped), ``unit``, ``stop_signal``, ``stop_timeout``,
    ``supervised``, ``supervision`` (the manager, or why none: see
    :func:`_supervisor`), ``reclaimed`` (a list, one entry per release
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
    if manager:
        unit, pid = _unit_start(root, "server", port, command, log, "app server", (sig, stop_timeout), writer)
    else:
        proc, writer_pid = _spawn(["sh", "-c", command], log, writer)
        pid = proc.pid
    _write(pidfile, str(pid))
    values = {"port": port, "command": command, "pid": pid, "pid_start": None if unit else _starttime(pid), "log": log}
    values["unit"] = unit
    values.update(log_writer_pid=writer_pid, log_writer_start=_starttime(writer_pid) if writer_pid else None)
    values.update(log_capped=writer is not None)
    values.update(stop_signal=sig.name, stop_timeout=stop_timeout, unsupervised=unsupervised, stopped=None)
    answer = {"pid": pid, "port": port, "log": log, "unit": unit, "stop_signal": sig.name, "stop_timeout": stop_timeout}
    answer["reclaimed"] = reclaimed
    answer.update(log_capped=writer is not None, supervised=bool(unit), supervision=unsupervised or _supervision(values))
    return values, answer


def _supervision(record):
    """How a release's server is supervised, in words: by which manager, or why by none (and what to do about it)."""
    if record.get("unit"):
        return "systemd --user" if _user_units() else "systemd"
    if record.get("unsupervised") == NO_SYSTEMD:
        return NO_SYSTEMD
    # What the host lacks now; when it lacks nothing any more, the next deploy makes the server a unit.
    return _supervisor({"systemd": True})[1] or "a plain process, started before systemd could supervise it: deploy again"


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
    groups = set()
    for pid in holders:
        fields = _stat(pid)
        if fields and len(fields) > 2:
            groups.add(int(fields[2]))
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
    while time.monotonic() < deadline:
        pid = _server_pid(root, release)
        if not _alive(pid):
            _wait_writer(record, 2)  # the server's last words, before its log is quoted
            return f"the server exited before answering {url}", None
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


def _stop_group(pid, first=signal.SIGTERM, timeout=20.0, term_timeout=5.0, kill_timeout=5.0):
    """Stop the process group ``pid`` leads: ``first``, then SIGTERM, then SIGKILL, each given its time to work.

    The group is done when no process of it runs any more (not only ``pid``:
    a shell wrapper may die at once while the server it started still
    finishes its requests). Returns how it ended and the signals sent.
    """
    sent = []
    if not pid or pid <= 1 or (not _alive(pid) and not _group_alive(pid)):
        return "not running", sent
    steps = [(first, timeout)]
    if first != signal.SIGTERM:
        steps.append((signal.SIGTERM, term_timeout))
    steps.append((signal.SIGKILL, kill_timeout))
    for index, (sig, wait) in enumerate(steps):
        _signal_group(pid, sig)
        sent.append(signal.Signals(sig).name)
        end = time.monotonic() + max(float(wait), 0.0)
        while True:
            if not _alive(pid) and not _group_alive(pid):
                if index == 0:
                    return "stopped", sent
                return ("killed" if sig == signal.SIGKILL else "stopped by SIGTERM"), sent
            if time.monotonic() >= end:
                break
            time.sleep(0.05)
    return "still running", sent


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
        state, sent = _stop_group(_server_pid(root, release), sig, timeout, term_timeout)
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
        if _alive(_server_pid(root, name)):
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
        if any(name == f"{r}.log" or name.startswith(f"{r}.log.") for r in removed):
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
    ``stop_timeout``), ``front`` (``upstream``: the file the front reads,
    ``backend``: what it names, ``relay``: the old relay's port while one
    still runs), ``health`` (the public answer), ``hostname``, ``supervised``
    (whether the live release's server is a systemd unit; null without a
    live release) and ``supervision`` (by which manager, or why by none).
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
        releases.append(
            {
                "id": name,
                "status": record.get("status", "incomplete"),
                "port": record.get("port"),
                "pid": pid if _alive(pid) else None,
                "commit": record.get("commit"),
                "health": record.get("health"),
                "stop_signal": record.get("stop_signal"),
                "stop_timeout": record.get("stop_timeout"),
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
    state.update(supervised=None if live is None else bool(live.get("unit")), supervision=live and _supervision(live))
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
        stopped = _stop_group(pid, signal.SIGTERM, 10)[0] != "still running"
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
    proc, _ = _spawn(argv, os.path.join(shared, "logs", "proxy.log"), None)
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
    state, sent = _stop_group(pid, sig, timeout, term_timeout)
    _end_writer(inst)
    return state, sent


def _restore(root, release, inst, **values):
    """The record (and pidfile) naming ``inst`` again as the release's server."""
    _update(root, release, **dict(inst, replaced=None, **values))
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


def _settle(root, release, drain=0.0, req=None):
    """End the restart of ``release`` (nothing to do without one): see the section's comment. What was done."""
    record = _record(root, release)
    old = record.get("replaced")
    if not release or not isinstance(old, dict):
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
        _update(root, current, replaced=old)
    # Supervised as it was: a unit where systemd runs it, unless its deploy said --no-systemd.
    how = dict(req, systemd=req.get("systemd", record.get("unsupervised") != NO_SYSTEMD))
    values, answer = _launch(root, current, port, _command_for(current, record, port), how, record)
    values["ports"] = _pair(root, record, req.get("ports"))
    _update(root, current, restarted_at=time.time(), **values)
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


ACTIONS = {
    f.__name__: f
    for f in (lock, renew, check, unlock, info, start, health, switch, resync, stop, mark, prune, status, remove)
    + (retire_relay, handover, logpipe, restart, config, audit)
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
    if request.get("action") not in ACTIONS:
        _fail("unknown action {!r}; this agent knows {}".format(request.get("action"), ", ".join(sorted(ACTIONS))))
    _check(request)
    ACTIONS[request["action"]](request)
