"""Which value wins: --port/config over PORT exported over PORT in the environment file over 8080; an exported
DJANGO_SETTINGS_MODULE over the environment file's over manage.py's default; the invoke configuration levels of the
standalone warp (a project's invoke.yaml among them). Tables of cases, pure: dicts stand in for the process
environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke import Collection, task

from tests.cases import WSGI, django_tree, facts, write_tree
from warptasks.cli import WarpConfig, WarpProgram, project_folder
from warptasks.detect import detect_app
from warptasks.detect.conventions import PROCESS_SETTINGS, choose_port, process_settings
from warptasks.errors import ConfigError, NoAppFound
from warptasks.image import dockerfile as img
from warptasks.image.runtime import render
from warptasks.plan import StartOptions, plan_start
from warptasks.plan.environment import hook_environment, plan_exec
from warptasks.settings import Settings

# given (--port or the warp.port setting), PORT exported, PORT in the environment file -> port, why (a part of it)
PORT_CASES = [
    pytest.param(None, {}, {}, 8080, "default", id="nothing-set-8080"),
    pytest.param(None, {}, {"PORT": "8085"}, 8085, "PORT in .s2i/environment", id="environment-file"),
    pytest.param(None, {"PORT": "9001"}, {}, 9001, "PORT exported", id="exported"),
    pytest.param(None, {"PORT": "9001"}, {"PORT": "8085"}, 9001, "PORT exported", id="exported-over-file"),
    pytest.param(7000, {"PORT": "9001"}, {"PORT": "8085"}, 7000, "--port", id="option-over-all"),
    pytest.param(7000, {}, {"PORT": "8085"}, 7000, "--port", id="option-over-file"),
    pytest.param(None, {"PORT": " "}, {"PORT": "8085"}, 8085, ".s2i/environment", id="blank-export-says-nothing"),
    pytest.param(None, {}, {"PORT": ""}, 8080, "default", id="empty-in-file-says-nothing"),
    # A layer above a broken one decides: the broken value is never read.
    pytest.param(7000, {"PORT": "http"}, {"PORT": "x"}, 7000, "--port", id="option-hides-broken-values"),
    pytest.param(None, {"PORT": "9001"}, {"PORT": "x"}, 9001, "exported", id="export-hides-broken-file-value"),
]


@pytest.mark.parametrize(("given", "process", "environment", "port", "why"), PORT_CASES)
def test_the_port_a_start_listens_on(
    given: int | None, process: dict[str, str], environment: dict[str, str], port: int, why: str
) -> None:
    chosen, reason = choose_port(given, process, environment, (".s2i/environment",))
    assert (chosen, why in reason) == (port, True), reason


# PORT exported, PORT in the environment file -> the error names
PORT_ERRORS = [
    pytest.param({"PORT": "http"}, {}, ("PORT='http'", "exported"), id="exported-not-a-number"),
    pytest.param({}, {"PORT": "99999"}, ("PORT='99999'", ".s2i/environment"), id="file-out-of-range"),
    pytest.param({}, {"PORT": "0"}, ("PORT='0'", ".s2i/environment"), id="file-zero"),
    pytest.param({"PORT": "-1"}, {"PORT": "8085"}, ("PORT='-1'", "exported"), id="exported-negative-over-good-file"),
    pytest.param({"PORT": "\u0663\u0660\u0660\u0660"}, {}, ("is not a port number", "exported"), id="exported-arabic-digits"),
    pytest.param({}, {"PORT": "\uff18\uff10\uff18\uff10"}, ("is not a port number", ".s2i/environment"), id="file-fullwidth"),
    pytest.param({"PORT": "\u00b2"}, {}, ("is not a port number", "exported"), id="exported-superscript-two"),
]


@pytest.mark.parametrize(("process", "environment", "names"), PORT_ERRORS)
def test_a_port_that_is_not_one_says_where_it_was_set(
    process: dict[str, str], environment: dict[str, str], names: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as error:
        choose_port(None, process, environment, (".s2i/environment",))
    assert all(name in error.value.message for name in names), error.value.message
    assert "--port" in error.value.hint


# The process environment (os.environ of the task) -> the variables that count
PROCESS_CASES = [
    pytest.param(None, {}, id="none-passed"),
    pytest.param({}, {}, id="empty"),
    pytest.param({"PORT": "9000", "HOME": "/root"}, {"PORT": "9000"}, id="port-only"),
    pytest.param(
        {"DJANGO_SETTINGS_MODULE": "mysite.prod", "PORT": "9000"},
        {"DJANGO_SETTINGS_MODULE": "mysite.prod", "PORT": "9000"},
        id="both",
    ),
    # The project's structure is the project files' business: a stray export never picks another entry point.
    pytest.param({"APP_MODULE": "other:app", "APP_FILE": "x.py", "APP_HOME": "sub", "WEB_CONCURRENCY": "9"}, {}, id="others"),
    pytest.param({"DJANGO_SETTINGS_MODULE": ""}, {}, id="empty-export"),
]


@pytest.mark.parametrize(("environ", "counted"), PROCESS_CASES)
def test_only_the_process_settings_count(environ: dict[str, str] | None, counted: dict[str, str]) -> None:
    assert process_settings(environ) == counted
    assert set(counted) <= set(PROCESS_SETTINGS)


def test_an_exported_app_module_does_not_change_the_entry_point(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"wsgi.py": WSGI})
    spec = detect_app(root, environ={"APP_MODULE": "elsewhere:app", "APP_SCRIPT": "x.sh"})
    assert (spec.kind, spec.target, spec.process_environment) == ("wsgi", "wsgi:application", {})


PROD = "SETTINGS_NAME = 'prod'\nSTATIC_URL = '/assets/'\nSTATIC_ROOT = 'prodstatic'\n"

# environment file, process environment -> settings module, where it was found
DJANGO_CASES = [
    pytest.param("", None, "mysite.settings", "manage.py sets", id="manage-py-default"),
    pytest.param("", {}, "mysite.settings", "manage.py sets", id="nothing-exported"),
    pytest.param("", {"DJANGO_SETTINGS_MODULE": "mysite.prod"}, "mysite.prod", "exported", id="exported-over-manage-py"),
    pytest.param(
        "DJANGO_SETTINGS_MODULE=mysite.settings\n", None, "mysite.settings", "in the environment file", id="file-over-manage"
    ),
    # As a container's own environment beats its image's (docker run -e over the image's .s2i/environment).
    pytest.param(
        "DJANGO_SETTINGS_MODULE=mysite.settings\n",
        {"DJANGO_SETTINGS_MODULE": "mysite.prod"},
        "mysite.prod",
        "exported",
        id="exported-over-file",
    ),
]


@pytest.mark.parametrize(("env_file", "environ", "settings", "where"), DJANGO_CASES)
def test_the_django_settings_module(
    tmp_path: Path, env_file: str, environ: dict[str, str] | None, settings: str, where: str
) -> None:
    files = {**django_tree("SETTINGS_NAME = 'dev'\n"), "mysite/prod.py": PROD}
    if env_file:
        files[".s2i/environment"] = env_file
    spec = detect_app(write_tree(tmp_path, files), environ=environ)
    assert spec.django is not None
    assert spec.django.settings == settings
    assert f"settings {settings} (" in spec.why and where in spec.why, spec.why
    # The settings detection read are the ones collectstatic runs with.
    assert spec.django.static_url == ("/assets/" if settings == "mysite.prod" else None)


def test_an_exported_settings_module_that_does_not_exist_says_it_was_exported(tmp_path: Path) -> None:
    root = write_tree(tmp_path, django_tree())
    with pytest.raises(NoAppFound) as error:
        detect_app(root, environ={"DJANGO_SETTINGS_MODULE": "mysite.nope"})
    assert "mysite/nope.py does not exist" in error.value.message and "exported" in error.value.message


def test_the_exported_settings_module_is_a_build_input_the_port_is_not(tmp_path: Path) -> None:
    """collectstatic reads the settings: another module means another build; another PORT means none."""
    root = write_tree(tmp_path, {**django_tree(), "mysite/prod.py": PROD})
    plain = detect_app(root).build_inputs_digest
    assert detect_app(root, environ={"PORT": "9000"}).build_inputs_digest == plain
    assert detect_app(root, environ={"DJANGO_SETTINGS_MODULE": "mysite.prod"}).build_inputs_digest != plain
    # Not a Django project: the settings module decides nothing, so no new environment for it.
    plain_wsgi = write_tree(tmp_path / "wsgi", {"wsgi.py": WSGI})
    assert detect_app(plain_wsgi, environ={"DJANGO_SETTINGS_MODULE": "x.y"}).build_inputs_digest == (
        detect_app(plain_wsgi).build_inputs_digest
    )


def test_the_build_notes_say_what_was_exported_and_that_deploys_ignore_it(tmp_path: Path) -> None:
    from warptasks.plan import BuildOptions, plan_build

    root = write_tree(tmp_path, {"wsgi.py": WSGI})
    notes = plan_build(detect_app(root, environ={"PORT": "9000"}), facts(), BuildOptions(str(root))).notes
    assert any(n.startswith("exported here: PORT=9000") and "warp deploy" in n for n in notes), notes
    assert not any(n.startswith("exported here") for n in plan_build(detect_app(root), facts(), BuildOptions(str(root))).notes)


ENV = "/srv/app/.warp/envs/py3.11-0123456789abcdef"
BUILT = facts(state={"env_key": "k", "env": ENV, "server": "gunicorn", "kind": "wsgi", "source": "s"}, current=ENV)


def _argv_port(argv: tuple[str, ...]) -> str:
    return next(a.rpartition(":")[2] for a in argv if a.startswith("--bind=") or a.startswith("127.0.0.1:"))


# environment file, process environment, StartOptions.port -> the port the server binds and PORT it sees
START_CASES = [
    pytest.param("", None, None, 8080, id="default"),
    pytest.param("PORT=8085\n", None, None, 8085, id="environment-file"),
    pytest.param("PORT=8085\n", {"PORT": "9001"}, None, 9001, id="exported"),
    pytest.param("PORT=8085\n", {"PORT": "9001"}, 7000, 7000, id="option"),
    # A deploy's backend port (and an image's token) are given: the project's PORT never moves them.
    pytest.param("PORT=8085\n", None, 47913, 47913, id="deploy-backend-port-wins"),
]


@pytest.mark.parametrize(("env_file", "environ", "given", "port"), START_CASES)
def test_the_start_plan_binds_the_chosen_port_and_says_why(
    tmp_path: Path, env_file: str, environ: dict[str, str] | None, given: int | None, port: int
) -> None:
    files = {"wsgi.py": WSGI, **({".s2i/environment": env_file} if env_file else {})}
    spec = detect_app(write_tree(tmp_path, files), server="gunicorn", environ=environ)
    plan = plan_start(spec, BUILT, StartOptions(project="/srv/app", port=given))
    server = plan.server
    assert server.env["PORT"] == str(port)
    assert f"127.0.0.1:{port}" in " ".join(server.argv)
    assert any(note.startswith(f"port: {port} (") for note in plan.notes), plan.notes
    assert any(check.name == "port" and check.argv[-1] == str(port) for check in plan.checks)


def test_exec_and_hooks_see_the_exported_settings_over_the_files(tmp_path: Path) -> None:
    files = {**django_tree(), "mysite/prod.py": PROD, ".s2i/environment": "DJANGO_SETTINGS_MODULE=mysite.settings\nPORT=8085\n"}
    spec = detect_app(write_tree(tmp_path, files), environ={"DJANGO_SETTINGS_MODULE": "mysite.prod"})
    env = hook_environment(spec, "/srv/app", ENV, "deploy", "exec")
    assert env["DJANGO_SETTINGS_MODULE"] == "mysite.prod" and env["WARPDRIVE_HTTP_PORT"] == "8085"
    step = plan_exec(spec, "/srv/app", ENV, ("true",), "exec", 7000)
    assert step.env["WARPDRIVE_HTTP_PORT"] == "7000"
    # Without the process environment (a deploy, an image), the file decides.
    assert hook_environment(detect_app(spec.root), "/srv/app", ENV, "deploy", "exec")["DJANGO_SETTINGS_MODULE"] == (
        "mysite.settings"
    )


# environment file -> the port an image serves on unless the container sets PORT (EXPOSE, label, docker run -p)
IMAGE_CASES = [pytest.param("", 8080, id="default"), pytest.param("PORT=8085\n", 8085, id="environment-file")]


@pytest.mark.parametrize(("env_file", "port"), IMAGE_CASES)
def test_an_image_serves_on_the_projects_port(tmp_path: Path, env_file: str, port: int) -> None:
    files = {"wsgi.py": WSGI, **({".s2i/environment": env_file} if env_file else {})}
    spec = detect_app(write_tree(tmp_path / "app", files), server="mod_wsgi")
    image_env = f"{img.PROJECT}/.warp/envs/py3.11-abc"
    built = facts(euid=1001, state={"server": "mod_wsgi", "env": image_env, "env_key": "abc", "kind": "wsgi"}, current=image_env)
    data = json.loads(json.dumps(render(spec, built, img.PROJECT)))
    assert data["fixed_port"] == port and data["port"]  # the default, and the token PORT replaces
    assert any(note.startswith(f"port: $PORT, else {port}") for note in data["notes"]), data["notes"]
    assert img.app_port(spec) == port
    assert img.image_labels(spec, "mod_wsgi", None, builder=False)["io.openshift.expose-services"] == f"{port}:http"
    build = img.ImageBuild("python:3.11-slim", (), "/usr/local/bin/python3.11", "w.whl", {}, port=img.app_port(spec))
    assert f"EXPOSE {port}\n" in img.runtime_dockerfile(build)


# The standalone warp's configuration levels. Each case: invoke.yaml in the project, INVOKE_WARP_PORT, the task's
# --port -> the port the task resolves.
LEVEL_CASES = [
    pytest.param(None, None, None, None, id="nothing-set"),
    pytest.param("7001", None, None, 7001, id="project-invoke-yaml"),
    pytest.param("7001", "7002", None, 7002, id="environment-variable-over-invoke-yaml"),
    pytest.param("7001", "7002", "7003", 7003, id="option-over-all"),
    pytest.param(None, "7002", None, 7002, id="environment-variable"),
]


def _seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Any:
    seen: dict[str, Any] = {}

    @task
    def show(c, port=None, project=None):  # type: ignore[no-untyped-def]
        seen["port"] = Settings.resolve(c.config, port=port).port
        seen["server"] = c.config.warp.get("server")

    ns = Collection(show)
    ns.configure({"warp": {"port": None, "server": None}})
    program = WarpProgram(name="warp", binary="warp", version="0", namespace=ns, config_class=WarpConfig)
    program.run(["warp", *argv], exit=False)
    return seen


@pytest.mark.parametrize(("yaml_port", "env_port", "option", "port"), LEVEL_CASES)
def test_warp_reads_the_projects_invoke_yaml_below_variables_and_options(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    yaml_port: str | None,
    env_port: str | None,
    option: str | None,
    port: int | None,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.invoke.yaml of this machine
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_WARP_PORT", raising=False)
    if yaml_port:
        (tmp_path / "invoke.yaml").write_text(f"warp:\n  port: {yaml_port}\n")
    if env_port:
        monkeypatch.setenv("INVOKE_WARP_PORT", env_port)
    seen = _seen(tmp_path, monkeypatch, ["show", *(["--port", option] if option else [])])
    assert seen["port"] == port


def test_the_project_folder_is_the_one_project_names_and_its_file_beats_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, app = tmp_path / "home", tmp_path / "app"
    home.mkdir()
    app.mkdir()
    (home / ".invoke.yaml").write_text("warp:\n  port: 7100\n  server: gunicorn\n")
    (app / "invoke.yml").write_text("warp:\n  port: 7200\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("INVOKE_WARP_PORT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert _seen(tmp_path, monkeypatch, ["show"]) == {"port": 7100, "server": "gunicorn"}  # the user's: no project file here
    assert _seen(tmp_path, monkeypatch, ["show", "--project", "app"]) == {"port": 7200, "server": "gunicorn"}
    monkeypatch.chdir(app)
    assert _seen(tmp_path, monkeypatch, ["show"]) == {"port": 7200, "server": "gunicorn"}


def test_warp_never_runs_a_projects_invoke_py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "invoke.py").write_text(f"open({str(marker)!r}, 'w').close()\nwarp = {{'port': 7300}}\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_WARP_PORT", raising=False)
    assert _seen(tmp_path, monkeypatch, ["show"])["port"] is None
    assert not marker.exists()


def test_a_broken_invoke_yaml_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    (tmp_path / "invoke.yaml").write_text("warp:\n  port: [unclosed\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        _seen_exiting(tmp_path)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invoke.yaml" in err and "Traceback" not in err


def _seen_exiting(tmp_path: Path) -> None:
    @task
    def show(c, project=None):  # type: ignore[no-untyped-def]
        pass

    program = WarpProgram(name="warp", binary="warp", version="0", namespace=Collection(show), config_class=WarpConfig)
    program.run(["warp", "show"])


def test_project_folder_without_tasks_is_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert project_folder(None) == str(tmp_path)


# A repository's invoke.yaml, read by warp plan on a clone of it: only its warp: section counts, and the settings that
# name a program warp runs or a file it trusts or ships are refused.
HOSTILE_RUN = [
    pytest.param("run:\n  shell: {evil}\n", id="run-shell"),
    pytest.param("run:\n  env:\n    BASH_ENV: {rc}\n", id="run-env-bash-env"),
    pytest.param("run:\n  echo: true\n", id="run-echo"),
]


@pytest.mark.parametrize("text", HOSTILE_RUN)
def test_a_projects_invoke_yaml_cannot_change_how_warp_plan_runs_its_steps(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\ntouch {marker}\nexec /bin/bash "$@"\n')
    evil.chmod(0o755)
    rc = tmp_path / "evil.rc"
    rc.write_text(f"touch {marker}\n")
    (tmp_path / "wsgi.py").write_text("def application(environ, start_response):\n    return []\n")
    (tmp_path / ".s2i").mkdir()
    (tmp_path / ".s2i" / "environment").write_text("SECRET_KEY=never-printed-42\n")
    (tmp_path / "invoke.yaml").write_text(text.format(evil=evil, rc=rc) + "warp:\n  port: 7401\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")} | {"HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "warptasks", "plan"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "the project's file made warp plan run its program"
    assert "never-printed-42" not in done.stdout + done.stderr
    assert "port: 7401" in done.stdout  # its warp: section still counts


REFUSED = [
    pytest.param("warp:\n  python: ./evilpy\n", "warp.python", id="python-path"),
    pytest.param("warp:\n  deploy:\n    accept_unknown_host: true\n", "warp.deploy.accept_unknown_host", id="accept-host"),
    pytest.param("warp:\n  deploy:\n    known_hosts: ./known\n", "warp.deploy.known_hosts", id="known-hosts"),
    pytest.param("warp:\n  deploy:\n    env_file: ~/.aws/credentials\n", "warp.deploy.env_file", id="env-file"),
    pytest.param("warp:\n  deploy:\n    tls_key: ~/.ssh/id_rsa\n", "warp.deploy.tls_key", id="tls-key"),
    pytest.param("warp:\n  deploy:\n    identity: ./key\n", "warp.deploy.identity", id="identity"),
]


@pytest.mark.parametrize(("text", "named"), REFUSED)
def test_settings_that_name_programs_or_trusted_files_are_refused_from_a_projects_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, text: str, named: str
) -> None:
    (tmp_path / "invoke.yaml").write_text(text)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        _seen_exiting(tmp_path)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "~/.invoke.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("python", ["3.12", "python3.12"])
def test_a_python_version_or_command_name_from_a_projects_file_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str
) -> None:
    (tmp_path / "invoke.yaml").write_text(f"warp:\n  python: '{python}'\n  port: 7402\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_WARP_PORT", raising=False)
    assert _seen(tmp_path, monkeypatch, ["show"])["port"] == 7402


def test_the_users_own_file_may_still_name_a_python_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".invoke.yaml").write_text("warp:\n  python: /usr/bin/python3\n  port: 7403\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_WARP_PORT", raising=False)
    assert _seen(tmp_path, monkeypatch, ["show"])["port"] == 7403
