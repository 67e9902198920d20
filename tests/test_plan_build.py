"""plan_build: an AppSpec and a target's facts in, the build steps (and why) out."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.cases import ASGI, PROBE_FACTS, Exe, django_tree, facts, write_tree
from warptasks.detect import AppSpec, detect_app
from warptasks.errors import ConfigError
from warptasks.facts import BuildState, Facts, StaticFiles
from warptasks.plan import Plan, Step, command_line
from warptasks.plan.build import BuildOptions, env_key, plan_build

PROJECT = "/srv/app"  # where the plan runs, on the target
ENV_ROOT = f"{PROJECT}/.warp"
WSGI = {"wsgi.py": "application = None\n", "requirements.txt": "flask\n"}
SOURCE_THEN_EXEC = 'set -a && . "$1" && set +a && shift && exec "$@"'


def detect(tmp_path: Path, files: dict[str, Any], server: str | None = None) -> AppSpec:
    return detect_app(write_tree(tmp_path, files), server=server)


def build(spec: AppSpec, target: Facts | None = None, **options: Any) -> Plan:
    return plan_build(spec, target or facts(), BuildOptions(project=PROJECT, **options))


def named(plan: Plan, name: str) -> Step:
    found = [s for s in plan.steps if s.name == name]
    assert len(found) == 1, f"expected one step {name!r} in {[s.name for s in plan.steps]}"
    return found[0]


def env_of(plan: Plan) -> str:
    return named(plan, "virtualenv").argv[-1]


def built_state(spec: AppSpec, target: Facts, installer: str = "uv", server: str = "mod_wsgi") -> Facts:
    """Facts of a target where the build of ``spec`` completed and is current."""
    key = env_key(spec, target, installer, server)
    env = f"{ENV_ROOT}/envs/{key}"
    state = BuildState(env_key=key, env=env, server=server, kind=spec.kind, source="tree-1")
    return replace(target, complete_envs=(key,), state=state, current=env, source_digest="tree-1")


# (installer option, uv on the target, virtualenv importable) -> (environment creation prefix, install prefix)
INSTALLER_CASES = [
    pytest.param(
        "auto",
        "/opt/bin/uv",
        True,
        (("/opt/bin/uv", "venv", "--seed"), ("/opt/bin/uv", "pip", "install", "--python")),
        id="auto-picks-uv",
    ),
    pytest.param(
        "uv",
        "/opt/bin/uv",
        False,
        (("/opt/bin/uv", "venv", "--seed"), ("/opt/bin/uv", "pip", "install", "--python")),
        id="uv-asked",
    ),
    pytest.param(
        "auto",
        None,
        True,
        (("/usr/bin/python3.11", "-I", "-m", "virtualenv"), ("{env}/bin/python", "-I", "-m", "pip", "install")),
        id="auto-without-uv-uses-pip-and-virtualenv",
    ),
    pytest.param(
        "pip",
        "/opt/bin/uv",
        False,
        (("/usr/bin/python3.11", "-I", "-m", "venv"), ("{env}/bin/python", "-I", "-m", "pip", "install")),
        id="pip-asked-without-virtualenv-uses-venv",
    ),
]


@pytest.mark.parametrize(("installer", "uv", "has_virtualenv", "expected"), INSTALLER_CASES)
def test_installer_decides_how_environments_are_made(
    tmp_path: Path, installer: str, uv: str | None, has_virtualenv: bool, expected: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    plan = build(detect(tmp_path, WSGI), facts(uv=uv, has_virtualenv=has_virtualenv), installer=installer)
    env = env_of(plan)
    create, install = expected
    assert named(plan, "virtualenv").argv[: len(create)] == create
    for name in ("install requirements", "install server"):
        assert named(plan, name).argv[: len(install)] == tuple(a.format(env=env) for a in install)
    assert named(plan, "install requirements").argv[-2:] == ("-r", "requirements.txt")


@pytest.mark.parametrize(
    ("installer", "uv", "message"),
    [
        pytest.param("uv", None, "uv is not installed", id="uv-missing"),
        pytest.param("conda", "/opt/bin/uv", "unknown installer", id="unknown"),
    ],
)
def test_impossible_installer_is_a_config_error(tmp_path: Path, installer: str, uv: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(detect(tmp_path, WSGI), facts(uv=uv), installer=installer)


@pytest.mark.parametrize("uv", ["/opt/bin/uv", None])
@pytest.mark.parametrize("server", ["mod_wsgi", "uwsgi"])
def test_compiled_servers_use_a_build_cache_per_python(tmp_path: Path, uv: str | None, server: str) -> None:
    spec = detect(tmp_path, WSGI, server=server)
    step = named(build(spec, facts(uv=uv)), "install server")
    assert step.argv[-1] == server
    cache = step.env["PIP_CACHE_DIR"]
    assert step.env["UV_CACHE_DIR"] == cache
    assert cache.startswith("/home/app/.cache/warptasks/python-")
    other = facts(
        uv=uv,
        python={
            **PROBE_FACTS["python"],
            "executable": "/opt/pyenv/3.11.7/bin/python3.11",
            "version": "3.11",
            "full_version": "3.11.7",
            "prefix": "/opt/pyenv/3.11.7",
        },
    )
    assert named(build(spec, other), "install server").env["PIP_CACHE_DIR"] != cache
    assert named(build(spec, facts(uv=uv)), "install server").env["PIP_CACHE_DIR"] == cache


@pytest.mark.parametrize("server", ["mod_wsgi", "uwsgi"])
def test_with_uv_a_compiled_server_comes_from_a_wheel_pip_keeps_per_python(tmp_path: Path, server: str) -> None:
    plan = build(detect(tmp_path, WSGI, server=server), facts(uv="/opt/bin/uv"))
    wheel, install = named(plan, "server wheel"), named(plan, "install server")
    names = [s.name for s in plan.steps]
    assert names.index("server wheel") + 1 == names.index("install server")
    wheelhouse = wheel.argv[wheel.argv.index("--wheel-dir") + 1]
    assert wheel.argv[1:5] == ("-I", "-m", "pip", "wheel") and wheel.argv[-1] == server
    assert wheelhouse == wheel.env["PIP_CACHE_DIR"] + "/wheels"
    assert ("--find-links", wheelhouse) == install.argv[install.argv.index("--find-links") :][:2]
    assert "server wheel" not in [s.name for s in build(detect(tmp_path, WSGI, server=server), facts(uv=None)).steps]


@pytest.mark.parametrize(
    ("server", "packages"),
    [
        pytest.param("gunicorn", ("gunicorn", "servestatic"), id="gunicorn"),
        pytest.param("waitress", ("waitress", "servestatic"), id="waitress"),
    ],
)
def test_pure_python_servers_install_from_the_shared_cache(tmp_path: Path, server: str, packages: tuple[str, ...]) -> None:
    plan = build(detect(tmp_path, WSGI, server=server), facts(apxs=None))
    step = named(plan, "install server")
    assert step.argv[-len(packages) :] == packages
    assert "PIP_CACHE_DIR" not in step.env and "UV_CACHE_DIR" not in step.env
    support = named(plan, "support")
    assert support.argv[5] == f"{env_of(plan)}/warp/warp_app.py"
    assert "WARP_APP_TARGET" in support.argv[4]


def test_paste_app_gets_pastedeploy_except_under_mod_wsgi(tmp_path: Path) -> None:
    write_tree(tmp_path, {"paste.ini": "[app:main]\n"})
    assert named(build(detect_app(tmp_path, server="gunicorn")), "install server").argv[-1] == "PasteDeploy"
    assert "PasteDeploy" not in named(build(detect_app(tmp_path)), "install server").argv


def test_missing_apxs_gives_the_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apxs") as error:
        build(detect(tmp_path, WSGI), facts(apxs=None))
    assert "apache2-dev" in error.value.hint
    assert "--server gunicorn" in error.value.hint


def test_apps_serving_themselves_install_no_server(tmp_path: Path) -> None:
    plan = build(detect(tmp_path, {"app.sh": "exec python -m http.server", **WSGI}), facts(apxs=None))
    names = [s.name for s in plan.steps]
    assert "install server" not in names and "support" not in names
    assert "install requirements" in names


# tree -> the install steps, in order, each as (name, argv tail)
DEPENDENCY_CASES = [
    pytest.param(
        {"Pipfile.lock": "{}"},
        [
            ("install micropipenv", ("micropipenv[toml]",)),
            ("export lock file", ("pipenv",)),
            ("install lock file", ("--no-deps", "-r")),
        ],
        id="Pipfile.lock",
    ),
    pytest.param(
        {"poetry.lock": ""},
        [
            ("install micropipenv", ("micropipenv[toml]",)),
            ("export lock file", ("poetry",)),
            ("install lock file", ("--no-deps", "-r")),
        ],
        id="poetry.lock",
    ),
    pytest.param(
        {"uv.lock": "", "pyproject.toml": "[project]\nname='x'\n"},
        [("install uv.lock", ("sync", "--frozen", "--no-dev", "--no-install-project", "--python"))],
        id="uv.lock",
    ),
    pytest.param(
        {"pyproject.toml": "[project]\nname='x'\ndependencies=['flask', 'attrs>1']\n"},
        [("install dependencies", ("flask", "attrs>1"))],
        id="pyproject-dependencies",
    ),
    pytest.param(
        {"pyproject.toml": "[build-system]\nrequires=['setuptools']\n"},
        [("install project", ("install", "--python"))],
        id="pyproject-package",
    ),
    pytest.param(
        {"requirements.txt": "", "setup.py": ""},
        [("install requirements", ("-r", "requirements.txt")), ("install project", ("install", "--python"))],
        id="requirements-then-project",
    ),
    pytest.param({}, [], id="nothing"),
]


@pytest.mark.parametrize(("files", "expected"), DEPENDENCY_CASES)
def test_dependencies_are_installed_by_their_kind(
    tmp_path: Path, files: dict[str, str], expected: list[tuple[str, tuple]]
) -> None:
    plan = build(detect(tmp_path, {"wsgi.py": "", **files}))
    installs = [s for s in plan.steps if s.name.startswith(("install", "export")) and s.name != "install server"]
    assert [s.name for s in installs] == [name for name, _ in expected]
    for step, (_, words) in zip(installs, expected, strict=True):
        argv = step.argv
        assert any(argv[i : i + len(words)] == words for i in range(len(argv))), (step.name, argv)
        # The project itself comes after its code, non-editable (see tests/test_install_project.py).
        assert step.phase == ("app" if step.name == "install project" else "deps")
        assert "-e" not in argv


def test_uv_lock_without_uv_installs_uv_first(tmp_path: Path) -> None:
    plan = build(detect(tmp_path, {"wsgi.py": "", "uv.lock": ""}), facts(uv=None))
    env = env_of(plan)
    assert named(plan, "install uv").argv == (f"{env}/bin/python", "-I", "-m", "pip", "install", "uv")
    sync = named(plan, "install uv.lock")
    assert sync.argv[0] == f"{env}/bin/uv"
    assert sync.env["UV_PROJECT_ENVIRONMENT"] == env


def test_steps_run_in_the_app_home_and_the_environment_is_under_env_dir(tmp_path: Path) -> None:
    spec = detect(tmp_path, {".s2i/environment": "APP_HOME=src\n", "src/wsgi.py": ""})
    plan = build(spec)
    env = env_of(plan)
    assert env.startswith(f"{ENV_ROOT}/envs/py3.11-")
    assert named(plan, "virtualenv").cwd == f"{PROJECT}/src"
    assert env_of(build(spec, envs_dir="/var/cache/warp")).startswith("/var/cache/warp/py3.11-")
    assert env_of(build(spec, env_dir="build/env")).startswith(f"{PROJECT}/build/env/envs/")


def test_deps_phase_comes_first_and_switch_is_last(tmp_path: Path) -> None:
    files = {
        **django_tree(),
        "requirements.txt": "",
        ".warpdrive/action_hooks/pre-build": "",
        ".warpdrive/action_hooks/build": "",
    }
    plan = build(detect(tmp_path, files))
    phases = [s.phase for s in plan.steps]
    assert phases == sorted(phases, key=lambda p: p != "deps"), phases
    assert plan.steps[-1].name == "switch"
    assert plan.steps[-1].argv[-6:-4] == (f"{ENV_ROOT}/current", env_of(plan))
    assert plan.steps[-1].argv[-4:-2] == (f"{ENV_ROOT}/state.json.next", f"{ENV_ROOT}/state.json")
    assert plan.steps[-1].argv[-2:] == (f"{ENV_ROOT}/static.json.next", f"{ENV_ROOT}/static.json")
    assert plan.phase("deps").steps[-1].name == "mark complete"
    assert [s.name for s in plan.phase("app").steps] == ["hook build", "collectstatic", "record", "switch"]


def test_a_fresh_build_runs_every_step(tmp_path: Path) -> None:
    plan = build(detect(tmp_path, WSGI))
    assert plan.runnable == plan.steps
    assert [s.name for s in plan.steps] == [
        "clean",
        "virtualenv",
        "install requirements",
        "server wheel",
        "install server",
        "mark complete",
        "static",
        "record",
        "switch",
    ]


def test_a_complete_environment_is_reused_for_a_changed_source(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    target = replace(built_state(spec, facts()), source_digest="tree-2")
    plan = build(spec, target)
    assert all(s.skip.startswith("environment py3.11-") for s in plan.phase("deps").steps)
    assert [s.name for s in plan.runnable] == ["static", "record", "switch"]


def test_nothing_runs_when_nothing_changed(tmp_path: Path) -> None:
    spec = detect(tmp_path, {**WSGI, ".warpdrive/action_hooks/pre-build": "", ".warpdrive/action_hooks/build": ""})
    plan = build(spec, built_state(spec, facts()))
    assert plan.runnable == ()
    assert named(plan, "hook pre-build").skip.startswith("nothing changed")
    assert named(plan, "switch").skip == "already current"


def test_force_rebuilds_everything(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    plan = build(spec, built_state(spec, facts()), force=True)
    assert plan.runnable == plan.steps


def _touches(step: Step, path: str) -> bool:
    """``step`` names ``path`` or something in it (an rm, a virtualenv created over it, an install into it)."""
    return any(word == path or word.startswith(path + "/") for word in step.argv)


def test_force_builds_beside_the_live_environment_and_switches_last(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    target = built_state(spec, facts())
    live = target.current
    assert live is not None
    plan = build(spec, target, force=True)
    names = [s.name for s in plan.steps]
    switch = names.index("switch")
    # Nothing before the switch removes, recreates or installs into the live environment: a failed step leaves it serving.
    assert not [s.name for s in plan.steps[:switch] if _touches(s, live)]
    new = env_of(plan)
    assert new != live and new.startswith(f"{ENV_ROOT}/envs/") and named(plan, "clean").argv == ("rm", "-rf", new)
    assert named(plan, "switch").argv[-6:-4] == (f"{ENV_ROOT}/current", new)
    assert plan.runnable == plan.steps


def test_forced_builds_alternate_and_a_plain_build_reuses_the_one_that_is_live(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    first = built_state(spec, facts())
    key = first.complete_envs[0]
    beside = env_of(build(spec, first, force=True))
    assert first.state is not None
    # After the forced build switched: both folders complete, the new one current.
    after = replace(
        first,
        complete_envs=tuple(sorted((key, beside.rsplit("/", 1)[1]))),
        current=beside,
        state=replace(first.state, env=beside),
    )
    again = build(spec, after, force=True)
    assert env_of(again) == f"{ENV_ROOT}/envs/{key}", "the next forced build goes back to the folder not live"
    assert not [s.name for s in again.steps[: [s.name for s in again.steps].index("switch")] if _touches(s, beside)]
    plain = build(spec, after)
    assert plain.runnable == (), "a plain build reuses the live folder of the same key"
    assert named(plain, "switch").skip == "already current"


def test_a_new_current_environment_elsewhere_is_switched_back(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    target = replace(built_state(spec, facts()), current=f"{ENV_ROOT}/envs/another")
    plan = build(spec, target)
    assert "switch" in [s.name for s in plan.runnable]
    assert "clean" not in [s.name for s in plan.runnable]


def test_environment_key_follows_python_installer_and_server(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    key = env_key(spec, facts(), "uv", "mod_wsgi")
    assert env_key(spec, facts(), "uv", "mod_wsgi") == key
    newer = facts(python={**PROBE_FACTS["python"], "full_version": "3.11.9"})
    others = {
        env_key(spec, newer, "uv", "mod_wsgi"),
        env_key(spec, facts(), "pip", "mod_wsgi"),
        env_key(spec, facts(), "uv", "gunicorn"),
    }
    assert key not in others and len(others) == 3
    assert key.startswith("py3.11-")


def test_environment_key_follows_the_requirements(tmp_path: Path) -> None:
    before = env_of(build(detect(tmp_path, WSGI)))
    (tmp_path / "requirements.txt").write_text("flask==3.1\n", encoding="utf-8")
    assert env_of(build(detect_app(tmp_path))) != before


# settings, environment file -> (supplied STATIC_ROOT or "", collect "1"/"0")
COLLECTSTATIC_CASES = [
    pytest.param("STATIC_URL = '/static/'\n", "", (f"{ENV_ROOT}/static-a", "1"), id="no-static-root-gets-one"),
    pytest.param("STATIC_ROOT = '/srv/static'\n", "", ("", "1"), id="static-root-kept"),
    pytest.param("STATIC_ROOT = None\n", "", (f"{ENV_ROOT}/static-a", "1"), id="static-root-none-gets-one"),
    pytest.param("STATIC_ROOT = 'x'\n", "DISABLE_COLLECTSTATIC=1\n", ("", "0"), id="disabled"),
    pytest.param("", "DISABLE_COLLECTSTATIC=true\n", (f"{ENV_ROOT}/static-a", "0"), id="disabled-true"),
    pytest.param("", "DISABLE_COLLECTSTATIC=0\n", (f"{ENV_ROOT}/static-a", "1"), id="disable-0-collects"),
    pytest.param("", "DISABLE_COLLECTSTATIC=off\n", (f"{ENV_ROOT}/static-a", "1"), id="disable-off-collects"),
]


@pytest.mark.parametrize(("settings", "environment", "expected"), COLLECTSTATIC_CASES)
def test_django_collectstatic_gets_a_static_root_only_when_settings_lack_one(
    tmp_path: Path, settings: str, environment: str, expected: tuple[str, str]
) -> None:
    files = {**django_tree(settings), ".s2i/environment": environment}
    plan = build(detect(tmp_path, files))
    step = named(plan, "collectstatic")
    assert step.argv[0] == f"{env_of(plan)}/bin/python"
    assert step.argv[3:] == (f"{ENV_ROOT}/static.json.next", *expected)  # the switch makes it static.json
    assert step.env["DJANGO_SETTINGS_MODULE"] == "mysite.settings"
    assert step.path == (f"{env_of(plan)}/bin",)
    assert ("no STATIC_ROOT" in step.why) is bool(expected[0] and expected[1] == "1")
    assert ("DISABLE_COLLECTSTATIC" in step.why) is (expected[1] == "0")


def test_static_folder_is_recorded_and_no_static_is_removed(tmp_path: Path) -> None:
    with_static = build(detect(tmp_path / "a", {**WSGI, "static/": ""}))
    step = named(with_static, "static")
    assert step.argv[5] == f"{ENV_ROOT}/static.json.next"  # the switch makes it static.json
    assert json.loads(step.argv[4]) == {"static_url": "/static/", "static_root": f"{PROJECT}/static"}
    without = named(build(detect(tmp_path / "b", WSGI)), "static")
    assert without.argv == ("rm", "-f", f"{ENV_ROOT}/static.json.next")  # the switch then removes static.json


@pytest.mark.parametrize(("folder", "executable"), [(".warpdrive", True), (".s2i", False)])
def test_build_hooks_run_before_and_after_dependencies(tmp_path: Path, folder: str, executable: bool) -> None:
    content = Exe() if executable else "echo hi\n"
    files = {**WSGI, f"{folder}/action_hooks/pre_build": content, f"{folder}/action_hooks/build": content}
    plan = build(detect(tmp_path, files))
    names = [s.name for s in plan.steps]
    assert names[0] == "hook pre-build"
    assert names.index("hook build") == names.index("mark complete") + 1
    pre, post = named(plan, "hook pre-build"), named(plan, "hook build")
    if executable:
        assert (pre.argv, post.argv) == ((f"./{folder}/action_hooks/pre_build",), (f"./{folder}/action_hooks/build",))
    else:
        assert (pre.argv, post.argv) == (("bash", f"{folder}/action_hooks/pre_build"), ("bash", f"{folder}/action_hooks/build"))
    assert (pre.phase, post.phase) == ("deps", "app")
    assert pre.cwd == post.cwd == PROJECT
    for hook in (pre, post):
        assert hook.env["WARPDRIVE_PHASE"] == "build" and hook.env["WARPDRIVE_SRC_ROOT"] == PROJECT
        assert hook.env["WARP_ENV"] == env_of(plan)


def test_build_env_hook_is_sourced_before_install_hook_and_collectstatic_steps(tmp_path: Path) -> None:
    files = {**django_tree(), "Pipfile.lock": "{}", ".s2i/action_hooks/build_env": "export A=1\n", ".s2i/action_hooks/build": ""}
    spec = detect(tmp_path, files)
    plan = build(spec)
    wrapper = ("bash", "-c", SOURCE_THEN_EXEC, "bash", f"{PROJECT}/.s2i/action_hooks/build_env")
    wrapped = {s.name for s in plan.steps if s.argv[:5] == wrapper}
    assert wrapped == {
        "server wheel",
        "install micropipenv",
        "export lock file",
        "install lock file",
        "install server",
        "hook build",
        "collectstatic",
    }
    assert named(plan, "hook build").argv[5:] == ("bash", ".s2i/action_hooks/build")
    plain = build(detect(tmp_path / "plain", {k: v for k, v in files.items() if "build_env" not in k}))

    # The build-env hook is an input of the environment, so its key (and path) differs.
    def same_env(argv: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.replace(env_of(plain), env_of(plan)) for a in argv)

    assert env_of(plain) != env_of(plan)
    for step in plan.steps:
        if step.name in wrapped:
            assert step.argv[5:] == same_env(named(plain, step.name).argv)
        else:
            assert step.argv[:5] != wrapper


# Steps that never see the build-env hook's variables, whatever the app.
NEVER_SOURCED = {
    "clean",
    "virtualenv",
    "hook pre-build",
    "support",
    "gunicorn config",
    "mark complete",
    "static",
    "record",
    "switch",
}


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn"])
@pytest.mark.parametrize("uv", ["/opt/bin/uv", None])
@pytest.mark.parametrize("deps", [pytest.param(case.values[0], id=case.id) for case in DEPENDENCY_CASES])
def test_every_install_step_sources_build_env_and_the_environment_steps_do_not(
    tmp_path: Path, deps: dict[str, str], uv: str | None, server: str
) -> None:
    hooks = {".s2i/action_hooks/build_env": "", ".s2i/action_hooks/pre_build": "", ".s2i/action_hooks/build": ""}
    plan = build(detect(tmp_path, {"wsgi.py": "", **deps, **hooks}, server=server), facts(uv=uv))
    wrapper = ("bash", "-c", SOURCE_THEN_EXEC, "bash", f"{PROJECT}/.s2i/action_hooks/build_env")
    for step in plan.steps:
        # The field is what decides, and what warp plan shows: it and the argv agree.
        assert (step.env_hook == "build-env") is (step.argv[:5] == wrapper), step.name
        assert step.as_dict()["env_hook"] == step.env_hook
        if step.name.startswith("install"):
            assert step.env_hook == "build-env", step.name
        if step.name in NEVER_SOURCED:
            assert step.env_hook == "", step.name
    assert named(plan, "hook build").env_hook == "build-env"


def test_without_a_build_env_hook_no_step_says_it_sources_one(tmp_path: Path) -> None:
    plan = build(detect(tmp_path, {**django_tree(), "Pipfile.lock": "{}", ".s2i/action_hooks/build": ""}))
    assert all(s.env_hook == "" for s in plan.steps)
    assert all(s.argv[0] != "bash" or s.name == "hook build" for s in plan.steps)


def test_marker_and_record_say_what_was_built(tmp_path: Path) -> None:
    spec = detect(tmp_path, WSGI)
    plan = build(spec)
    key = env_key(spec, facts(), "uv", "mod_wsgi")
    marker = named(plan, "mark complete")
    assert marker.argv[5] == f"{env_of(plan)}/warp-env.json"
    assert json.loads(marker.argv[4])["key"] == key
    record = named(plan, "record")
    assert record.argv[:3] == (f"{env_of(plan)}/bin/python", "-I", "-c")
    request = json.loads(record.argv[-1])
    assert request["state_file"] == f"{ENV_ROOT}/state.json.next"  # the switch renames it over state.json
    assert request["project"] == PROJECT
    assert ".warp" in request["ignore"]
    assert request["record"] | {"warptasks": None} == {
        "env_key": key,
        "env": env_of(plan),
        "server": "mod_wsgi",
        "kind": "wsgi",
        "warptasks": None,
    }


def test_every_build_step_renders_to_a_command_line(tmp_path: Path) -> None:
    files = {**django_tree(), "poetry.lock": "", ".s2i/action_hooks/build_env": "", ".s2i/environment": "A='x y'\n"}
    for step in build(detect(tmp_path, files)).steps:
        assert command_line(step)


@pytest.mark.parametrize(
    ("files", "server", "message"),
    [
        pytest.param({"asgi.py": ASGI}, "mod_wsgi", "is an ASGI app", id="asgi-with-mod_wsgi"),
        pytest.param({"asgi.py": ASGI}, "gunicorn", "is an ASGI app", id="asgi-with-gunicorn"),
        pytest.param({"wsgi.py": ""}, "uvicorn", "uvicorn serves ASGI apps", id="wsgi-with-uvicorn"),
        pytest.param({"app.sh": ""}, "gunicorn", "starts its own server", id="app.sh-with-gunicorn"),
        pytest.param({"wsgi.py": ""}, "shell", "needs an app.sh", id="shell-without-script"),
    ],
)
def test_server_that_cannot_serve_the_app_is_refused(tmp_path: Path, files: dict[str, str], server: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(detect(tmp_path, files, server=server))


@pytest.mark.parametrize(
    ("files", "server"),
    [
        pytest.param({"wsgi.py": ""}, "mod_wsgi", id="wsgi"),
        pytest.param({"asgi.py": ASGI}, "uvicorn", id="asgi"),
        pytest.param({"app.py": "app.run()\n"}, "shell", id="app.py"),
        pytest.param({"Procfile": "web: x"}, "shell", id="procfile"),
    ],
)
def test_auto_server_fits_the_app(tmp_path: Path, files: dict[str, str], server: str) -> None:
    assert f"server: {server} (" in build(detect(tmp_path, files)).notes[1]


@pytest.mark.parametrize("project", ["/srv/my app", "/srv/a$b", "/srv/it's"])
def test_mod_wsgi_refuses_paths_apache_would_misread_but_gunicorn_takes_them(tmp_path: Path, project: str) -> None:
    with pytest.raises(ConfigError, match="mod_wsgi-express cannot serve from") as error:
        plan_build(detect(tmp_path, WSGI), facts(), BuildOptions(project=project))
    assert "--server gunicorn" in error.value.hint
    plan = plan_build(detect_app(tmp_path, server="gunicorn"), facts(), BuildOptions(project=project))
    assert named(plan, "virtualenv").cwd == project


@pytest.mark.parametrize(
    ("euid", "others_can_read", "server", "warned"),
    [
        pytest.param(0, False, None, True, id="root-private-python-mod_wsgi"),
        pytest.param(0, True, None, False, id="root-readable-python"),
        pytest.param(1000, False, None, False, id="not-root"),
        pytest.param(0, False, "gunicorn", False, id="root-gunicorn"),
    ],
)
def test_root_building_mod_wsgi_with_a_private_python_is_warned(
    tmp_path: Path, euid: int, others_can_read: bool, server: str | None, warned: bool
) -> None:
    python = {
        **PROBE_FACTS["python"],
        "executable": "/root/.pyenv/versions/3.11.7/bin/python3.11",
        "others_can_read": others_can_read,
    }
    plan = build(detect(tmp_path, WSGI, server=server), facts(euid=euid, python=python))
    warnings = [n for n in plan.notes if n.startswith("warning:")]
    assert bool(warnings) is warned
    if warned:
        assert "/root/.pyenv/versions/3.11.7/bin/python3.11" in warnings[0] and "--python /usr/bin/python3" in warnings[0]


SYSTEM_CERTS = {"UV_SYSTEM_CERTS": "1", "UV_NATIVE_TLS": "1"}


@pytest.mark.parametrize(
    ("files", "step_names"),
    [
        pytest.param(WSGI, ("virtualenv", "install requirements", "install server"), id="requirements"),
        pytest.param({"wsgi.py": "", "uv.lock": "", "pyproject.toml": ""}, ("virtualenv", "install uv.lock"), id="uv-lock"),
    ],
)
def test_every_uv_run_trusts_the_system_store_seed_install_included(
    tmp_path: Path, files: dict[str, str], step_names: tuple[str, ...]
) -> None:
    plan = build(detect(tmp_path, files), facts(uv="/opt/bin/uv"), installer="uv")
    for name in step_names:
        step = named(plan, name)
        assert {k: step.env.get(k) for k in SYSTEM_CERTS} == SYSTEM_CERTS, name


def test_uv_installed_by_pip_for_uv_lock_trusts_the_system_store_too(tmp_path: Path) -> None:
    plan = build(detect(tmp_path, {"wsgi.py": "", "uv.lock": "", "pyproject.toml": ""}), facts(uv=None))
    assert named(plan, "install uv.lock").env["UV_SYSTEM_CERTS"] == "1"
    assert named(plan, "virtualenv").env == {}  # venv makes the environment: no uv


def test_the_environment_file_decides_uv_certificates_when_it_names_them(tmp_path: Path) -> None:
    spec = detect(tmp_path, {**WSGI, ".s2i/environment": "UV_NATIVE_TLS=0\n"})
    plan = build(spec, facts(uv="/opt/bin/uv"), installer="uv")
    for name in ("virtualenv", "install requirements"):
        assert named(plan, name).env.get("UV_NATIVE_TLS") == "0"
        assert "UV_SYSTEM_CERTS" not in named(plan, name).env


def test_a_ca_bundle_given_to_the_installs_stays_beside_the_system_store(tmp_path: Path) -> None:
    plan = build(detect(tmp_path, WSGI), facts(uv="/opt/bin/uv"), installer="uv", install_env={"SSL_CERT_FILE": "/ca.pem"})
    step = named(plan, "install requirements")
    assert step.env["SSL_CERT_FILE"] == "/ca.pem" and step.env["UV_SYSTEM_CERTS"] == "1"


def test_a_target_without_a_system_ca_bundle_keeps_uvs_own_roots(tmp_path: Path) -> None:
    # uv told to use an empty system store trusts nothing: "No CA certificates were loaded from the system".
    plan = build(detect(tmp_path, WSGI), facts(uv="/opt/bin/uv", system_ca=False), installer="uv")
    for name in ("virtualenv", "install requirements"):
        assert not set(SYSTEM_CERTS) & set(named(plan, name).env)
    plan = build(detect(tmp_path, WSGI), facts(uv="/opt/bin/uv", system_ca=True), installer="uv")
    assert named(plan, "virtualenv").env == SYSTEM_CERTS


def _over_a_last_good_build(tmp_path: Path, name: str, content: dict[str, str]) -> tuple[Path, Path, Path, Plan]:
    """A gunicorn build planned over a last good mod_wsgi one (``current`` -> envs/old), whose ``.warp/<name>`` holds
    ``content``: (project, .warp, the old environment, the plan)."""
    project = tmp_path / "app"
    spec = detect_app(write_tree(project, WSGI), server="gunicorn")
    root = project / ".warp"
    old = root / "envs" / "old"
    old.mkdir(parents=True)
    (root / "current").symlink_to(old)
    (root / name).write_text(json.dumps(content))
    state = BuildState(env_key="old", env=str(old), server="mod_wsgi", kind="wsgi", source="tree-1")
    target = replace(facts(), complete_envs=("old",), state=state, current=str(old), source_digest="tree-1")
    return project, root, old, plan_build(spec, target, BuildOptions(project=str(project)))


def test_a_build_stopped_between_record_and_switch_leaves_state_describing_the_current_environment(
    tmp_path: Path,
) -> None:
    """Ctrl-C (or a dropped connection) after 'record', before 'switch': current still names the last good environment,
    and state.json, which start plans from (its server), must still describe it, not the build that never switched."""
    env = str(tmp_path / "app" / ".warp" / "envs" / "old")
    before = {"env_key": "old", "env": env, "server": "mod_wsgi", "kind": "wsgi", "source": "tree-1"}
    project, root, old, plan = _over_a_last_good_build(tmp_path, "state.json", before)

    def run(step: Step) -> None:
        subprocess.run([sys.executable, *step.argv[1:]], cwd=project, check=True)  # this Python for the env's

    run(named(plan, "record"))  # ... and stopped here
    assert os.readlink(root / "current") == str(old)
    assert json.loads((root / "state.json").read_text()) == before
    run(named(plan, "switch"))
    assert os.readlink(root / "current") == env_of(plan)
    recorded = json.loads((root / "state.json").read_text())
    assert (recorded["env"], recorded["server"]) == (env_of(plan), "gunicorn")
    assert not (root / "state.json.next").exists()


def test_a_build_stopped_before_switch_leaves_static_json_of_the_current_environment(tmp_path: Path) -> None:
    before = {"static_url": "/static/", "static_root": str(tmp_path / "app" / "static")}
    project, root, old, plan = _over_a_last_good_build(tmp_path, "static.json", before)
    static = named(plan, "static")
    subprocess.run(static.argv, cwd=project, check=True)  # ... and stopped here, before 'switch'
    assert json.loads((root / "static.json").read_text()) == before
    (root / "state.json.next").write_text("{}")  # what 'record' writes
    subprocess.run([sys.executable, *named(plan, "switch").argv[1:]], cwd=project, check=True)
    assert not (root / "static.json").exists()  # this build has no static files: the switch removes the old settings
    assert not (root / "static.json.next").exists()


@pytest.mark.parametrize(
    ("live", "slot"),
    [("", "static-a"), ("static-a/", "static-b"), ("static-b", "static-a"), ("/srv/static", "static-a")],
)
def test_collectstatic_fills_the_folder_the_live_static_json_does_not_name(tmp_path: Path, live: str, slot: str) -> None:
    """A failed or stopped build leaves the files served as they were: it collects into the other folder."""
    served = StaticFiles(url="/static/", root=posixpath.join(ENV_ROOT, live)) if live else None
    plan = build(detect(tmp_path, django_tree("STATIC_URL = '/static/'\n")), replace(facts(), static=served))
    assert named(plan, "collectstatic").argv[4] == f"{ENV_ROOT}/{slot}"
