"""What a deploy ships: the release's files, its id, an archive of them, and sending them with rsync.

Which files: :func:`warptasks.sourcefiles.release_files` (what git tracks, or
the folder less its ignore files; secrets never, whatever git tracks; the
host's ``shared/environment`` holds the app's secrets).

Their modes: what they are here, never wider, and never writable by group or
others (nor setuid). A file only its owner may read here stays so on the host.
Readable files are not narrowed further, because the app's server may run as
another account than the one that deploys: Apache's workers run as www-data
when mod_wsgi is deployed as root. A release holds code, not secrets, and the
host's deploy root, releases and environments stay readable for that reason.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shlex
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from invoke import Context

from ..plan import Step, command_line
from ..run.executor import Say, tail
from ..settings import DeploySettings
from ..sourcefiles import GIT, Selection, release_files
from .layout import Source
from .session import DeployFailed

# rsync's form of shipped_mode: the owner may read and write, group and others never write, no set-id or sticky bits.
RSYNC_CHMOD = "--chmod=Du+rwx,Fu+rw,go-w,a-st"


def _git(root: Path, *args: str) -> str | None:
    """git's answer, or None (no commit yet, no git): only for the release's id, which works without one."""
    try:
        result = subprocess.run([*GIT, "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def source_files(root: Path | str) -> Selection:
    """The release's files (relative paths), how they were chosen, and the secrets left out."""
    return release_files(root)


def shipped_mode(mode: int) -> int:
    """The permission bits a file or folder with ``mode`` has on the host: never more than here (see the module)."""
    owner = 0o700 if stat.S_ISDIR(mode) else 0o600
    return (stat.S_IMODE(mode) & 0o755) | owner


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
        sha.update(f"{rel}\0{shipped_mode(path.stat().st_mode) if path.exists() else 0}\0".encode())
        sha.update(path.read_bytes() if path.is_file() else b"")
        sha.update(b"\0")
    return sha.hexdigest()


def archive(root: Path | str, files: list[str]) -> bytes:
    """A gzip'd tar of ``files`` and their folders: owned by nobody in particular, modes as :func:`shipped_mode` says."""
    root = Path(root)
    buffer = io.BytesIO()
    folders = sorted({"/".join(rel.split("/")[:depth]) for rel in files for depth in range(1, rel.count("/") + 1)})
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for rel in [*folders, *files]:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = shipped_mode(info.mode | (stat.S_IFDIR if info.isdir() else 0))
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


def write_private(sftp: Any, folder: str, name: str, data: bytes) -> str:
    """``data`` written to ``folder/name`` over SFTP, where no other account can open it; the file's path.

    SFTP creates a file 0644 and sets its mode after, and whoever opens it in between keeps reading it: so the file
    is made in ``folder``, which only the deploy's account may enter (0700). ``folder`` is made, or, left by an
    earlier deploy, taken if it is a real folder (never a link) of the account that owns the new file, checked
    before a byte is written. The caller renames the file into place.
    """
    try:
        sftp.mkdir(folder, 0o700)
    except OSError:
        pass  # left by an earlier deploy: checked below
    _require_private(sftp.lstat(folder), folder, None)
    sftp.chmod(folder, 0o700)
    path = posixpath.join(folder, name)
    with sftp.open(path, "wb") as out:
        try:
            out.chmod(0o600)
            _require_private(sftp.lstat(folder), folder, out.stat().st_uid)
        except DeployFailed:
            sftp.remove(path)
            raise
        out.write(data)
    return path


def _require_private(found: Any, folder: str, owner: int | None) -> None:
    """Refuse ``folder`` unless it is a real folder (``owner``'s, when known, and closed to others once chmod'ed)."""
    hint = f"remove {folder} on the host (the deploy makes it again) and look into who made it"
    if not stat.S_ISDIR(found.st_mode):
        raise DeployFailed(f"{folder} is not a folder (a link or a file): no secret is written through it", hint)
    if owner is not None and (found.st_uid != owner or stat.S_IMODE(found.st_mode) & 0o077):
        raise DeployFailed(f"{folder} is not a private folder of the deploy's account: no secret is written in it", hint)


def rsync_step(root: str, files_from: str, host: str, release: str, ssh: str, copy_dest: str | None) -> Step:
    """Send exactly the release's files; with ``copy_dest`` (the live release) only what changed travels."""
    argv = ["rsync", "-rlpt", RSYNC_CHMOD, "--from0", f"--files-from={files_from}", "-e", ssh]
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
    # ssh's accept-new appends to the first file: the given one, where the SSH connection appends too.
    known = ([os.path.expanduser(settings.known_hosts)] if settings.known_hosts else []) + [
        os.path.expanduser("~/.ssh/known_hosts")
    ]
    config = os.path.expanduser("~/.ssh/config")
    return ssh_command(
        conn.user, conn.port, keys, known, settings.accept_unknown_host, config if os.path.exists(config) else None
    )
