"""warp plan and warp start --dry-run show the environment file's names, not its values, unless --reveal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke import MockContext, Result

from tests.cases import probe_output, write_tree
from warptasks import tasks
from warptasks.plan import Step, command_line

SECRETS = {"DATABASE_URL": "postgres://app:s3cr3t@db/app", "SECRET_KEY": "k9x2-zz-sekrit"}
ENVIRONMENT = "".join(f"{name}={value}\n" for name, value in SECRETS.items()) + "PLAIN=visible-too\n"


def _secret_in(text: str) -> bool:
    return any(value in text for value in SECRETS.values()) or "visible-too" in text


def probe_answers(target: dict[str, Any]) -> MockContext:
    """A runner that answers the facts probe (and nothing else) with ``target``."""
    probe = re.compile(r"\S+ -I -c .*Facts read from the machine", re.DOTALL)
    return MockContext(run={probe: Result(stdout=json.dumps(target) + "\n")})


def _project(tmp_path: Path, server: str = "gunicorn") -> tuple[str, MockContext]:
    """A built project whose environment file holds secrets, and a runner answering its probe."""
    files = {"wsgi.py": "", "requirements.txt": "six\n", ".s2i/environment": ENVIRONMENT, ".warp/current/bin/python": ""}
    write_tree(tmp_path, files)
    env = f"{tmp_path}/.warp/envs/py3.11-x"
    state = {"env_key": "py3.11-x", "env": env, "server": server, "kind": "wsgi", "source": ""}
    return str(tmp_path), probe_answers(probe_output(state=state, current=env))


@pytest.mark.parametrize("server", ["gunicorn", "mod_wsgi"])
def test_plan_text_shows_names_not_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str) -> None:
    project, c = _project(tmp_path, server)
    tasks.plan(c, project=project)
    out = capsys.readouterr().out
    assert not _secret_in(out), out
    assert "DATABASE_URL=*** SECRET_KEY=*** PLAIN=***" in out
    assert f"VIRTUAL_ENV={tmp_path}/.warp/envs/py3.11-x" in out, "warptasks' own variables stay visible"
    assert "exec: " in out and "PORT=8080" in out


def test_plan_reveal_shows_the_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project, c = _project(tmp_path)
    tasks.plan(c, project=project, reveal=True)
    out = capsys.readouterr().out
    assert "DATABASE_URL=postgres://app:s3cr3t@db/app" in out and "***" not in out


def test_plan_json_masks_the_app_steps_and_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project, c = _project(tmp_path)
    tasks.plan(c, project=project, json=True)
    out = capsys.readouterr().out
    assert not _secret_in(out), out
    data = json.loads(out)
    assert data["app"]["environment"] == {"DATABASE_URL": "***", "SECRET_KEY": "***", "PLAIN": "***"}
    install = next(s for s in data["build"]["steps"] if s["name"] == "install requirements")
    assert install["env"]["DATABASE_URL"] == "***" and "DATABASE_URL=*** " in install["command"]
    assert data["start"]["server"]["env"]["SECRET_KEY"] == "***" and data["start"]["server"]["env"]["PORT"] == "8080"


def test_plan_json_reveal_shows_the_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project, c = _project(tmp_path)
    tasks.plan(c, project=project, json=True, reveal=True)
    data = json.loads(capsys.readouterr().out)
    assert data["app"]["environment"]["DATABASE_URL"] == SECRETS["DATABASE_URL"]
    assert data["start"]["server"]["env"]["SECRET_KEY"] == SECRETS["SECRET_KEY"]


@pytest.mark.parametrize("server", ["gunicorn", "mod_wsgi"])
def test_start_dry_run_masks_unless_revealed(tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str) -> None:
    project, c = _project(tmp_path, server)
    tasks.start(c, project=project, port=9200, dry_run=True)
    out = capsys.readouterr().out
    assert not _secret_in(out), out
    assert "DATABASE_URL=*** SECRET_KEY=*** PLAIN=***" in out and "PORT=9200" in out
    tasks.start(c, project=project, port=9200, dry_run=True, reveal=True)
    assert "SECRET_KEY=k9x2-zz-sekrit" in capsys.readouterr().out


def test_command_line_masks_only_the_names_asked_and_never_changes_the_step() -> None:
    step = Step("s", ("run", "it"), "/app", "why", env={"TOKEN": "a b'c", "PORT": "80"})
    assert command_line(step, mask={"TOKEN", "UNUSED"}) == "cd /app && TOKEN=*** PORT=80 run it"
    assert command_line(step) == "cd /app && TOKEN='a b'\"'\"'c' PORT=80 run it"
    shown = step.as_dict(mask={"TOKEN"})
    assert shown["env"] == {"TOKEN": "***", "PORT": "80"} and "TOKEN=***" in shown["command"]
    assert step.env["TOKEN"] == "a b'c"


def test_real_warp_plan_masks_unless_revealed(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", ".s2i/environment": ENVIRONMENT})
    argv = [sys.executable, "-m", "warptasks", "plan", "--project", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "DATABASE_URL=***" in shown.stdout and not _secret_in(shown.stdout + shown.stderr)
    revealed = subprocess.run([*argv, "--reveal"], capture_output=True, text=True, timeout=120, env=env)
    assert revealed.returncode == 0, revealed.stderr
    assert "DATABASE_URL=postgres://app:s3cr3t@db/app" in revealed.stdout
