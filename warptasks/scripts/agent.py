"""The deploy's hands on a host: lock, start, health-check, switch, stop, prune.

Like :mod:`warptasks.probe`, this file is sent as source to the host's
``python3 -c SOURCE JSON`` through the runner, so the host needs nothing of
ours installed. It must stay self-contained and standard-library only. Each
action prints one JSON object on its last line; a failure exits non-zero
with a message on stderr.

Layout under ``root``: ``releases/<id>/`` (one per deploy, with its own
``.warp/`` environment link, ``deploy.json`` record and ``server.pid``),
``shared/`` (``environment`` mode 0600, ``envs/``, ``wheels/``, ``logs/``,
the front proxy) and ``current`` -> the live release.
"""

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

LOCK = ".warp-deploy.lock"


def _write(path, text, mode=0o644):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
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


def _update(root, release, **values):
    path = _record_path(root, release)
    os.makedirs(os.path.dirname(path), exist_ok=True)
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


def lock(req):
    root = req["root"]
    for sub in ("releases", "shared", "shared/logs", "shared/envs", "shared/wheels"):
        os.makedirs(os.path.join(root, sub), mode=0o755, exist_ok=True)
    os.chmod(root, 0o755)
    env_file = os.path.join(root, "shared", "environment")
    if not os.path.exists(env_file):
        _write(env_file, "# KEY=VALUE lines: the app's secrets, sourced before the server and hooks start\n", 0o600)
    path = os.path.join(root, LOCK)
    deadline = time.monotonic() + float(req.get("wait", 0))
    while True:
        try:
            os.mkdir(path)
            break
        except FileExistsError:
            holder = _json(os.path.join(path, "owner.json")) or {"owner": "unknown (no owner.json)"}
            if req.get("break"):
                shutil.rmtree(path, ignore_errors=True)
                continue
            if time.monotonic() >= deadline:
                _fail("deploy lock held by {} since {}".format(holder.get("owner"), holder.get("since", "?")), 3, holder=holder)
            time.sleep(0.5)
    _write(
        os.path.join(path, "owner.json"),
        json.dumps({"owner": req["owner"], "token": req["token"], "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}),
    )
    print(json.dumps({"locked": True, "info": _info(req)}))


def unlock(req):
    path = os.path.join(req["root"], LOCK)
    holder = _json(os.path.join(path, "owner.json")) or {}
    if holder.get("token") == req["token"]:
        shutil.rmtree(path, ignore_errors=True)
    print(json.dumps({"unlocked": holder.get("token") == req["token"]}))


def _info(req):
    import platform

    root = req["root"]
    current = _current(root)
    wheels = os.path.join(root, "shared", "wheels")
    return {
        "current": current,
        "current_record": _record(root, current) if current else None,
        "current_alive": bool(current) and _alive(_server_pid(root, current)),
        "releases": _releases(root),
        "rsync": bool(shutil.which("rsync")),
        "systemd": os.path.isdir("/run/systemd/system") and bool(shutil.which("systemctl")),
        "machine": platform.machine(),
        "libc": list(platform.libc_ver()),
        "python": "{}.{}".format(*sys.version_info[:2]),
        "wheels": sorted(os.listdir(wheels)) if os.path.isdir(wheels) else [],
        "hostname": socket.gethostname(),
    }


def info(req):
    print(json.dumps(_info(req)))


def _systemd(req):
    """Whether servers run as systemd units: asked for, systemd is running, and we may write system units."""
    return bool(req.get("systemd")) and os.path.isdir("/run/systemd/system") and os.geteuid() == 0


def _slug(root):
    return "".join(c if c.isalnum() else "-" for c in root.strip("/")) or "root"


def _systemctl(*args):
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        _fail("systemctl {} failed: {}".format(" ".join(args), (result.stderr or result.stdout).strip()))
    return result.stdout.strip()


UNIT = """[Unit]
Description=warptasks: {what} of {root} (%i)
After=network.target

[Service]
Type=simple
ExecStart=/bin/sh {root}/shared/run/{prefix}-%i.sh
Restart=on-failure
RestartSec=2
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


def _unit_start(root, prefix, instance, command, log, what):
    """Run ``command`` as ``warp-<path>-<prefix>@<instance>``: started now, and again at boot."""
    run = os.path.join(root, "shared", "run")
    os.makedirs(run, mode=0o755, exist_ok=True)
    _write(
        os.path.join(run, f"{prefix}-{instance}.sh"),
        f"exec >>{shlex.quote(log)} 2>&1 </dev/null\nexec sh -c {shlex.quote(command)}\n",
    )
    template = f"warp-{_slug(root)}-{prefix}@.service"
    path = os.path.join("/etc/systemd/system", template)
    text = UNIT.format(root=root, prefix=prefix, what=what)
    old = None
    try:
        with open(path) as handle:
            old = handle.read()
    except OSError:
        pass
    if old != text:
        _write(path, text)
        _systemctl("daemon-reload")
    unit = template.replace("@.service", f"@{instance}.service")
    _systemctl("enable", "--quiet", unit)
    _systemctl("restart", unit)
    return unit, int(_systemctl("show", "--property=MainPID", "--value", unit) or 0)


def _unit_pid(unit):
    result = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", unit], capture_output=True, text=True)
    return int(result.stdout.strip() or 0) if result.returncode == 0 else 0


def _server_pid(root, release):
    """The pid serving ``release``: its systemd unit's main process, or the pidfile's."""
    unit = _record(root, release).get("unit")
    if unit:
        return _unit_pid(unit)
    return _pid(os.path.join(root, "releases", release, ".warp", "server.pid"))


def start(req):
    """Start the release's server: as a systemd unit where systemd runs, else in a session of its own with a pidfile."""
    root, release, port = req["root"], req["release"], int(req["port"])
    if not _free(port):
        _fail(f"port {port} on 127.0.0.1 is already in use; stop what holds it")
    warp = os.path.join(root, "releases", release, ".warp")
    pidfile = os.path.join(warp, "server.pid")
    log = os.path.join(root, "shared", "logs", release + ".log")
    unit = None
    if _systemd(req):
        unit, pid = _unit_start(root, "server", port, req["command"], log, "app server")
    else:
        with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
            # A new session: the server outlives this SSH command and its
            # process group can be stopped as a whole (Apache's workers too).
            proc = subprocess.Popen(
                ["sh", "-c", req["command"]], stdin=devnull, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
            )
        pid = proc.pid
    _write(pidfile, str(pid))
    _update(root, release, port=port, pid=pid, log=log, status="started", unit=unit)
    print(json.dumps({"pid": pid, "log": log, "unit": unit}))


def _tail(path, lines=20):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def _get(url, host_header, timeout):
    request = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def health(req):
    """Poll the release's server over HTTP until it answers below 400."""
    root, release = req["root"], req["release"]
    record = _record(root, release)
    url = "http://127.0.0.1:{}{}".format(record["port"], req.get("path", "/"))
    deadline = time.monotonic() + float(req.get("timeout", 60))
    last = "no answer"
    while time.monotonic() < deadline:
        if not _alive(_server_pid(root, release)):
            _update(root, release, status="failed")
            _fail("the server exited before answering {}; its log ends:\n{}".format(url, _tail(record.get("log", ""))))
        try:
            status = _get(url, req.get("host_header"), 5)
            if status < 400:
                _update(root, release, status="healthy")
                print(json.dumps({"url": url, "status": status}))
                return
            last = f"HTTP {status}"
        except (OSError, ValueError) as error:
            last = str(getattr(error, "reason", error))
        time.sleep(0.3)
    _update(root, release, status="failed")
    _fail("health check of {} failed ({}); the server's log ends:\n{}".format(url, last, _tail(record.get("log", ""))))


def switch(req):
    """Point ``current`` at the release: a new symlink renamed over the old one, atomic."""
    root, release = req["root"], req["release"]
    target = os.path.join(root, "releases", release)
    if not os.path.isdir(target):
        _fail(f"release {release} does not exist")
    link = os.path.join(root, "current")
    previous = _current(root)
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, link)
    _update(root, release, status="live", live_since=time.time())
    if previous and previous != release:
        _update(root, previous, status="retired" if req.get("retire", "retired") == "retired" else req["retire"])
    print(json.dumps({"current": release, "previous": previous}))


def _stop_pid(pid, drain, timeout):
    if not _alive(pid):
        return "not running"
    # Requests the front proxy sent before the switch finish during the drain.
    time.sleep(drain)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return "stopped"
        except PermissionError:
            os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not _alive(pid):
                return "stopped"
            time.sleep(0.1)
    return "killed"


def stop(req):
    root, release = req["root"], req["release"]
    pidfile = os.path.join(root, "releases", release, ".warp", "server.pid")
    unit = _record(root, release).get("unit")
    begin = time.monotonic()
    if unit:
        time.sleep(float(req.get("drain", 0)))
        subprocess.run(["systemctl", "disable", "--quiet", "--now", unit], capture_output=True)
        state = "stopped" if not _unit_pid(unit) else "still running"
    else:
        state = _stop_pid(_pid(pidfile), float(req.get("drain", 0)), float(req.get("timeout", 20)))
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    if req.get("status"):
        _update(root, release, status=req["status"])
    print(json.dumps({"release": release, "server": state, "seconds": round(time.monotonic() - begin, 1)}))


def mark(req):
    print(json.dumps(_update(req["root"], req["release"], **req["values"])))


def prune(req):
    """Keep the newest ``keep`` good releases (and the live one); drop failed ones and unused environments."""
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
    print(json.dumps({"kept": sorted(good), "removed": removed, "envs_removed": dropped}))


def status(req):
    root = req["root"]
    current = _current(root)
    releases = []
    for name in _releases(root):
        record = _record(root, name)
        pid = _server_pid(root, name)
        releases.append(
            {
                "id": name,
                "status": record.get("status", "incomplete"),
                "port": record.get("port"),
                "pid": pid if _alive(pid) else None,
                "commit": record.get("commit"),
            }
        )
    proxy = _json(os.path.join(root, "shared", "proxy.json")) or {}
    proxy["running"] = _alive(_proxy_pid(os.path.join(root, "shared"), proxy))
    answer = None
    if current and proxy.get("port"):
        try:
            answer = _get("http://127.0.0.1:{}{}".format(proxy["port"], req.get("path", "/")), req.get("host_header"), 5)
        except (OSError, ValueError) as error:
            answer = str(getattr(error, "reason", error))
    print(
        json.dumps({"current": current, "releases": releases, "proxy": proxy, "health": answer, "hostname": socket.gethostname()})
    )


def _proxy_pid(shared, record):
    if record.get("unit"):
        return _unit_pid(record["unit"])
    return _pid(os.path.join(shared, "proxy.pid"))


def proxy(req):
    """Make sure the front proxy listens on the public port, (re)starting it if its code or address changed."""
    root = req["root"]
    shared = os.path.join(root, "shared")
    script = os.path.join(shared, "warp-proxy.py")
    digest = hashlib.sha256(req["source"].encode()).hexdigest()
    record = _json(os.path.join(shared, "proxy.json")) or {}
    pid = _proxy_pid(shared, record)
    wanted = {"listen": req["listen"], "port": int(req["port"]), "digest": digest}
    if _alive(pid) and all(record.get(k) == v for k, v in wanted.items()):
        print(json.dumps({"proxy": "running", "pid": pid}))
        return
    if record.get("unit"):
        subprocess.run(["systemctl", "disable", "--quiet", "--now", record["unit"]], capture_output=True)
    elif _alive(pid):
        _stop_pid(pid, 0, 10)
    _write(script, req["source"])
    log = os.path.join(shared, "logs", "proxy.log")
    argv = [sys.executable, script, req["listen"], str(wanted["port"]), root]
    proc = None
    if _systemd(req):
        command = shlex.join(argv)
        wanted["unit"], pid = _unit_start(root, "proxy", wanted["port"], "exec " + command, log, "front proxy")
    else:
        with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(argv, stdin=devnull, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        pid = proc.pid
    _write(os.path.join(shared, "proxy.pid"), str(pid))
    _write(os.path.join(shared, "proxy.json"), json.dumps(wanted))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if proc else not _alive(_proxy_pid(shared, wanted)):
            _fail(f"the front proxy exited: {_tail(log, 5)}")
        if not _free(wanted["port"]) or req["listen"] not in ("127.0.0.1", "0.0.0.0", "localhost"):
            print(json.dumps({"proxy": "started", "pid": pid, "unit": wanted.get("unit")}))
            return
        time.sleep(0.1)
    _fail("the front proxy did not listen on port {}: {}".format(wanted["port"], _tail(log, 5)))


ACTIONS = {f.__name__: f for f in (lock, unlock, info, start, health, switch, stop, mark, prune, status, proxy)}

if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    ACTIONS[request["action"]](request)
