"""The system account each app runs as on a host deployed as root, derived from its deploy path.

Pure: nothing here reaches a host. A root deploy without ``--user`` runs the app's servers, process types,
migration, ``release:`` command, ``warp exec``/``shell`` and hooks as an account of the app's own, which the agent
makes when it is missing (see ``account`` in ``scripts/agent.py``): apps on one host then cannot read each other's
``/proc/<pid>/environ``, signal each other's processes or take each other's ports, as they could when all shared
``www-data``.

The name is ``warp-<slug>-<hash>``: the slug is the deploy path's last part made a valid account name, the hash eight
hex digits of the whole path, so two paths never share an account by accident, and the name fits the 32 characters
``useradd`` allows. The account's comment (GECOS) marks it as warptasks' for that path: an account of that name that
does not carry the mark (made by someone else, for something else) is refused, never used.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

PREFIX = "warp-"
SLUG_MAX = 17  # warp- (5) + slug (17) + - (1) + hash (8) = 31, under useradd's 32
# What the agent accepts as a name to make (Debian's adduser is the strictest: lower case, a letter first).
VALID = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _digest(path: str) -> str:
    return hashlib.sha256(posixpath.normpath(path).encode("utf-8", "surrogateescape")).hexdigest()


def app_account(path: str) -> str:
    """The account an app deployed at ``path`` runs as on a root deploy (its group has the same name)."""
    base = posixpath.basename(posixpath.normpath(path).rstrip("/"))
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:SLUG_MAX].strip("-") or "app"
    return f"{PREFIX}{slug}-{_digest(path)[:8]}"


def account_mark(path: str) -> str:
    """The comment (GECOS) of the account warptasks made for ``path``: what tells it from anyone else's."""
    return f"warptasks app {_digest(path)[:16]}"
