"""Procfile process types and release: parsed, counted and planned (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cases import facts, write_tree
from tests.test_plan_start import ENV, PROJECT, built
from warptasks.cli import process_word
from warptasks.detect import detect_app
from warptasks.detect.app import parse_procfile
from warptasks.errors import ConfigError
from warptasks.plan import StartOptions, command_line, plan_process, plan_release
from warptasks.remote.deploy import check_process_counts
from warptasks.settings import DeploySettings, Settings, process_counts

# Procfile text -> {type: command}
PROCFILES = [
    pytest.param("web: gunicorn app:app\n", {"web": "gunicorn app:app"}, id="web only"),
    pytest.param(
        "# the site\n\nweb: gunicorn app:app\n   \nworker: celery -A proj worker\n# clock: off\nclock: python clock.py\n",
        {"web": "gunicorn app:app", "worker": "celery -A proj worker", "clock": "python clock.py"},
        id="comments and blank lines",
    ),
    pytest.param(
        "release: python manage.py migrate\nhigh-priority_2: rq worker high\n",
        {"release": "python manage.py migrate", "high-priority_2": "rq worker high"},
        id="release and odd names",
    ),
    pytest.param(
        "  worker :  python -c \"import a; print('x: y')\"  \r\n",
        {"worker": "python -c \"import a; print('x: y')\""},
        id="spaces, colons in the command, CRLF",
    ),
    pytest.param("", {}, id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), PROCFILES)
def test_procfile_lines_are_process_types(text: str, expected: dict[str, str]) -> None:
    assert parse_procfile(text) == expected


# Procfile text -> words the error names
BAD_PROCFILES = [
    pytest.param("web gunicorn app:app\n", "line 1", id="no colon before a space"),
    pytest.param("web: a\nweb: b\n", "given twice", id="twice"),
    pytest.param("\nworker:\n", "line 2: worker has no command", id="no command"),
    pytest.param("my worker: x\n", "not a process type name", id="space in the name"),
    pytest.param("wörker: x\n", "not a process type name", id="not ASCII"),
    pytest.param("worker.1: x\n", "not a process type name", id="dot"),
]


@pytest.mark.parametrize(("text", "words"), BAD_PROCFILES)
def test_a_procfile_line_that_cannot_run_is_an_error_naming_it(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_procfile(text)


def test_detection_puts_every_process_type_on_the_spec(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "release: ./release.sh\nworker: python w.py\nclock: python c.py\n"})
    spec = detect_app(tmp_path)
    assert spec.kind == "wsgi"  # the web server is not the Procfile's: the other types still run
    assert spec.process_types == {"worker": "python w.py", "clock": "python c.py"}
    assert spec.release_command == "./release.sh"
    assert spec.as_dict()["procfile"] == {"release": "./release.sh", "worker": "python w.py", "clock": "python c.py"}


def test_a_procfile_web_line_still_serves(tmp_path: Path) -> None:
    write_tree(tmp_path, {"Procfile": "# x\nworker: python w.py\nweb: python serve.py\n"})
    spec = detect_app(tmp_path)
    assert (spec.kind, spec.target, spec.process_types) == ("procfile", "python serve.py", {"worker": "python w.py"})


# --processes values -> (web, types)
COUNTS: list[Any] = [
    pytest.param(None, (None, {}), id="none"),
    pytest.param(4, (4, {}), id="a number is the web server's"),
    pytest.param("4", (4, {}), id="a number as text"),
    pytest.param(["worker=2"], (None, {"worker": 2}), id="TYPE=N"),
    pytest.param(["web=3", "worker=0", "clock=1"], (3, {"worker": 0, "clock": 1}), id="several, 0 allowed"),
    pytest.param("worker=2, clock=1", (None, {"worker": 2, "clock": 1}), id="commas (a variable)"),
    pytest.param({"worker": 2, "web": 5}, (5, {"worker": 2}), id="a mapping (invoke.yaml)"),
]


@pytest.mark.parametrize(("value", "expected"), COUNTS)
def test_process_counts(value: Any, expected: tuple[int | None, dict[str, int]]) -> None:
    assert process_counts("processes", value) == expected


BAD_COUNTS = [
    pytest.param(["worker=two"], "not a number", id="not a number"),
    pytest.param(["worker=-1"], "out of range", id="negative"),
    pytest.param(["web=0"], "out of range", id="no web server"),
    pytest.param(["my worker=1"], "not a process type name", id="bad name"),
    pytest.param({"worker": 1.5}, "not a number", id="a fraction"),
]


@pytest.mark.parametrize(("value", "words"), BAD_COUNTS)
def test_a_count_that_is_not_one_is_an_error(value: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        process_counts("processes", value)


def test_counts_layer_per_type_and_the_web_count_keeps_its_meaning() -> None:
    config = {"warp": {"processes": 3, "deploy": {"processes": {"worker": 2, "clock": 1}, "stop_timeout": {"worker": 60}}}}
    settings = DeploySettings.resolve(config, processes=["worker=4"])
    assert (settings.processes, settings.process_counts) == (3, {"worker": 4, "clock": 1})
    assert settings.stop_timeout == {"worker": 60}
    assert DeploySettings.resolve(None, processes=["5"]).processes == 5
    assert Settings.resolve({"warp": {"processes": {"web": 2, "worker": 1}}}).processes == 2


def test_a_count_for_a_type_the_procfile_lacks_is_refused_before_any_host(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "worker: python w.py\n"})
    spec = detect_app(tmp_path)
    check_process_counts(spec, DeploySettings.resolve(None, processes=["worker=2"]))
    with pytest.raises(ConfigError, match="names clock, which the Procfile has no line for"):
        check_process_counts(spec, DeploySettings.resolve(None, processes=["clock=1"]))
    with pytest.raises(ConfigError, match="stop_timeout names beat"):
        check_process_counts(spec, DeploySettings.resolve({"warp": {"deploy": {"stop_timeout": {"beat": 5}}}}))


def test_a_process_type_runs_its_line_in_the_apps_environment(tmp_path: Path) -> None:
    write_tree(
        tmp_path, {"wsgi.py": "", "Procfile": "worker: celery -A proj worker -l info\n", ".s2i/environment": "QUEUE=redis://q\n"}
    )
    spec = detect_app(tmp_path)
    step = plan_process(spec, built("gunicorn"), "worker", StartOptions(project=PROJECT))
    assert step.argv == ("bash", "-c", "exec celery -A proj worker -l info")
    assert step.cwd == PROJECT and step.path == (f"{ENV}/bin",)
    assert step.env["QUEUE"] == "redis://q" and step.env["VIRTUAL_ENV"] == ENV and step.env["WARP_ACTION"] == "worker"


def test_as_root_a_process_type_runs_as_the_servers_account_even_under_apache(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "worker: python w.py\n"})
    spec = detect_app(tmp_path)
    accounts = [["www-data", "www-data"]]
    step = plan_process(spec, built("mod_wsgi", euid=0, worker_accounts=accounts), "worker", StartOptions(project=PROJECT))
    words = step.argv
    assert words[words.index("--") - 2 : words.index("--")] == ("www-data", "www-data")
    assert words[-3:] == ("bash", "-c", "exec python w.py")
    named = plan_process(spec, built("gunicorn", euid=0), "worker", StartOptions(project=PROJECT, user="app", group="app"))
    assert "app" in named.argv and "www-data" not in named.argv


def test_a_deploy_env_hook_is_sourced_around_a_process_type(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "worker: python w.py\n", ".warpdrive/action_hooks/deploy-env": "X=1\n"})
    spec = detect_app(tmp_path)
    step = plan_process(spec, built("gunicorn"), "worker", StartOptions(project=PROJECT))
    assert step.env_hook == "deploy-env" and step.argv[-3:] == ("bash", "-c", "exec python w.py")


def test_web_and_release_and_unknown_names_are_not_process_types(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "release: x\nworker: python w.py\n"})
    spec = detect_app(tmp_path)
    for name in ("web", "release", "clock"):
        with pytest.raises(ConfigError, match=f"no process type '{name}'"):
            plan_process(spec, built("gunicorn"), name, StartOptions(project=PROJECT))


def test_an_unbuilt_project_has_no_process_to_start(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "worker: python w.py\n"})
    with pytest.raises(Exception, match="not been built"):
        plan_process(detect_app(tmp_path), facts(), "worker", StartOptions(project=PROJECT))


def test_the_release_line_is_planned_like_a_hook(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "release: python manage.py migrate && echo done\n"})
    step = plan_release(detect_app(tmp_path), PROJECT, ENV)
    assert step is not None
    assert step.argv == ("bash", "-c", "exec python manage.py migrate && echo done")
    assert step.env["WARP_ACTION"] == "release" and step.path == (f"{ENV}/bin",)
    assert "exec python manage.py" in command_line(step)
    write_tree(tmp_path, {"Procfile": "worker: x\n"})
    assert plan_release(detect_app(tmp_path), PROJECT, ENV) is None


# stop_timeout values -> seconds per type ("*": every type)
STOP_TIMEOUTS: list[Any] = [
    pytest.param(None, {}, id="none"),
    pytest.param(45, {"*": 45}, id="one number for all"),
    pytest.param({"worker": 60, "clock": 2.5}, {"worker": 60, "clock": 2.5}, id="a mapping"),
    pytest.param("worker=60,clock=5", {"worker": 60, "clock": 5}, id="a variable's text"),
]


@pytest.mark.parametrize(("value", "expected"), STOP_TIMEOUTS)
def test_stop_timeouts(value: Any, expected: dict[str, float]) -> None:
    config = {"warp": {"deploy": {"stop_timeout": value}}}
    assert DeploySettings.resolve(config).stop_timeout == expected


@pytest.mark.parametrize("value", [{"worker": "soon"}, {"worker": -1}, {"my worker": 5}, "worker=x"])
def test_a_stop_timeout_that_is_not_seconds_is_an_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="stop_timeout"):
        DeploySettings.resolve({"warp": {"deploy": {"stop_timeout": value}}})


# warp's argv -> what invoke is given
START_WORDS = [
    pytest.param(["warp", "start", "worker"], ["warp", "start", "--process", "worker"], id="a process type"),
    pytest.param(["warp", "start", "clock", "-r", "2"], ["warp", "start", "--process", "clock", "-r", "2"], id="then options"),
    pytest.param(["warp", "start", "--port", "9"], ["warp", "start", "--port", "9"], id="options only"),
    pytest.param(["warp", "start"], ["warp", "start"], id="the web server"),
    pytest.param(["warp", "build", "worker"], ["warp", "build", "worker"], id="another task"),
    pytest.param(["warp", "start", "plan"], ["warp", "start", "plan"], id="a task name stays a task"),
]


@pytest.mark.parametrize(("argv", "expected"), START_WORDS)
def test_a_word_after_start_names_a_process_type(argv: list[str], expected: list[str]) -> None:
    assert process_word(argv) == expected


def test_a_host_entry_may_run_a_process_type_the_others_do_not(tmp_path: Path) -> None:
    config = {
        "warp": {
            "deploy": {
                "processes": {"clock": 0},
                "hosts": ["web1", {"host": "web2", "processes": {"clock": 1}}],
            }
        }
    }
    settings = DeploySettings.resolve(config)
    web1, web2 = settings.hosts
    assert (web1.processes, web2.processes, settings.process_counts) == ((), (("clock", 1),), {"clock": 0})
    write_tree(tmp_path, {"wsgi.py": "", "Procfile": "worker: python w.py\nclock: python c.py\n"})
    check_process_counts(detect_app(tmp_path), settings, list(settings.hosts))
    with pytest.raises(ConfigError, match="the processes of host web2 names clock"):
        check_process_counts(_only_worker(tmp_path), DeploySettings.resolve(None), [web2])
    with pytest.raises(ConfigError, match="process types only"):
        DeploySettings.resolve({"warp": {"deploy": {"hosts": [{"host": "web3", "processes": {"web": 2}}]}}})


def _only_worker(tmp_path: Path) -> Any:
    other = tmp_path / "other"
    write_tree(other, {"wsgi.py": "", "Procfile": "worker: python w.py\n"})
    return detect_app(other)
