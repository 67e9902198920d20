"""A local start's facts without a probe process: the same facts as the probe's, and a kept Python's facts used only
while nothing they depend on changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from invoke import Context

from warptasks.run import facts_cache
from warptasks.run.executor import gather_facts


class Counting(Context):
    """A real local runner that counts the commands it ran (the probe is the only one here)."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[str] = []

    def run(self, command: str, **kwargs: Any) -> Any:
        self.commands.append(command)
        return super().run(command, **kwargs)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "warptasks" / "facts"


@pytest.fixture
def env(tmp_path: Path) -> Path:
    """A real environment (as warp build makes: a venv), built beside a project's .warp."""
    envs = tmp_path / "project" / ".warp" / "envs"
    envs.mkdir(parents=True)
    target = envs / "one"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    (target / "warp-env.json").write_text("{}")
    (tmp_path / "project" / ".warp" / "current").symlink_to(target)
    (tmp_path / "project" / ".warp" / "state.json").write_text(json.dumps({"env": str(target), "server": "waitress"}))
    return tmp_path / "project" / ".warp"


def _request(env: Path) -> dict[str, Any]:
    return {"env_dir": str(env), "envs_dir": str(env / "envs"), "uv_candidates": []}


def _python(env: Path) -> str:
    return str(env / "current" / "bin" / "python")


def test_facts_read_here_are_the_probes(cache: Path, env: Path) -> None:
    probed = gather_facts(Context(), _python(env), _request(env))
    first = Counting()
    assert facts_cache.local_facts(first, _python(env), _request(env)) == probed
    assert len(first.commands) == 1  # nothing kept yet: the probe ran, and its Python's facts were kept
    again = Counting()
    assert facts_cache.local_facts(again, _python(env), _request(env)) == probed
    assert again.commands == []
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in cache.iterdir())


def test_what_is_not_the_pythons_own_is_read_afresh(cache: Path, env: Path) -> None:
    facts_cache.local_facts(Context(), _python(env), _request(env))
    (env / "state.json").write_text(json.dumps({"env": "x", "server": "gunicorn"}))
    runner = Counting()
    facts = facts_cache.local_facts(runner, _python(env), _request(env))
    assert runner.commands == [] and facts.state is not None and facts.state.server == "gunicorn"


def _rebuild_env(env: Path) -> None:
    """A new environment made current, as a build that changed the dependencies does."""
    second = env / "envs" / "two"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(second)], check=True, timeout=120)
    (env / "current").unlink()
    (env / "current").symlink_to(second)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda env: (env / "current" / "pyvenv.cfg").write_text("home = /elsewhere\n"), id="pyvenv.cfg"),
        pytest.param(_rebuild_env, id="current switched"),
        pytest.param(lambda env: os.chmod(env / "current" / "pyvenv.cfg", 0o600), id="chmod"),
    ],
)
def test_a_change_to_what_the_pythons_facts_depend_on_runs_the_probe_again(cache: Path, env: Path, change: Any) -> None:
    facts_cache.local_facts(Context(), _python(env), _request(env))
    change(env)
    runner = Counting()
    facts_cache.local_facts(runner, _python(env), _request(env))
    assert len(runner.commands) == 1


def _entry(cache: Path) -> Path:
    (entry,) = cache.iterdir()
    return entry


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda p: p.write_text(p.read_text().replace('"writer": "', '"writer": "x')), id="another warptasks"),
        pytest.param(lambda p: p.write_text("{not json"), id="malformed"),
        pytest.param(lambda p: os.chmod(p, 0o666), id="writable by others"),
        pytest.param(lambda p: (p.rename(p.with_suffix(".real")), p.symlink_to(p.with_suffix(".real"))), id="a link"),
    ],
)
def test_an_entry_that_is_not_this_users_nor_this_warptasks_is_not_used(cache: Path, env: Path, spoil: Any) -> None:
    facts_cache.local_facts(Context(), _python(env), _request(env))
    spoil(_entry(cache))
    runner = Counting()
    facts_cache.local_facts(runner, _python(env), _request(env))
    assert len(runner.commands) == 1


def test_a_folder_others_can_enter_is_closed_and_a_relative_cache_home_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "warptasks" / "facts"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    fd = facts_cache.open_folder({"XDG_CACHE_HOME": str(tmp_path)})
    assert fd is not None and os.path.samestat(os.fstat(fd), folder.stat())
    os.close(fd)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert facts_cache.open_folder({"XDG_CACHE_HOME": "relative/cache"}) is None


