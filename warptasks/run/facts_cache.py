"""Facts for a local start (and a no-op build) without a probe process: the Python read once, the rest read here.

``warp start`` used to run the probe (:mod:`warptasks.scripts.probe`) with the environment's Python every time, a
Python start-up of its own before the server's. What the probe reads falls in two parts:

- the Python's own facts (its base installation, version, prefix; whether it has virtualenv), which change only
  when that Python or the environment does;
- everything else (the build state, ``current``, static files, accounts, CPUs and memory, the CA store, uv, apxs),
  which may change between any two starts, but is the same read from this process: a local start runs on the same
  machine, as the same account, in the same process tree (it execs the server), with the same variables.

So the first part is kept in a file private to the user, beside the build's own caches, and used only while a stamp
of every file it depends on is unchanged (the environment's ``python`` link and what it points at, its
``pyvenv.cfg``, the base interpreter: device, inode, size, modification and change times, so a rebuilt environment,
a switched ``current``, an upgraded or replaced Python, a ``chmod`` all miss), and only for the warptasks and probe
that wrote it; the second part is read afresh by the probe's own code, imported. Anything unexpected (no private
folder, a file that is not the user's, an unreadable or malformed entry) is a miss, and a miss runs the probe as
before: the cache can make a start faster, never different.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import asdict
from typing import Any

from .. import __version__
from ..errors import WarpError
from ..facts import Facts
from ..scripts import probe
from ..scripts import source as script_source
from .executor import Runner, gather_facts

SUBDIR = ("warptasks", "facts")
KEEP = 64  # entries (one per environment Python started); past this, the older half goes


def open_folder(environ: dict[str, str] | None = None) -> int | None:
    """The user's private folder for these entries (made 0700 if missing), opened; None when it is not private to them.

    Every later operation is relative to this descriptor, so a folder swapped for a link (or another folder) after
    this check is never written to, and pruning never removes anything outside it.
    """
    environ = dict(os.environ) if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    # Each part below the cache home is made and opened relative to the one above, never through a link: a
    # ``warptasks`` folder swapped for a link to another account's folder is refused, not followed.
    for name in SUBDIR:
        try:
            try:
                os.mkdir(name, mode=0o700, dir_fd=fd)
            except FileExistsError:
                pass
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = inner
        try:
            if os.fstat(fd).st_uid != os.geteuid():
                os.close(fd)
                return None
        except OSError:
            os.close(fd)
            return None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o700)
    except OSError:
        os.close(fd)
        return None
    return fd


def _stamp(path: str, follow: bool = True) -> list[int] | None:
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def stamps(python: str, executable: str) -> dict[str, Any] | None:
    """What the Python's facts depend on, as it is now; None when it cannot be told (a command name, a missing file).

    ``pyvenv`` is None for a Python outside a virtual environment: one appearing there is a change like any other.
    """
    if not os.path.isabs(python) or not os.path.isabs(executable):
        return None
    env = os.path.dirname(os.path.dirname(python))
    found = {
        "link": _stamp(python, follow=False),
        "python": _stamp(python),
        "pyvenv": _stamp(os.path.join(env, "pyvenv.cfg")),
        "executable": _stamp(executable),
    }
    return None if None in (found["link"], found["python"], found["executable"]) else found


def _writer() -> str:
    """This warptasks and its probe: an entry another one wrote is not used."""
    return hashlib.sha256(f"{__version__}\0{script_source('probe.py')}".encode()).hexdigest()


ENTRY = re.compile(r"[0-9a-f]{32}\.json")  # an entry's name; nothing else in the folder is read or removed
# An entry being written: ``<entry>.<random>.tmp`` (older warptasks wrote ``<entry>.<pid>.tmp``). A process killed
# between writing one and renaming it leaves it behind; one older than STALE is removed by the next write.
PARTIAL = re.compile(r"[0-9a-f]{32}\.json\.[0-9a-f]+\.tmp")
STALE = 10 * 60.0


def _entry_name(python: str) -> str:
    where = os.path.join(os.path.realpath(os.path.dirname(python)), os.path.basename(python))
    return hashlib.sha256(f"{python}\0{where}".encode()).hexdigest()[:32] + ".json"


def load(folder: int, python: str) -> tuple[dict[str, Any], bool] | None:
    """(python facts, has_virtualenv) kept for ``python``, when the entry is the user's, this warptasks' and current."""
    try:
        fd = os.open(_entry_name(python), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None
        with os.fdopen(fd, encoding="utf-8") as handle:
            fd = -1
            entry = json.load(handle)
    except (OSError, ValueError):
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    if not isinstance(entry, dict) or entry.get("writer") != _writer() or entry.get("for") != python:
        return None
    known, has_virtualenv = entry.get("python"), entry.get("has_virtualenv")
    if not isinstance(known, dict) or not isinstance(has_virtualenv, bool) or not isinstance(known.get("executable"), str):
        return None
    now = stamps(python, known["executable"])
    if now is None or entry.get("stamps") != now:
        return None
    return known, has_virtualenv


def store(folder: int, python: str, facts: Facts) -> None:
    """Keep the Python's facts the probe read for ``python``; a failure to write only costs the next start a probe."""
    known = {k: v for k, v in asdict(facts.python).items() if k != "others_can_read"}  # read afresh each time
    now = stamps(python, facts.python.executable)
    if now is None:
        return
    entry = {
        "writer": _writer(),
        "for": python,
        "python": known,
        "has_virtualenv": facts.has_virtualenv,
        "stamps": now,
    }
    name = _entry_name(python)
    # A name no other writer picks (as mkstemp's), made with O_EXCL in this private folder: two starts of the same
    # Python at once, or a pid reused after a killed start, never meet on one file.
    partial = f"{name}.{secrets.token_hex(8)}.tmp"
    try:
        sweep(folder)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entry, handle)
        os.replace(partial, name, src_dir_fd=folder, dst_dir_fd=folder)
        prune(folder)
    except OSError:
        try:
            os.unlink(partial, dir_fd=folder)
        except OSError:
            pass


def sweep(folder: int, now: float | None = None) -> None:
    """Remove the partial entries (see :data:`PARTIAL`) older than :data:`STALE`: a write that was cut short."""
    now = time.time() if now is None else now
    with os.scandir(folder) as found:
        partials = [e for e in found if PARTIAL.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    for partial in partials:
        try:
            if now - partial.stat(follow_symlinks=False).st_mtime > STALE:
                os.unlink(partial.name, dir_fd=folder)
        except OSError:
            pass


def prune(folder: int) -> None:
    """Past :data:`KEEP` entries, remove the older half (environments come and go; each start writes at most one)."""
    with os.scandir(folder) as found:
        entries = [e for e in found if ENTRY.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
    for entry in entries[: len(entries) - KEEP // 2]:
        try:
            os.unlink(entry.name, dir_fd=folder)
        except OSError:
            pass


def local_facts(c: Runner, python: str, request: dict[str, Any]) -> Facts:
    """The facts the probe would print for ``python`` on this machine; the probe runs only when nothing valid is kept.

    ``python`` must be an absolute path for anything to be kept: a command name is looked up again each time.
    """
    folder = open_folder()
    if folder is None:
        return gather_facts(c, python, request)
    try:
        known = load(folder, python)
        if known is not None:
            try:
                return Facts.parse(probe.gather(request, known))
            except (OSError, WarpError):
                pass  # as if nothing were kept: the probe says what is wrong
        facts = gather_facts(c, python, request)
        store(folder, python, facts)
        return facts
    finally:
        os.close(folder)
