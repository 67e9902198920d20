"""Reading a project's source files for detection: bounded, never blocking, never run.

Every file detection reads (app.py, main.py, wsgi.py, asgi.py, setup.py, setup.cfg, gunicorn.conf.py, a factory's
module, manage.py, a settings module) goes through :func:`read_source`: opened without following into a terminal
or waiting on a writer (``O_NONBLOCK | O_NOCTTY``), refused unless it is a regular file (a link to a FIFO or a
device is not one), and refused past :data:`MAX_SOURCE` bytes. :func:`parse_source` adds Python's parser, with a
file too deeply nested for it (``x = 1+1+...``, which raises RecursionError or MemoryError, not SyntaxError) turned
into a SyntaxError, so every caller treats it as a file Python cannot parse.
"""

from __future__ import annotations

import ast
import errno
import os
import stat
from pathlib import Path

from ..errors import ConfigError

MAX_SOURCE = 2 * 1024 * 1024  # bytes; no entry file, configuration or settings module is near this
MAX_SHOWN = "2 MiB"


def read_source(path: Path | str) -> str:
    """The text of ``path`` (UTF-8, bad bytes replaced); OSError (with a ``strerror`` that says why) when it is
    missing, not a regular file, or larger than :data:`MAX_SOURCE`."""
    return read_bytes(path).decode("utf-8", errors="replace")


def read_bytes(path: Path | str, limit: int | None = MAX_SOURCE) -> bytes:
    """The bytes of ``path``, as :func:`read_source` reads them; ``limit=None`` for a file of any size (a lock file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file", str(path))
        chunks: list[bytes] = []
        size = 0
        while limit is None or size <= limit:
            chunk = os.read(fd, 1 << 20 if limit is None else min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if limit is not None and size > limit:
            raise OSError(errno.EFBIG, f"it is larger than {MAX_SHOWN}", str(path))
    finally:
        os.close(fd)
    return b"".join(chunks)


def project_bytes(path: Path, rel: str, limit: int | None = None) -> bytes:
    """A project file's bytes (an environment file, a hook), as :func:`read_bytes` reads them; a clear error if it
    cannot be read (a link to a FIFO or a device, past ``limit``)."""
    try:
        return read_bytes(path, limit)
    except OSError as error:
        raise ConfigError(f"{rel} cannot be read: {error.strerror}", f"make {rel} a plain file of the project") from None


def parse_source(path: Path | str) -> ast.Module:
    """``path`` parsed (see :func:`read_source`); SyntaxError (ValueError for a NUL byte) when Python cannot parse it."""
    text = read_source(path)
    try:
        return ast.parse(text)
    except (RecursionError, MemoryError):
        raise SyntaxError("it is nested too deeply for Python's parser") from None
