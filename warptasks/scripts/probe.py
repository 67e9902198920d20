"""Facts read from the machine a plan will run on.

This file is sent, as source, to the target's Python (``python -c``) through
the runner, so it must stay self-contained and standard-library only. It
prints one JSON object. It reads; it never changes anything.
"""

import json
import os
import shutil
import ssl
import sys


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _json(path):
    text = _read(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _chain(mount, path):
    """``mount`` + ``path`` and each ancestor up to the mount point: a limit anywhere above applies."""
    found = []
    path = "/" + path.strip("/")
    while True:
        found.append(os.path.join(mount, path.lstrip("/")))
        if path == "/":
            return found
        path = os.path.dirname(path)


def _cgroup():
    """Raw CPU and memory limit files of this process's cgroups, v1 and v2 (hybrid included)."""
    raw = {"v2": {}, "v1": {}}
    own = {}
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else ["<v2>"]:
                own[controller] = parts[2]
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        root, mount, fstype, options = fields[3], fields[4], rest[0], rest[2].split(",")
        if fstype == "cgroup2":
            relative = os.path.relpath(own.get("<v2>", "/"), root) if root != "/" else own.get("<v2>", "/")
            for directory in _chain(mount, "/" if relative.startswith("..") else relative):
                for name in ("cpu.max", "memory.max"):
                    value = _read(os.path.join(directory, name))
                    if value is not None:
                        raw["v2"].setdefault(name, []).append(value.strip())
        elif fstype == "cgroup":
            for controller, files in (("cpu", ("cpu.cfs_quota_us", "cpu.cfs_period_us")), ("memory", ("memory.limit_in_bytes",))):
                if controller not in options:
                    continue
                relative = own.get(controller, "/")
                relative = os.path.relpath(relative, root) if root != "/" else relative
                for directory in _chain(mount, "/" if relative.startswith("..") else relative):
                    values = [_read(os.path.join(directory, f)) for f in files]
                    if None in values:
                        continue
                    if controller == "cpu":
                        raw["v1"].setdefault("cpu", []).append([v.strip() for v in values])
                    else:
                        raw["v1"].setdefault("limit_in_bytes", []).append(values[0].strip())
    return raw


# Where Linux distributions keep the system's CA bundle (the places uv's system store is read from).
CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cacert.pem",
)


def _system_ca():
    """Whether a system CA bundle with at least one certificate exists."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.openssl_cafile, *CA_FILES):
        try:
            with open(path, "rb") as handle:
                if b"-----BEGIN CERTIFICATE-----" in handle.read(1 << 20):
                    return True
        except (OSError, TypeError):
            continue
    return False


def _memtotal():
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _trusted(path, directory):
    """Whether ``path`` itself (never a link) is a folder (or file) of this account or root that no one else may write.

    In a shared envs folder another account can make a folder that looks complete: its Python must never be reused
    (run by this account, root included, as the builder and the server).
    """
    import stat

    try:
        info = os.lstat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is not None and info.st_uid not in (euid, 0):
        return False
    return kind and not _writable_by_others(info, path)


def _writable_by_others(info, path=None, trusted=None):
    """Whether accounts other than the owner may write: others, or a group that is not this account's own (a umask of
    002 with a group per user makes this account's folders group-writable, by this account's group only).

    With ``path``, its access ACL counts too: the group bits are then the ACL's mask, which a named account's write
    (setfacl -m u:someone:rwx, or a default ACL of the folder it was made in) sets though the group's own may not.
    """
    if info.st_mode & 0o002:
        return True
    if not info.st_mode & 0o020:  # the group class (an ACL's mask) may not write: neither may any ACL entry
        return False
    group_writes = True
    acl = _acl_writers(path) if path is not None else None
    if acl is not None:
        named, group_writes = acl
        if named:
            return True
    return group_writes and not _own_group(info.st_gid, trusted)


def _acl_writers(path):
    """(a named account or group may write, the owning group may write) by ``path``'s access ACL; None: it has none."""
    import struct

    try:
        data = os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except (AttributeError, OSError):  # no xattrs here, no ACL, or not supported: the mode bits say it all
        return None
    named = group = False
    for offset in range(4, len(data) - 7, 8):
        tag, perm, _id = struct.unpack_from("<HHI", data, offset)
        if tag in (0x02, 0x08) and perm & 0x02:  # ACL_USER, ACL_GROUP with write
            named = True
        elif tag == 0x04 and perm & 0x02:  # ACL_GROUP_OBJ
            group = True
    return named, group


