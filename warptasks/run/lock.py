"""One build at a time per project: a lock file in the environment folder.

Two ``warp build`` runs in one project would otherwise plan from the same
facts, build the same keyed environment into one folder and switch in turn.
The lock is ``flock`` on a file, so the kernel drops it when its holder
dies, however it dies: a killed build never leaves a lock to break by hand.
Builds on remote hosts are serialised by the deploy lock instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOCK_NAME = "build.lock"


# How many times a build takes the lock again after the file it waited on was removed under it (by a first build that
# failed, see build_lock): each time another build has taken the new one, so this bounds a race, never a wait.
ATTEMPTS = 20


@contextmanager
def build_lock(env_root: str, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the project's build lock; when another build holds it, say who and wait for it.

    A first build that fails (say, a setting refused before anything ran)
    leaves no environment folder behind just for its lock: it removes the
    lock file, maybe while another build waits on it. That one then holds a
    lock on a file no longer there, which a third build would not see: so a
    lock counts only when the file locked is still the one at the path, else
    it is taken again on the file there now.
    """
    for _ in range(ATTEMPTS):
        created = not os.path.isdir(env_root)
        os.makedirs(env_root, exist_ok=True)
        fd = _locked(os.path.join(env_root, LOCK_NAME), say)
        if fd is not None:
            break
    else:
        raise RuntimeError(f"the build lock {os.path.join(env_root, LOCK_NAME)} was removed {ATTEMPTS} times while waited on")
    with _holding(fd, env_root, created):
        yield


def _locked(path: str, say: Callable[[str], None]) -> int | None:
    """A descriptor of ``path`` locked by this process, or None when the file was removed (or replaced) before that."""
    try:
        # O_NOFOLLOW: the folder is the user's, but never write through a planted link.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:  # its folder removed by a failed first build, just now
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"build: waiting for another build of this project to finish ({_holder(fd)})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        mine = os.fstat(fd)
        there = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
        os.close(fd)
        return None
    return fd


@contextmanager
def _holding(fd: int, env_root: str, created: bool) -> Iterator[None]:
    path = os.path.join(env_root, LOCK_NAME)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    except BaseException:
        if created and os.listdir(env_root) == [LOCK_NAME]:
            # Still locked: a build that opened the file meanwhile finds it gone once it has the lock, and retries.
            os.unlink(path)
            try:
                os.rmdir(env_root)
            except OSError:  # another build made its lock there meanwhile: the folder is its now
                pass
        raise
    finally:
        os.close(fd)  # closing releases the flock


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        data = {}
    if not data:
        return "holder unknown"
    return f"pid {data.get('pid')} on {data.get('host')}, since {data.get('since')}"
