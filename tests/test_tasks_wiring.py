"""Task wiring: the collection, config precedence, and tasks over a MockContext runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, cast
from unittest.mock import Mock

import pytest
from invoke import Collection, Config, MockContext, Result
from invoke.exceptions import Exit

import warptasks
from tests.cases import django_tree, facts, probe_output, write_tree
from warptasks import tasks
from warptasks.cli import program
from warptasks.errors import ConfigError
from warptasks.plan.build import env_key
from warptasks.run import local as actions
from warptasks.run.executor import PROBE
from warptasks.settings import DeploySettings, Settings

CORE_TASKS = {"plan", "build", "start", "exec", "shell", "setup", "migrate", "verify", "alive", "ready"}


def probe_answers(target: dict[str, Any]) -> MockContext:
    """A runner that answers the facts probe (and nothing else) with ``target``."""
    probe = re.compile(r"\S+ -I -c .*Facts read from the machine", re.DOTALL)
    return MockContext(run={probe: Result(stdout=json.dumps(target) + "\n")})


def runs(c: MockContext) -> Mock:
    """The mock behind ``c.run``, which records every command the task ran."""
    return cast(Mock, c.run)


def test_collection_is_importable_from_the_package() -> None:
    assert isinstance(warptasks.ns, Collection)
    assert warptasks.ns.name == "warp"
    assert warptasks.ns is tasks.ns


def test_every_public_name_is_there_and_importing_the_package_stays_light() -> None:
    assert all(getattr(warptasks, name) is not None for name in warptasks.__all__)
    # Until a name is used, importing the package loads none of invoke, fabric, the Docker SDK or the collection.
    heavy = "('invoke', 'fabric', 'docker', 'warptasks.tasks')"
    code = f"import sys, warptasks; print(sorted(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_collection_has_the_warp_tasks() -> None:
    assert CORE_TASKS <= set(warptasks.ns.task_names)


def test_collection_nests_in_a_projects_own_tasks() -> None:
    root = Collection(warptasks.ns)
    assert {f"warp.{name}" for name in CORE_TASKS} <= set(root.task_names)


# invoke config "warp" section, task options -> expected settings (subset). The port left unset is None: the start
# decides it from PORT, else 8080 (tests/test_environment_precedence.py).
SETTINGS_CASES = [
    pytest.param(
        {}, {}, {"port": None, "host": "127.0.0.1", "env_dir": ".warp", "installer": "auto", "server": None}, id="defaults"
    ),
    pytest.param(
        {"port": 9000, "server": "gunicorn"},
        {},
        {"port": 9000, "server": "gunicorn", "host": "127.0.0.1"},
        id="config-over-defaults",
    ),
    pytest.param(
        {"port": 9000, "server": "gunicorn"}, {"port": 7000}, {"port": 7000, "server": "gunicorn"}, id="option-over-config"
    ),
    pytest.param(
        {"port": 9000}, {"port": None, "host": "0.0.0.0"}, {"port": 9000, "host": "0.0.0.0"}, id="option-not-given-keeps-config"
    ),
    pytest.param({"port": None}, {}, {"port": None}, id="config-null-keeps-default"),
    pytest.param({"unknown_key": 1}, {}, {"port": None}, id="unknown-config-ignored"),
]


@pytest.mark.parametrize(("section", "given", "expected"), SETTINGS_CASES)
def test_task_option_beats_config_beats_defaults(
    section: dict[str, Any], given: dict[str, Any], expected: dict[str, Any]
) -> None:
    merged = Settings.resolve(Config(overrides={"warp": section}), **given)
    assert {k: getattr(merged, k) for k in expected} == expected
    assert not hasattr(merged, "unknown_key")


# invoke config "warp" section, task options -> the ConfigError's message
INVALID_SETTINGS = [
    pytest.param({}, {"port": "http"}, "port 'http' is not a number", id="port-not-a-number"),
    pytest.param({"port": 70000}, {}, "port 70000 is out of range", id="port-out-of-range"),
    pytest.param({"processes": "many"}, {}, "processes 'many' is not a number", id="processes-not-a-number"),
    pytest.param({}, {"threads": -2}, "threads -2 is out of range", id="threads-negative"),
    pytest.param({"max_clients": 1.5}, {}, "max_clients 1.5 is not a number", id="max-clients-fraction"),
]


@pytest.mark.parametrize(("section", "given", "message"), INVALID_SETTINGS)
def test_invalid_settings_are_config_errors_naming_the_key(section: dict[str, Any], given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.resolve({"warp": section}, **given)


def test_counts_from_text_are_numbers_and_empty_means_computed() -> None:
    merged = Settings.resolve({"warp": {"processes": "3", "threads": "", "port": "9000"}})
    assert (merged.processes, merged.threads, merged.port) == (3, None, 9000)


def test_zero_processes_is_a_mistake_not_computed() -> None:
    with pytest.raises(ConfigError, match="processes 0 is out of range: it must be at least 1"):
        Settings.resolve({"warp": {"processes": 0}})


def test_an_unknown_task_option_is_a_bug_not_a_setting() -> None:
    with pytest.raises(TypeError, match="no setting prot"):
        Settings.resolve(None, prot=1)


def test_the_collection_configures_every_key() -> None:
    configured = warptasks.ns.configuration()["warp"]
    assert set(configured) - {"deploy"} == {f.name for f in fields(Settings)}
    assert set(configured["deploy"]) == {f.name for f in fields(DeploySettings)}


def test_invoke_environment_variables_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOKE_WARP_PORT", "9001")
    monkeypatch.setenv("INVOKE_WARP_ENV_DIR", "build/env")
    monkeypatch.setenv("INVOKE_WARP_PROCESSES", "4")
    monkeypatch.setenv("INVOKE_WARP_DEPLOY_KEEP", "2")
    monkeypatch.setenv("INVOKE_WARP_DEPLOY_HOSTS", "web1,deploy@web2:2222")
    monkeypatch.setenv("INVOKE_WARP_DEPLOY_WHEELS", "1")
    config = Config()
    config.load_collection(warptasks.ns.configuration())
    config.load_shell_env()
    merged = Settings.resolve(config)
    assert (merged.port, merged.env_dir, merged.processes) == (9001, "build/env", 4)
    assert Settings.resolve(config, port=7000).port == 7000
    deploy = DeploySettings.resolve(config)
    assert (deploy.keep, deploy.wheels, deploy.port) == (2, True, 8080)
    assert [t.label for t in deploy.hosts] == ["web1", "deploy@web2:2222"]


def test_a_parent_collection_that_configures_warp_keeps_the_defaults() -> None:
    # invoke replaces (does not merge) a sub-collection's "warp" with its parent's.
    root = Collection(warptasks.ns)
    root.configure({"warp": {"port": 9000}})
    config = Config()
    config.load_collection(root.configuration("warp.build"))
    merged = Settings.resolve(config)
    assert (merged.port, merged.env_dir, merged.host) == (9000, ".warp", "127.0.0.1")
    assert DeploySettings.resolve(config).path == "/srv/app"


def test_tasks_read_the_contexts_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"wsgi.py": ""})
    c = probe_answers(probe_output())
    c.config.warp = {"project": str(tmp_path), "server": "gunicorn"}
    tasks.plan(c, json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["app"]["root"] == str(tmp_path)
    assert data["app"]["server"] == "gunicorn"


def test_plan_json_shows_the_app_the_build_and_why_start_cannot_run_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(tmp_path, {**django_tree("STATIC_URL = '/static/'\n"), "requirements.txt": "django\n"})
    c = probe_answers(probe_output())
    tasks.plan(c, project=str(tmp_path), json=True)
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"app", "build", "start"}
    assert data["app"]["kind"] == "django"
    assert data["app"]["dependencies"]["files"] == ["requirements.txt"]
    assert data["build"]["action"] == "build"
    steps = data["build"]["steps"]
    assert [s["name"] for s in steps][-1] == "switch"
    assert {"name", "argv", "cwd", "env", "path", "phase", "why", "skip", "command"} <= set(steps[0])
    assert all(s["cwd"].startswith(str(tmp_path)) for s in steps)
    assert "has not been built" in data["start"]["error"]
    # The probe went through the runner, as the one command the plan task ran there.
    [call] = runs(c).call_args_list
    assert "Facts read from the machine" in call.args[0] and PROBE.splitlines()[-1] in call.args[0]
    assert call.kwargs["hide"] is True and call.kwargs["warn"] is True


def test_plan_json_shows_the_start_command_once_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"wsgi.py": "", ".warp/current/bin/python": ""})
    env = f"{tmp_path}/.warp/envs/py3.11-x"
    state = {"env_key": "py3.11-x", "env": env, "server": "gunicorn", "kind": "wsgi", "source": ""}
    c = probe_answers(probe_output(state=state, current=env))
    tasks.plan(c, project=str(tmp_path), port="9100", json=True)
    start = json.loads(capsys.readouterr().out)["start"]
    assert start["server"]["argv"][:3] == [f"{env}/bin/gunicorn", "--bind", "127.0.0.1:9100"]
    assert [check["name"] for check in start["checks"]] == ["port"]
    assert len(runs(c).call_args_list) == 1, "one probe serves both plans"


def test_plan_text_says_what_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "static/": ""})
    tasks.plan(probe_answers(probe_output()), project=str(tmp_path))
    out = capsys.readouterr().out
    assert "Detected:" in out and "Build steps:" in out
    assert "static: static/ is served at /static/" in out
    assert re.search(r"\d+\. virtualenv \[run\]\n\s+why: ", out)
    assert "Start: " in out and "has not been built" in out


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        pytest.param({}, {}, "no application found", id="no-app"),
        pytest.param({"wsgi.py": ""}, {"server": "tomcat"}, "unknown server type", id="bad-server"),
        pytest.param({".s2i/environment": "not a line\n"}, {}, "line 1", id="bad-environment-file"),
    ],
)
def test_foreseeable_errors_exit_non_zero_with_a_message(
    tmp_path: Path, files: dict[str, str], options: dict[str, str], message: str
) -> None:
    write_tree(tmp_path, files)
    with pytest.raises(Exit) as exited:
        tasks.plan(probe_answers(probe_output()), project=str(tmp_path), **options)
    assert exited.value.code == 1
    assert str(exited.value.message).startswith("warp: error: ")
    assert message in str(exited.value.message)


def test_probe_that_cannot_run_says_which_python(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": ""})
    c = MockContext(run=Result(stderr="sh: 1: python3.99: not found", exited=127))
    with pytest.raises(Exit, match="is not available on this machine"):
        tasks.build(c, project=str(tmp_path), python="3.99")
    assert "python3.99 " in runs(c).call_args.args[0]


def test_build_with_nothing_to_do_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"wsgi.py": ""})
    spec = actions.detect(Settings.resolve(None, project=str(tmp_path)))
    key = env_key(spec, facts(), "uv", "mod_wsgi")
    env = os.path.join(str(tmp_path), ".warp", "envs", key)
    state = {"env_key": key, "env": env, "server": "mod_wsgi", "kind": "wsgi", "source": "tree-1"}
    c = probe_answers(probe_output(state=state, current=env, complete_envs=[key], source_digest="tree-1"))
    tasks.build(c, project=str(tmp_path))
    assert "nothing to do" in capsys.readouterr().out
    assert len(runs(c).call_args_list) == 1, "only the probe ran"


def test_start_dry_run_prints_the_server_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"wsgi.py": "", ".warp/current/bin/python": ""})
    env = f"{tmp_path}/.warp/envs/py3.11-x"
    c = probe_answers(probe_output(state={"server": "mod_wsgi"}, current=env))
    tasks.start(c, project=str(tmp_path), port=9200, dry_run=True)
    out = capsys.readouterr().out
    # The command, which may span lines (mod_wsgi's starts with a script that makes its folders private), comes last.
    last = out[out.index(f"cd {tmp_path} && ") :]
    assert last.startswith(f"cd {tmp_path} && PATH={env}/bin:")
    assert f"{env}/bin/mod_wsgi-express start-server wsgi " in last
    assert "--port 9200" in last


def test_warp_command_lists_the_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    program.run(["warp", "--list"], exit=False)
    listed = capsys.readouterr().out
    for name in CORE_TASKS:
        assert re.search(rf"^\s+{name}\b", listed, re.MULTILINE), name