def _own_group(gid, trusted=None):
    """Whether ``gid`` is this account's group and no untrusted account's: its primary group, no one else listed in it,
    nor having it as theirs (a shared primary group, as "users", lets every member write what is group-writable).

    ``trusted``: the accounts besides this one and root whose writing changes nothing (the project's owner, whose code
    runs anyway: an S2I image built as 1001 in group 0 and run as any uid in group 0, as OpenShift does).
    """
    if not hasattr(os, "getegid") or gid != os.getegid():
        return False
    euid = os.geteuid()
    allowed = {euid, 0} | set(trusted or ())
    try:
        import grp
        import pwd
    except ImportError:
        return True
    try:
        if [m for m in grp.getgrgid(gid).gr_mem if _uid_of(pwd, m) not in allowed]:
            return False
    except KeyError:
        pass  # a group with no entry lists no one; the accounts whose group it is are still looked at
    return not [p for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid not in allowed]


def _uid_of(pwd, name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _trusted_owners(project):
    """The accounts besides this one and root a project's folders may belong to: the project folder's owner (its code
    is what the server runs, so an environment it could swap gives it nothing more)."""
    if not project:
        return ()
    try:
        return (os.stat(project).st_uid,)
    except OSError:
        return ()


def _envs(envs_dir):
    """Environments whose build completed, made by this account (or root): the folder and its record are its own."""
    keys = []
    try:
        names = os.listdir(envs_dir)
    except OSError:
        return keys
    for name in names:
        folder = os.path.join(envs_dir, name)
        if _trusted(folder, True) and _trusted(os.path.join(folder, "warp-env.json"), False):
            keys.append(name)
    return sorted(keys)


def _unsafe_envs(envs_dir, trusted=()):
    """[problem, fix] when the envs folder itself is not safe to build in or start from, else None.

    Another account that may write there can remove an environment and put its own in its place, or plant one at a
    key before this account builds it: the folder must be this account's (or root's), and no one else may write to it.
    """
    import shlex

    parent = _unsafe_parents(envs_dir, trusted)
    if parent:
        return parent
    try:
        info = os.stat(envs_dir)
    except OSError:
        return None  # not made yet: the build makes it, this account's
    quoted = shlex.quote(envs_dir)
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is not None and info.st_uid not in (euid, 0, *trusted):
        try:
            import pwd

            owner = "%s (uid %d)" % (pwd.getpwuid(info.st_uid).pw_name, info.st_uid)
            me = pwd.getpwuid(euid).pw_name
        except (ImportError, KeyError):
            owner, me = "uid %d" % info.st_uid, str(euid)
        return [
            "the environments folder %s belongs to %s, not to this account" % (envs_dir, owner),
            "give it to this account (chown %s %s) or choose a folder of its own with envs_dir" % (me, quoted),
        ]
    if _writable_by_others(info, os.path.realpath(envs_dir), trusted):
        return [
            "the environments folder %s may be written by other accounts (mode %03o)" % (envs_dir, info.st_mode & 0o777),
            "make it writable by its owner only (chmod go-w %s) or choose a folder of this account's own with envs_dir" % quoted,
        ]
    return None


def _unsafe_parents(envs_dir, trusted=()):
    """[problem, fix] for the first folder above the envs folder (up to /) another account may change, else None.

    As OpenSSH's StrictModes for ~/.ssh: an account that may write to a folder above can rename the checked envs folder
    away and put its own in its place. Each must be this account's or root's, and writable by them alone (the same group
    and ACL rules as the envs folder's) unless sticky (as /tmp): there only an entry's owner may rename it. Both the path
    as given and as resolved (its links followed) are checked.
    """
    import shlex
    import stat

    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is None:
        return None
    seen = set()
    for start in (os.path.abspath(envs_dir), os.path.realpath(envs_dir)):
        folder = os.path.dirname(start)
        for _ in range(start.count("/") + 1):
            if folder not in seen:
                seen.add(folder)
                try:
                    info = os.lstat(folder)
                except OSError:
                    info = None  # not made yet, as the envs folder: the folders above it are looked at
                if info is not None and stat.S_ISDIR(info.st_mode):
                    quoted = shlex.quote(folder)
                    if info.st_uid not in (euid, 0, *trusted):
                        try:
                            import pwd

                            owner = "%s (uid %d)" % (pwd.getpwuid(info.st_uid).pw_name, info.st_uid)
                        except (ImportError, KeyError):
                            owner = "uid %d" % info.st_uid
                        return [
                            "the folder %s, above the environments folder %s, belongs to %s" % (folder, envs_dir, owner),
                            "build as that account, or choose an envs_dir (and project folder) whose folders up to / "
                            "belong to this account or root",
                        ]
                    if not info.st_mode & stat.S_ISVTX and _writable_by_others(info, folder, trusted):
                        return [
                            "the folder %s, above the environments folder %s, may be written by other accounts "
                            "(mode %03o)" % (folder, envs_dir, info.st_mode & 0o777),
                            "make it writable by its owner only (chmod go-w %s), or sticky (chmod +t %s), or choose an "
                            "envs_dir whose folders up to / only this account or root may write" % (quoted, quoted),
                        ]
            if folder == "/":
                break
            folder = os.path.dirname(folder)
    return None


def _foreign_envs(envs_dir):
    """[name, why] of the folders in ``envs_dir`` a build may not use: a link, or another account's, or others may write."""
    import stat

    found = []
    try:
        names = os.listdir(envs_dir)
    except OSError:
        return found
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    for name in sorted(names):
        try:
            info = os.lstat(os.path.join(envs_dir, name))
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            found.append([name, "it is a link"])
        elif euid is not None and info.st_uid not in (euid, 0):
            try:
                import pwd

                owner = "%s (uid %d)" % (pwd.getpwuid(info.st_uid).pw_name, info.st_uid)
            except (ImportError, KeyError):
                owner = "uid %d" % info.st_uid
            found.append([name, "it belongs to " + owner])
        elif _writable_by_others(info, os.path.join(envs_dir, name)):
            found.append([name, "other accounts may write to it"])
    return found


def _worker_accounts():
    """Unprivileged accounts that exist, with their primary group."""
    try:
        import grp
        import pwd
    except ImportError:
        return []
    found = []
    for user in ("www-data", "apache", "nobody", "daemon"):
        try:
            entry = pwd.getpwnam(user)
            found.append([user, grp.getgrgid(entry.pw_gid).gr_name])
        except KeyError:
            continue
    return found


def _others_can_read(path):
    """Whether an account other than the owner can reach and read ``path``."""
    import stat

    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        parent = os.path.dirname(path)
        while parent and parent != "/":
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(parent)
    except OSError:
        return False
    return True


def tree_digest(root, ignore=()):
    """A cheap fingerprint of a source tree: names, sizes, modification times (``ignore``: folder names)."""
    import hashlib

    skip = set(ignore)
    sha = hashlib.sha256()
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(directory, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            sha.update(("%s\0%d\0%d\0" % (os.path.relpath(path, root), info.st_size, info.st_mtime_ns)).encode())
    return sha.hexdigest()


def record(request):
    """Write the build state, with the tree's fingerprint as the build left it."""
    state = dict(request["record"])
    state["source"] = tree_digest(request["project"], request.get("ignore", ()))
    path = request["state_file"]
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(state, handle, sort_keys=True)
    os.replace(path + ".tmp", path)


def resources():
    """The CPUs and memory this process may use, raw: also read by an image's entry point to size its server."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"cpu_count": os.cpu_count(), "affinity": affinity, "memtotal": _memtotal(), "cgroup": _cgroup()}


def python_facts():
    """The running Python's own facts: what warptasks may keep between runs (see warptasks.run.facts_cache)."""
    base = getattr(sys, "_base_executable", sys.executable) or sys.executable
    try:
        import virtualenv  # noqa: F401

        has_virtualenv = True
    except ImportError:
        has_virtualenv = False
    python = {
        "executable": os.path.realpath(base),
        "version": "%d.%d" % sys.version_info[:2],
        "full_version": sys.version.split()[0],
        "prefix": sys.base_prefix,
        "running": sys.executable,
    }
    return python, has_virtualenv


def gather(request, known=None):
    """The facts, as one JSON-ready dict; ``known``: (python, has_virtualenv) read earlier by the same Python.

    With ``known``, this may run in another process of the same machine and account (warptasks itself, for a
    local start): everything else is read afresh, here, as the probe would.
    """
    env_dir = request.get("env_dir", "")
    envs_dir = request.get("envs_dir", "")
    current = os.path.join(env_dir, "current") if env_dir else ""
    uv = None
    for candidate in request.get("uv_candidates", []) + ["uv"]:
        found = shutil.which(candidate)
        if found:
            uv = found
            break
    python, has_virtualenv = known or python_facts()
    python = dict(python, others_can_read=_others_can_read(python["executable"]))
    facts = {
        "python": python,
        "has_virtualenv": has_virtualenv,
        "uv": uv,
        "system_ca": _system_ca(),
        "apxs": shutil.which("apxs") or shutil.which("apxs2") or shutil.which("apxs", path="/usr/sbin:/usr/bin"),
        "euid": os.geteuid() if hasattr(os, "geteuid") else None,
        "home": os.path.expanduser("~"),
        "worker_accounts": _worker_accounts(),
        "cache_home": os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    }
    facts.update(resources())
    facts.update(
        {
            "state": _json(os.path.join(env_dir, "state.json")) if env_dir else None,
            "current": os.path.realpath(current) if current and os.path.islink(current) else None,
            "complete_envs": _envs(envs_dir) if envs_dir else [],
            "foreign_envs": _foreign_envs(envs_dir) if envs_dir else [],
            "unsafe_envs": _unsafe_envs(envs_dir, _trusted_owners(request.get("root"))) if envs_dir else None,
            "static": _json(os.path.join(env_dir, "static.json")) if env_dir else None,
            "source_digest": tree_digest(request["project"], request.get("ignore", ())) if request.get("project") else None,
        }
    )
    return facts


def main(argv):
    request = json.loads(argv[1]) if len(argv) > 1 else {}
    if request.get("record"):
        record(request)
        return
    sys.stdout.write(json.dumps(gather(request)))


if __name__ == "__main__":
    main(sys.argv)
