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


@contextmanager
def build_lock(env_root: str, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the project's build lock; when another build holds it, say who and wait for it.

    A first build that fails (say, a setting refused before anything ran)
    leaves no environment folder behind just for its lock.
    """
    created = not os.path.isdir(env_root)
    os.makedirs(env_root, exist_ok=True)
    path = os.path.join(env_root, LOCK_NAME)
    # O_NOFOLLOW: the folder is the user's, but never write through a planted link.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"build: waiting for another build of this project to finish ({_holder(fd)})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    except BaseException:
        if created and os.listdir(env_root) == [LOCK_NAME]:
            os.unlink(path)
            os.rmdir(env_root)
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
