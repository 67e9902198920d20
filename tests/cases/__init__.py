"""Shared helpers of the pure test tier: small source trees and fake facts.

Facts copy the shape that :mod:`warptasks.scripts.probe` prints and go through
:meth:`Facts.parse`, so plans are made from the same data a real target would give.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warptasks.facts import Facts


@dataclass(frozen=True)
class Exe:
    """File content that must be written executable (an action hook)."""

    text: str = "#!/bin/sh\n"


Tree = Mapping[str, "str | Exe"]


def write_tree(root: Path, files: Tree) -> Path:
    """Write ``files`` (relative path -> content) under ``root``; a path ending in / is a folder."""
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Exe):
            path.write_text(content.text, encoding="utf-8")
            os.chmod(path, 0o755)
        else:
            path.write_text(content, encoding="utf-8")
            os.chmod(path, 0o644)
    return root


WSGI = "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
FLASK_APP = "from flask import Flask\napp = Flask(__name__)\n"
ASGI = "async def application(scope, receive, send):\n    pass\n"
MANAGE = "import os, sys\nif __name__ == '__main__':\n    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"


def django_tree(settings: str = "", *, wsgi: bool = True, manage: str = MANAGE) -> dict[str, str]:
    """A Django project named mysite with ``settings`` as its settings.py."""
    files = {"manage.py": manage, "mysite/__init__.py": "", "mysite/settings.py": settings}
    if wsgi:
        files["mysite/wsgi.py"] = "application = None\n"
    return files


# What probe.py printed on a Debian machine, as root, with nothing built yet.
PROBE_FACTS: dict[str, Any] = {
    "python": {
        "executable": "/usr/bin/python3.11",
        "version": "3.11",
        "full_version": "3.11.2",
        "prefix": "/usr",
        "others_can_read": True,
        "running": "/usr/bin/python3.11",
    },
    "has_virtualenv": True,
    "uv": "/opt/bin/uv",
    "apxs": "/usr/bin/apxs",
    "euid": 1000,
    "home": "/home/app",
    "worker_accounts": [["www-data", "www-data"], ["nobody", "nogroup"]],
    "cache_home": "/home/app/.cache",
    "cpu_count": 2,
    "affinity": 2,
    "memtotal": 8 * 1024**3,
    "cgroup": {"v2": {}, "v1": {}},
    "state": None,
    "current": None,
    "complete_envs": [],
    "static": None,
    "source_digest": "tree-0",
}


def probe_output(**overrides: Any) -> dict[str, Any]:
    """A fresh copy of :data:`PROBE_FACTS` with ``overrides`` applied (top-level keys): what the probe prints."""
    data = copy.deepcopy(PROBE_FACTS)
    data.update(copy.deepcopy(overrides))
    return data


def facts(**overrides: Any) -> Facts:
    """:func:`probe_output` as the planners get it."""
    return Facts.parse(probe_output(**overrides))


def as_git_repo(root: Path, add: tuple[str, ...] = ("-A",)) -> Path:
    """``root`` as a git work tree with one commit of what ``git add`` ``add`` takes (git applies the .gitignore files)."""
    git = ["git", "-C", str(root), "-c", "user.email=test@example.com", "-c", "user.name=Test"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", *add], check=True)
    subprocess.run([*git, "commit", "-qm", "project"], check=True)
    return root
