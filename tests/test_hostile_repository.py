"""A project's own git configuration never runs a command on the operator's machine (pure tier).

A repository's ``.git/config`` is the project's to write: ``core.fsmonitor`` names a command git runs on ``git
ls-files`` and ``git status``, and ``core.hooksPath`` points hooks anywhere. Every git call warptasks makes (the
release's files, its id and commit, an image's label) turns both off.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cases import as_git_repo, write_tree
from warptasks.image.build import git_commit
from warptasks.remote.upload import commit_of, release_id, source_files


def _hostile_repo(root: Path, marker: Path) -> None:
    write_tree(root, {"wsgi.py": "def application(e, s):\n    pass\n"})
    as_git_repo(root)
    git = ["git", "-C", str(root)]
    # Set after the commit: only warptasks' own git calls could run it now.
    command = f"sh -c 'echo fsmonitor >> {marker}; exit 1'"
    subprocess.run([*git, "config", "core.fsmonitor", command], check=True)
    hooks = root / "hooks"
    hooks.mkdir()
    for name in ("post-index-change", "reference-transaction", "post-checkout"):
        (hooks / name).write_text(f"#!/bin/sh\necho hook >> {marker}\n")
        (hooks / name).chmod(0o755)
    subprocess.run([*git, "config", "core.hooksPath", str(hooks)], check=True)


def test_git_config_of_the_project_runs_nothing_here(tmp_path: Path) -> None:
    root, marker = tmp_path / "site", tmp_path / "ran"
    _hostile_repo(root, marker)
    # Proof the repository is hostile: git itself runs the monitor.
    subprocess.run(["git", "-C", str(root), "status", "--short"], capture_output=True, check=False)
    assert marker.exists()
    marker.unlink()
    assert source_files(root).files == ["wsgi.py"]
    commit = commit_of(root)
    assert commit and git_commit(str(root)) == commit
    assert release_id(root).endswith(commit[:10])
    assert not marker.exists(), marker.read_text()
