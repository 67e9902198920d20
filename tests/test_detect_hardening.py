"""Hardening of detection and of the facts it is given: what another account or a hostile tree can plant."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from warptasks.scripts import probe

OTHER = 65534  # nobody: tests run as root, so chown to another account works


def _env(envs: Path, name: str, owner: int | None = None, mode: int = 0o755) -> Path:
    folder = envs / name
    (folder / "bin").mkdir(parents=True)
    (folder / "warp-env.json").write_text("{}")
    folder.chmod(mode)
    if owner is not None:
        os.chown(folder, owner, owner)
        os.chown(folder / "warp-env.json", owner, owner)
    return folder


def test_only_own_unwritable_environments_are_complete(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown to another account")
    envs = tmp_path / "envs"
    _env(envs, "mine")
    _env(envs, "planted", owner=OTHER)
    _env(envs, "group-writable", mode=0o775)
    record_only = _env(envs, "foreign-record")
    os.chown(record_only / "warp-env.json", OTHER, OTHER)
    real = _env(tmp_path, "elsewhere")
    (envs / "linked").symlink_to(real)
    linked_record = _env(envs, "linked-record")
    (linked_record / "warp-env.json").unlink()
    (linked_record / "warp-env.json").symlink_to(real / "warp-env.json")
    writable_record = _env(envs, "writable-record")
    (writable_record / "warp-env.json").chmod(0o666)
    assert probe._envs(str(envs)) == ["mine"]


def test_an_environment_of_root_is_complete_for_any_account(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    envs = tmp_path / "envs"
    _env(envs, "root-made")
    assert probe._envs(str(envs)) == ["root-made"]
