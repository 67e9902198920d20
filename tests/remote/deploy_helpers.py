"""A real Django project to deploy, and small HTTP helpers, for the deploy tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django

DJANGO = f"Django=={django.__version__}"

VIEWS = """import time

from django.http import HttpResponse

VERSION = "{version}"


def home(request):
    return HttpResponse("release " + VERSION + "\\n", content_type="text/plain")


def slow(request):
    # A request still in flight when its server is told to stop.
    time.sleep(float(request.GET.get("seconds", "3")))
    return HttpResponse("release " + VERSION + " slow\\n", content_type="text/plain")
"""

MIGRATE_HOOK = """#!/bin/bash
# Counts how often the deploy migrates: once per deploy, on one host.
set -e
python manage.py migrate --noinput
echo "$(hostname) $WARP_PROJECT" >> "$WARP_DATA_DIR/migrations.log"
"""


def make_django_project(root: Path, version: str = "1", server: str | None = None) -> Path:
    """``django-admin startproject`` plus a page that names the version and a static file."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    admin = Path(sys.executable).with_name("django-admin")
    subprocess.run([str(admin), "startproject", "mysite", str(root)], check=True)
    settings = root / "mysite" / "settings.py"
    text = settings.read_text()
    text = text.replace("DEBUG = True", "DEBUG = False").replace("ALLOWED_HOSTS = []", "ALLOWED_HOSTS = ['*']")
    text += "\nSTATICFILES_DIRS = [BASE_DIR / 'assets']\n"
    # The app's data in its writable folder on a host (WARP_DATA_DIR, its account's), never in the release's code.
    text += "import os\nDATABASES['default']['NAME'] = Path(os.environ.get('WARP_DATA_DIR') or BASE_DIR) / 'db.sqlite3'\n"
    settings.write_text(text)
    urls = root / "mysite" / "urls.py"
    urls.write_text(
        "from django.contrib import admin\nfrom django.urls import path\n\nfrom . import views\n\n"
        "urlpatterns = [path('', views.home), path('slow/', views.slow), path('admin/', admin.site.urls)]\n"
    )
    (root / "requirements.txt").write_text(DJANGO + "\n")
    hooks = root / ".warpdrive" / "action_hooks"
    hooks.mkdir(parents=True)
    (hooks / "migrate").write_text(MIGRATE_HOOK)
    (hooks / "migrate").chmod(0o755)
    if server:
        (root / ".warpdrive" / "server_type").write_text(server + "\n")
    set_version(root, version)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return root


def set_version(root: Path, version: str) -> None:
    """A code-only change: the page and the static file name the new version."""
    (root / "mysite" / "views.py").write_text(VIEWS.format(version=version))
    assets = root / "assets"
    assets.mkdir(exist_ok=True)
    (assets / "site.css").write_text(f"/* release {version} */\nbody {{ color: black; }}\n")
    for path in (root / "mysite" / "views.py", assets, assets / "site.css"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def release_served(url: str) -> str:
    status, body = get(url)
    match = re.match(r"release (\S+)", body)
    assert status == 200 and match, f"{url} answered {status}: {body[:300]}"
    return match.group(1)


@dataclass
class Load:
    """Requests sent one after another to each URL until stopped (bounded in count and time)."""

    urls: list[str]
    max_requests: int = 20000
    max_seconds: float = 600
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, url: str) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = get(url, timeout=15)
                if status == 200 and body.startswith("release "):
                    self.ok += 1
                    self.seen.add(body.split()[1])
                else:
                    self.failures.append(f"{url}: HTTP {status}: {body[:100]}")
            except OSError as error:
                self.failures.append(f"{url}: {error}")

    def __enter__(self) -> Load:
        for url in self.urls:
            thread = threading.Thread(target=self._run, args=(url,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def make_workdir(prefix: str) -> Path:
    """A folder for one test module's projects and files (under WARP_TEST_ROOT, else /tmp), 0755 for the harness."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(path, 0o755)
    return path


def drop_workdir(path: Path) -> None:
    """Remove a folder of :func:`make_workdir`, unless WARP_TEST_KEEP=1 asks to keep it for a look."""
    if os.environ.get("WARP_TEST_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)


def assert_ok(results: list[Any]) -> None:
    """Every host of a deploy, rollback or removal succeeded; else the summary of all of them."""
    from warptasks.remote.fleet import summary

    assert all(r.ok for r in results), summary(results)
