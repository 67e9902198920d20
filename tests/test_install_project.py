"""The project itself, when it is a package: detected as the S2I builder decides, installed after its code.

Pure tables: a tree in, the Dependencies fields, the build steps and the image's layout out. The real installs and
servers are in tests/integration/test_project_install.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.cases import facts, write_tree
from warptasks.detect import AppSpec, detect_app
from warptasks.detect.deps import detect_dependencies
from warptasks.facts import BuildState, Facts
from warptasks.image import dockerfile as img
from warptasks.plan import Plan, Step
from warptasks.plan.build import BuildOptions, env_key, plan_build

PROJECT = "/srv/app"
SETUPTOOLS = '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
PACKAGE = '[project]\nname = "pkg"\nversion = "1"\ndependencies = ["six", "idna"]\n' + SETUPTOOLS
NOT_A_PACKAGE = '[project]\nname = "pkg"\nversion = "1"\ndependencies = ["six"]\n'
POETRY = (
    '[tool.poetry]\nname = "pkg"\nversion = "1"\n'
    '[build-system]\nrequires = ["poetry-core"]\nbuild-backend = "poetry.core.masonry.api"\n'
)
SRC = {"src/pkg/__init__.py": "application = None\n", ".s2i/environment": "APP_MODULE=pkg:application\n"}

# tree, environment -> (install_project, project_deps, files)
DETECT_CASES = [
    pytest.param(
        {"poetry.lock": "", "pyproject.toml": POETRY}, {}, (True, False, ("poetry.lock", "pyproject.toml")), id="poetry"
    ),
    pytest.param({"uv.lock": "", "pyproject.toml": PACKAGE}, {}, (True, False, ("uv.lock", "pyproject.toml")), id="uv"),
    pytest.param({"Pipfile.lock": "{}", "setup.py": ""}, {}, (True, False, ("Pipfile.lock",)), id="pipfile-setup.py"),
    pytest.param({"Pipfile.lock": "{}", "pyproject.toml": PACKAGE}, {}, (True, False, ("Pipfile.lock",)), id="pipfile-pyproject"),
    pytest.param(
        {"uv.lock": "", "pyproject.toml": NOT_A_PACKAGE}, {}, (False, True, ("uv.lock", "pyproject.toml")), id="uv-virtual"
    ),
    pytest.param(
        {"poetry.lock": "", "pyproject.toml": "[tool.poetry]\n"},
        {},
        (False, True, ("poetry.lock", "pyproject.toml")),
        id="poetry-app",
    ),
    pytest.param(
        {"poetry.lock": "", "pyproject.toml": POETRY},
        {"DISABLE_PYPROJECT_TOML_PROCESSING": "1"},
        (False, True, ("poetry.lock", "pyproject.toml")),
        id="poetry-pyproject-processing-disabled",
    ),
    pytest.param(
        {"requirements.txt": "six\n", "setup.py": ""},
        {},
        (True, True, ("requirements.txt", "setup.py")),
        id="requirements-setup.py-with-its-deps",
    ),
    pytest.param(
        {"requirements.txt": "six\n", "pyproject.toml": PACKAGE},
        {},
        (True, True, ("requirements.txt", "pyproject.toml")),
        id="requirements-pyproject-package",
    ),
    pytest.param(
        {"requirements.txt": "six\n", "setup.py": "", "pyproject.toml": PACKAGE},
        {"DISABLE_SETUP_PY_PROCESSING": "1"},
        (True, True, ("requirements.txt", "pyproject.toml", "setup.py")),
        id="setup.py-disabled-but-pyproject-package",
    ),
    pytest.param({"pyproject.toml": PACKAGE}, {}, (True, True, ("pyproject.toml",)), id="pyproject-package"),
    pytest.param({"setup.cfg": ""}, {}, (True, True, ("setup.cfg",)), id="setup.cfg"),
    pytest.param({"requirements.txt": "six\n"}, {}, (False, True, ("requirements.txt",)), id="requirements-alone"),
]


@pytest.mark.parametrize(("files", "environment", "expected"), DETECT_CASES)
def test_the_project_is_a_package_as_s2i_decides(
    tmp_path: Path, files: dict[str, str], environment: dict[str, str], expected: tuple[bool, bool, tuple[str, ...]]
) -> None:
    found = detect_dependencies(write_tree(tmp_path, files), environment)
    assert (found.install_project, found.project_deps, found.files) == expected
    assert bool(found.project_why) == found.install_project


def test_a_lock_keeps_the_project_out_of_its_packages(tmp_path: Path) -> None:
    """The project's own [project].dependencies are the lock's business: nothing is installed beside the lock."""
    found = detect_dependencies(write_tree(tmp_path, {"uv.lock": "", "pyproject.toml": PACKAGE}))
    assert found.packages == ()
    assert "without its dependencies" in found.project_why


# tree -> warning expected
WARNING_CASES = [
    pytest.param({**SRC, "pyproject.toml": NOT_A_PACKAGE}, "pyproject.toml has no [build-system]", id="no-build-system"),
    pytest.param(
        {
            **SRC,
            "pyproject.toml": PACKAGE,
            ".s2i/environment": "APP_MODULE=pkg:application\nDISABLE_PYPROJECT_TOML_PROCESSING=1\n",
        },
        "DISABLE_PYPROJECT_TOML_PROCESSING",
        id="processing-disabled",
    ),
    pytest.param({**SRC, "pyproject.toml": PACKAGE}, None, id="package"),
    pytest.param({**SRC, "pyproject.toml": NOT_A_PACKAGE, "setup.py": ""}, None, id="setup.py"),
    pytest.param(
        {**SRC, "pyproject.toml": NOT_A_PACKAGE, ".s2i/environment": "APP_MODULE=pkg:application\nPYTHONPATH=src\n"},
        None,
        id="pythonpath-set",
    ),
    pytest.param(
        {**SRC, "pyproject.toml": NOT_A_PACKAGE, ".s2i/environment": "APP_MODULE=src.pkg:application\n"},
        None,
        id="module-named-from-the-root",
    ),
    pytest.param(
        {"src/README.md": "", "wsgi.py": "application = None\n", "pyproject.toml": NOT_A_PACKAGE},
        None,
        id="src-without-python",
    ),
    pytest.param({"wsgi.py": "application = None\n", "pyproject.toml": NOT_A_PACKAGE}, None, id="no-src"),
]


@pytest.mark.parametrize(("files", "expected"), WARNING_CASES)
def test_a_src_layout_nothing_installs_is_warned_of(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    spec = detect_app(write_tree(tmp_path, files))
    notes = plan_build(spec, facts(), BuildOptions(project=PROJECT)).notes
    warnings = [n for n in notes if n.startswith("warning: src/ layout")]
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0], notes
        assert "[build-system]" in warnings[0] and "PYTHONPATH=src" in warnings[0]


def _plan(tmp_path: Path, files: dict[str, str], target: Facts | None = None, **options: Any) -> tuple[AppSpec, Plan]:
    spec = detect_app(write_tree(tmp_path, {**SRC, **files}))
    return spec, plan_build(spec, target or facts(), BuildOptions(project=PROJECT, **options))


def _step(plan: Plan, name: str) -> Step:
    found = [s for s in plan.steps if s.name == name]
    assert len(found) == 1, [s.name for s in plan.steps]
    return found[0]


# tree, installer -> the install arguments after the install command (the prefix is the installer's)
INSTALL_CASES = [
    pytest.param({"poetry.lock": "", "pyproject.toml": POETRY}, "uv", ("--no-deps", "--reinstall", "."), id="poetry-uv"),
    pytest.param({"poetry.lock": "", "pyproject.toml": POETRY}, "pip", ("--no-deps", "--force-reinstall", "."), id="poetry-pip"),
    pytest.param({"uv.lock": "", "pyproject.toml": PACKAGE}, "uv", ("--no-deps", "--reinstall", "."), id="uv.lock"),
    pytest.param({"Pipfile.lock": "{}", "setup.py": ""}, "pip", ("--no-deps", "--force-reinstall", "."), id="Pipfile.lock"),
    pytest.param({"requirements.txt": "six\n", "setup.py": ""}, "uv", (".",), id="requirements-setup.py"),
    pytest.param({"pyproject.toml": PACKAGE}, "pip", (".",), id="pyproject-package"),
]


@pytest.mark.parametrize(("files", "installer", "args"), INSTALL_CASES)
def test_the_project_is_installed_after_its_code_not_editable(
    tmp_path: Path, files: dict[str, str], installer: str, args: tuple[str, ...]
) -> None:
    _, plan = _plan(tmp_path, files, installer=installer)
    step = _step(plan, "install project")
    assert step.argv[-len(args) :] == args
    assert "-e" not in step.argv and "--editable" not in step.argv
    assert step.phase == "app" and step.cwd == PROJECT and not step.skip
    names = [s.name for s in plan.steps]
    # After every dependency and the environment's completion, before the build hook, static files and the record.
    assert names.index("install project") == names.index("mark complete") + 1
    assert names.index("install project") < names.index("record")


def test_uv_sync_leaves_the_project_to_the_app_phase(tmp_path: Path) -> None:
    """uv sync would install the project (editable) from the dependency phase, which sees the lock files alone."""
    _, plan = _plan(tmp_path, {"uv.lock": "", "pyproject.toml": PACKAGE})
    sync = _step(plan, "install uv.lock")
    assert "--no-install-project" in sync.argv and sync.phase == "deps"


def test_no_project_step_for_an_app_that_is_not_a_package(tmp_path: Path) -> None:
    _, plan = _plan(tmp_path, {"uv.lock": "", "pyproject.toml": NOT_A_PACKAGE})
    assert "install project" not in [s.name for s in plan.steps]


def _built(spec: AppSpec, source: str, twin: bool = False) -> Facts:
    """Facts after a build of ``source`` (live in ``KEY``); ``twin``: ``KEY-rebuild`` is complete too (an earlier build)."""
    target = facts()
    key = env_key(spec, target, "uv", "mod_wsgi")
    env = f"{PROJECT}/.warp/envs/{key}"
    state = BuildState(env_key=key, env=env, server="mod_wsgi", kind=spec.kind, source=source)
    complete = (key, key + "-rebuild") if twin else (key,)
    return replace(target, complete_envs=complete, state=state, current=env, source_digest="tree-1")


@pytest.mark.parametrize("twin", [False, True], ids=["first-change", "twin-complete"])
def test_a_code_change_installs_the_project_beside_the_live_environment(tmp_path: Path, twin: bool) -> None:
    """The trap of a non-editable install: the same lock names the same environment, but installing the new code into
    the live one would change what it serves before the build succeeds. It goes to the other of the key's two folders
    (as a forced rebuild does): the first time built there in full, then only the project is installed again."""
    spec, _ = _plan(tmp_path, {"poetry.lock": "", "pyproject.toml": POETRY})
    built = _built(spec, source="tree-0", twin=twin)
    plan = plan_build(spec, built, BuildOptions(project=PROJECT))
    assert _step(plan, "install project").env["VIRTUAL_ENV"] == built.current + "-rebuild"
    assert not _step(plan, "install project").skip
    assert bool(_step(plan, "install lock file").skip) == twin  # the twin has the same dependencies


def test_the_next_code_change_goes_back_to_the_first_folder(tmp_path: Path) -> None:
    spec, _ = _plan(tmp_path, {"poetry.lock": "", "pyproject.toml": POETRY})
    built = _built(spec, source="tree-0", twin=True)
    built = replace(built, current=built.current + "-rebuild", state=replace(built.state, env=built.current + "-rebuild"))
    plan = plan_build(spec, built, BuildOptions(project=PROJECT))
    assert _step(plan, "install project").env["VIRTUAL_ENV"] == built.current.removesuffix("-rebuild")


def test_a_project_that_is_not_installed_reuses_the_live_environment_on_a_code_change(tmp_path: Path) -> None:
    spec, _ = _plan(tmp_path, {"requirements.txt": "six\n", "wsgi.py": "application = 1\n"})
    built = _built(spec, source="tree-0", twin=True)
    plan = plan_build(spec, built, BuildOptions(project=PROJECT))
    assert plan.notes and any(built.current in note and "-rebuild" not in note for note in plan.notes if "environment:" in note)


def test_a_no_op_build_skips_the_project_too(tmp_path: Path) -> None:
    spec, _ = _plan(tmp_path, {"poetry.lock": "", "pyproject.toml": POETRY})
    plan = plan_build(spec, _built(spec, source="tree-1"), BuildOptions(project=PROJECT))
    assert _step(plan, "install project").skip


def test_the_environment_key_ignores_the_code(tmp_path: Path) -> None:
    """Code is the app phase's business: a code change never costs a new environment (nor an image's dependency layer)."""
    spec, _ = _plan(tmp_path, {"poetry.lock": "", "pyproject.toml": POETRY})
    (tmp_path / "src/pkg/__init__.py").write_text("application = 1\n")
    again = detect_app(tmp_path)
    assert env_key(again, facts(), "uv", "mod_wsgi") == env_key(spec, facts(), "uv", "mod_wsgi")


# tree -> (files the image's dependency layer gets, the stage the runtime copies the environment from)
IMAGE_CASES = [
    pytest.param(
        {"poetry.lock": "", "pyproject.toml": POETRY},
        ([".s2i/environment", "poetry.lock", "pyproject.toml"], "build"),
        id="poetry",
    ),
    pytest.param(
        {"uv.lock": "", "pyproject.toml": PACKAGE}, ([".s2i/environment", "pyproject.toml", "uv.lock"], "build"), id="uv"
    ),
    pytest.param(
        {"uv.lock": "", "pyproject.toml": NOT_A_PACKAGE},
        ([".s2i/environment", "pyproject.toml", "uv.lock"], "deps"),
        id="uv-virtual",
    ),
]


@pytest.mark.parametrize(("files", "expected"), IMAGE_CASES)
def test_the_image_dependency_layer_sees_the_lock_files_alone(
    tmp_path: Path, files: dict[str, str], expected: tuple[list[str], str]
) -> None:
    spec, _ = _plan(tmp_path, files)
    first, rest = img.split_context(spec, img.context_files(tmp_path))
    assert (first, img.env_stage(spec)) == expected
    assert "src/pkg/__init__.py" in rest


@pytest.mark.parametrize("stage", ["build", "deps"])
def test_the_runtime_takes_the_environment_from_the_stage_that_finished_it(stage: str) -> None:
    build = img.ImageBuild("python:3.11-slim", (), "/usr/local/bin/python3.11", "w.whl", {}, env_stage=stage)
    dockerfile = img.app_dockerfile(build)
    assert f"COPY --from={stage} --chown={img.USER_ID}:0 {img.ENVS}/ {img.ENVS}/" in dockerfile
    # The dependency phase still runs on the dependency files alone, before the code.
    assert dockerfile.index("deps.sh") < dockerfile.index("COPY --chown=1001:0 src/")


def _env(tmp_path: Path, files: dict[str, str], project: str, envs_dir: str = "") -> str:
    spec = detect_app(write_tree(tmp_path, {**SRC, **files}))
    plan = plan_build(spec, facts(), BuildOptions(project=project, envs_dir=envs_dir))
    return _step(plan, "virtualenv").argv[-1]


# (files, envs_dir) -> whether two trees with the same dependencies get one environment
SHARED_CASES = [
    pytest.param({"poetry.lock": "", "pyproject.toml": POETRY}, "/srv/shared/envs", False, id="package-shared-envs"),
    pytest.param({"poetry.lock": "", "pyproject.toml": POETRY}, "", True, id="package-envs-in-each-tree"),
    pytest.param({"poetry.lock": "", "pyproject.toml": "[tool.poetry]\n"}, "/srv/shared/envs", True, id="app-shared-envs"),
    pytest.param({"requirements.txt": "six\n", "setup.py": ""}, "../../shared/envs", False, id="setup.py-relative-shared"),
]


@pytest.mark.parametrize(("files", "envs_dir", "shared"), SHARED_CASES)
def test_an_environment_holding_the_project_is_never_shared_between_trees(
    tmp_path: Path, files: dict[str, str], envs_dir: str, shared: bool
) -> None:
    """Releases on a host share shared/envs: each must keep its own installed project, for its rollback."""
    one = _env(tmp_path / "a", files, "/srv/site/releases/1", envs_dir)
    two = _env(tmp_path / "b", files, "/srv/site/releases/2", envs_dir)
    assert (one.rsplit("/", 1)[1] == two.rsplit("/", 1)[1]) is shared
    # Built again from the same tree (code changed or not), the same one: it is reused, the project reinstalled.
    assert _env(tmp_path / "c", files, "/srv/site/releases/1", envs_dir) == one


def test_dependencies_that_name_paths_in_the_tree_are_left_to_the_project_install(tmp_path: Path) -> None:
    """PDM writes ``lib @ file:///${PROJECT_ROOT}/lib``: only the build backend expands it, after the code is there."""
    pyproject = '[project]\nname = "pkg"\nversion = "1"\ndependencies = ["six", "lib @ file:///${PROJECT_ROOT}/lib"]\n'
    found = detect_dependencies(write_tree(tmp_path, {"pyproject.toml": pyproject + SETUPTOOLS}))
    assert (found.packages, found.install_project, found.project_deps) == ((), True, True)
    plain = detect_dependencies(write_tree(tmp_path / "plain", {"pyproject.toml": PACKAGE}))
    assert plain.packages == ("six", "idna")