def test_a_folder_that_is_a_link_is_not_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "cache" / "warptasks").mkdir(parents=True)
    (tmp_path / "cache" / "warptasks" / "facts").symlink_to(elsewhere)
    assert facts_cache.open_folder({"XDG_CACHE_HOME": str(tmp_path / "cache")}) is None


def test_a_parent_folder_that_is_a_link_is_not_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "facts").mkdir(parents=True, mode=0o700)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "warptasks").symlink_to(elsewhere)
    assert facts_cache.open_folder({"XDG_CACHE_HOME": str(tmp_path / "cache")}) is None


def test_a_parent_folder_of_another_account_is_not_used(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown to another account")
    (tmp_path / "cache" / "warptasks" / "facts").mkdir(parents=True, mode=0o700)
    os.chown(tmp_path / "cache" / "warptasks", 65534, 65534)
    assert facts_cache.open_folder({"XDG_CACHE_HOME": str(tmp_path / "cache")}) is None


def test_a_cache_home_that_is_a_link_is_used(tmp_path: Path) -> None:
    # The user's own choice of cache home (XDG_CACHE_HOME, ~/.cache) may be a link: only the parts below are checked.
    (tmp_path / "real").mkdir()
    (tmp_path / "cache").symlink_to(tmp_path / "real")
    fd = facts_cache.open_folder({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert fd is not None and os.path.samestat(os.fstat(fd), (tmp_path / "real" / "warptasks" / "facts").stat())
    os.close(fd)


def test_a_local_start_keeps_its_pythons_facts(cache: Path, env: Path) -> None:
    # The wiring in run.local: invoke's own Context (a local start) keeps them; MockContexts (test_tasks_wiring) still probe.
    from warptasks.run.local import read_facts
    from warptasks.settings import Settings

    settings = Settings.resolve(Context().config, project=str(env.parent))
    read_facts(Context(), str(env.parent), settings, _python(env), tree=False, kept=True)
    assert cache.is_dir() and len(list(cache.iterdir())) == 1


def test_a_python_named_by_a_command_is_probed_every_time(cache: Path, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "python3.12" is looked up on PATH each time: nothing to stamp, so nothing is kept.
    bin_dir = str(env / "current" / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for _ in range(2):
        runner = Counting()
        facts_cache.local_facts(runner, "python", _request(env))
        assert len(runner.commands) == 1
    assert not cache.exists() or list(cache.iterdir()) == []


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    for n in range(facts_cache.KEEP + 5):
        entry = tmp_path / f"{n:032x}.json"
        entry.write_text("{}")
        os.utime(entry, ns=(n * 10**9, n * 10**9))
    (tmp_path / "not-an-entry.json").write_text("{}")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        facts_cache.prune(fd)
    finally:
        os.close(fd)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "not-an-entry.json")
    assert len(left) == facts_cache.KEEP // 2 and left[-1] == f"{facts_cache.KEEP + 4:032x}.json"  # the newest stay
    assert (tmp_path / "not-an-entry.json").exists()  # only names the cache gives its entries


def test_a_write_cut_short_leaves_nothing_for_long_and_never_blocks_the_next(cache: Path, env: Path) -> None:
    """A start killed between writing its partial entry and renaming it left the file forever (and one with the
    same name, a reused pid, stopped the next write): names are unique, and old leftovers go on the next write."""
    cache.mkdir(parents=True, mode=0o700)
    name = facts_cache._entry_name(_python(env))
    stale = cache / f"{name}.{12345}.tmp"  # as an older warptasks named it
    stale_random = cache / f"{name}.0123456789abcdef.tmp"
    recent = cache / f"{name}.fedcba9876543210.tmp"  # another start writing now
    mine = cache / f"{name}.{os.getpid()}.tmp"  # this process's pid, as the old name would be
    other = cache / "notes.tmp"  # not the cache's: never removed
    hour_ago = time.time() - 3600
    for path in (stale, stale_random, recent, mine, other):
        path.write_text("{partial")
        path.chmod(0o600)
    for path in (stale, stale_random, other):
        os.utime(path, (hour_ago, hour_ago))
    facts_cache.local_facts(Context(), _python(env), _request(env))
    left = sorted(p.name for p in cache.iterdir())
    assert left == sorted([name, recent.name, mine.name, other.name])
    again = Counting()
    facts_cache.local_facts(again, _python(env), _request(env))
    assert again.commands == []  # the entry was written despite the leftovers
