"""What a deploy ships: the release's files, its id, an archive of them, and sending them with rsync.

The files are what git tracks (as they are in the working tree), or, outside
git, the tree without version-control data, environments, caches and what
``.gitignore``/``.warpignore`` exclude. Secrets never travel with a release:
``.env`` files are left out; the host's ``shared/environment`` holds them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from invoke import Context

from ..detect import UNTRACKED_DIRS
from ..plan import Step, command_line
from ..run.executor import Say, tail
from ..settings import DeploySettings
from .layout import Source
from .session import DeployFailed

NEVER_SHIPPED = (".env", ".env.*", "*.pyc", "*.pyo")


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def _ignore_patterns(root: Path) -> list[str]:
    patterns: list[str] = []
    for name in (".gitignore", ".warpignore"):
        path = root / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "!")):
                    patterns.append(line.rstrip("/").lstrip("/"))
    return patterns


def _ignored(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(name, p) for p in NEVER_SHIPPED):
        return True
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def source_files(root: Path | str) -> tuple[list[str], str]:
    """The release's files (relative paths), and how they were chosen."""
    root = Path(root)
    tracked = _git(root, "ls-files", "-z", "--cached")
    if tracked is not None:
        files = [f for f in tracked.split("\0") if f and (root / f).is_file() and not _ignored(f, [])]
        return sorted(files), "the files git tracks"
    patterns = _ignore_patterns(root)
    files = []
    for directory, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        dirs[:] = sorted(
            d for d in dirs if d not in UNTRACKED_DIRS and not _ignored(os.path.normpath(os.path.join(rel_dir, d)), patterns)
        )
        for name in sorted(names):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if not _ignored(rel, patterns) and os.path.isfile(os.path.join(directory, name)):
                files.append(rel)
    return sorted(files), "the folder's files, without VCS data, environments, caches and ignored files"


def release_id(root: Path | str, now: float | None = None) -> str:
    """A sortable id: UTC time to the millisecond, then the git commit when there is one."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    commit = (_git(Path(root), "rev-parse", "--short=10", "HEAD") or "").strip()
    return f"{stamp}-{commit}" if commit else stamp


def commit_of(root: Path | str) -> str | None:
    return (_git(Path(root), "rev-parse", "HEAD") or "").strip() or None


def content_digest(root: Path | str, files: list[str], *extra: str) -> str:
    """What a release is made of: file names, modes and contents (and ``extra`` settings)."""
    sha = hashlib.sha256("\0".join(extra).encode() + b"\0")
    for rel in files:
        path = Path(root) / rel
        sha.update(f"{rel}\0{os.access(path, os.X_OK)}\0".encode())
        sha.update(path.read_bytes() if path.is_file() else b"")
        sha.update(b"\0")
    return sha.hexdigest()


def archive(root: Path | str, files: list[str]) -> bytes:
    """A gzip'd tar of ``files``: owned by nobody in particular, readable by all (Apache's workers read them)."""
    root = Path(root)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            if info.isfile():
                with open(root / rel, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def ssh_command(
    user: str | None,
    port: int | None,
    keys: list[str],
    known_hosts: list[str],
    accept_unknown: bool,
    config_file: str | None,
) -> str:
    """The ``ssh`` command rsync runs: the same user, port, keys and host-key checks as the SSH connection."""
    argv = ["ssh", "-F", config_file or "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
    argv += ["-o", f"StrictHostKeyChecking={'accept-new' if accept_unknown else 'yes'}"]
    if known_hosts:
        # OpenSSH reads ~/.ssh from the account's passwd entry, paramiko from $HOME: name them.
        argv += ["-o", "UserKnownHostsFile=" + " ".join(known_hosts)]
    if user:
        argv += ["-l", user]
    if port:
        argv += ["-p", str(port)]
    for key in keys:
        argv += ["-i", key]
    if keys:
        argv += ["-o", "IdentitiesOnly=yes"]
    return shlex.join(argv)


def rsync_step(root: str, files_from: str, host: str, release: str, ssh: str, copy_dest: str | None) -> Step:
    """Send exactly the release's files; with ``copy_dest`` (the live release) only what changed travels."""
    argv = ["rsync", "-rlpt", "--chmod=Da+rx,Fa+rX,go-w", "--from0", f"--files-from={files_from}", "-e", ssh]
    if copy_dest:
        argv.append(f"--copy-dest={copy_dest}")
    remote = f"[{host}]" if ":" in host else host
    argv += [f"{root.rstrip('/')}/", f"{remote}:{release}/"]
    why = "send what changed since the live release (rsync)" if copy_dest else "send the release (rsync)"
    return Step("rsync", tuple(argv), "", why)


def send_with_rsync(
    conn: Any, settings: DeploySettings, host_has_rsync: bool, source: Source, release: str, copy_dest: str | None, say: Say
) -> bool:
    """Send the release with rsync when both ends have it (and ``upload`` allows); False to use SFTP instead."""
    mode = settings.upload
    if mode == "sftp":
        return False
    if not (host_has_rsync and shutil.which("rsync") and shutil.which("ssh")):
        if mode == "rsync":
            raise DeployFailed(
                "rsync was asked for, but it is missing here or on the host", "install rsync, or use --upload auto"
            )
        return False
    step = rsync_step(source.root, source.list_file, conn.host, release, _ssh_like(conn, settings), copy_dest)
    say(f"upload: {step.why}")
    result: Any = Context().run(command_line(step), warn=True, hide=True, pty=False, in_stream=False)
    if result.exited == 0:
        return True
    error = tail(result.stderr or result.stdout, 5)
    if mode == "auto" and ("Permission denied" in error or "verification failed" in error):
        say(f"upload: rsync's ssh cannot log in ({error.strip().splitlines()[-1]}); using SFTP instead")
        return False
    raise DeployFailed(f"rsync failed (exit {result.exited}): {error}")


def _ssh_like(conn: Any, settings: DeploySettings) -> str:
    """The ssh command for rsync, reaching the host as ``conn`` does."""
    keys = conn.connect_kwargs.get("key_filename") or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    known = [os.path.expanduser("~/.ssh/known_hosts")] + (
        [os.path.expanduser(settings.known_hosts)] if settings.known_hosts else []
    )
    config = os.path.expanduser("~/.ssh/config")
    return ssh_command(
        conn.user, conn.port, keys, known, settings.accept_unknown_host, config if os.path.exists(config) else None
    )
