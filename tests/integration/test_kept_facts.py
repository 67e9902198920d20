"""The facts a local start or no-op build keeps between runs (warptasks.run.facts_cache), for real: with real
builds, a kept entry that says something else never decides a build that runs anything."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import warp, write

APP = "#!/bin/sh\nexec sleep 1\n"  # the app's own script: an environment with nothing to install


def _current(project: Path) -> str:
    return os.path.realpath(project / ".warp" / "current")


def test_kept_facts_never_decide_a_build_that_runs(project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "cache" / "warptasks" / "facts"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write(project_dir, {"app.sh": APP})
    (project_dir / "app.sh").chmod(0o755)
    warp(project_dir, "build")
    live = _current(project_dir)
    assert "nothing to do" in warp(project_dir, "build").stdout
    entries = list(kept.iterdir())
    assert entries, "the build kept its Python's facts"
    for entry in entries:
        data = json.loads(entry.read_text())
        data["python"]["full_version"] = "3.99.0"  # as if that Python were another: its environment key changes
        entry.write_text(json.dumps(data))
    # Planned from the kept facts, the build would make a new environment; it is planned again from the probe's,
    # which find nothing changed.
    again = warp(project_dir, "build")
    assert "nothing to do" in again.stdout, again.stdout
    assert "3.99" not in again.stdout
    assert _current(project_dir) == live


def test_a_start_keeps_its_environments_facts(project_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "cache" / "warptasks" / "facts"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write(project_dir, {"app.sh": APP})
    (project_dir / "app.sh").chmod(0o755)
    warp(project_dir, "build")
    before = set(kept.iterdir())
    shown = warp(project_dir, "start", "--dry-run")
    assert "app.sh" in shown.stdout
    added = set(kept.iterdir()) - before
    assert len(added) == 1
    (entry,) = added
    assert json.loads(entry.read_text())["for"] == str(project_dir / ".warp" / "current" / "bin" / "python")


def test_an_environment_another_account_planted_at_the_builds_folder_is_never_used(project_dir: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to plant a folder as another account")
    write(project_dir, {"app.sh": APP})
    (project_dir / "app.sh").chmod(0o755)
    warp(project_dir, "build")
    folder = Path(_current(project_dir))
    shutil.rmtree(project_dir / ".warp")
    # Another account (nobody) plants a "complete" environment at the exact folder this build uses.
    ran = tmp_path / "planted-python-ran"
    (folder / "bin").mkdir(parents=True)
    (folder / "warp-env.json").write_text("{}")
    python = folder / "bin" / "python"
    python.write_text(f'#!/bin/sh\ntouch {ran}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    for path in (folder, folder / "bin", folder / "warp-env.json", python):
        os.chown(path, 65534, 65534)
    os.chmod(folder.parent, 0o777)  # a shared envs folder others may write to: refused outright
    result = warp(project_dir, "build", check=False)
    assert result.returncode != 0 and f"chmod go-w {folder.parent}" in result.stderr, result.stdout + result.stderr
    assert not ran.exists(), "the planted Python ran"
    os.chmod(folder.parent, 0o755)  # closed again: what was planted while it was open is still never used
    result = warp(project_dir, "build", check=False)
    shown = result.stdout + result.stderr
    assert result.returncode != 0, shown
    assert str(folder) in shown and "uid 65534" in shown and "remove" in shown, shown
    assert "Traceback" not in shown
    assert not ran.exists(), "the planted Python ran"
    assert (folder / "warp-env.json").exists(), "the planted folder is left for its owner to see"
