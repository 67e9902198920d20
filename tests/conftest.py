"""Fixtures shared by every test tier."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Apache's workers run as an unprivileged account when the tests run as root,
# so projects must live where that account can read them (pytest's own
# tmp_path is mode 0700).
_ROOT = Path(os.environ.get("WARP_TEST_ROOT", tempfile.gettempdir())) / "warptasks-tests"
_counter = itertools.count()


@pytest.fixture
def project_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh, world-readable directory for a test project."""
    _ROOT.mkdir(mode=0o755, exist_ok=True)
    os.chmod(_ROOT, 0o755)
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    path = Path(tempfile.mkdtemp(prefix=f"{name}-{next(_counter)}-", dir=_ROOT))
    os.chmod(path, 0o755)
    yield path
    if os.environ.get("WARP_TEST_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)
