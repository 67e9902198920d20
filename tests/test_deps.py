"""Which files decide an app's dependencies, and which Python it asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cases import write_tree
from warptasks.detect.deps import detect_dependencies, detect_python, requirement_includes
from warptasks.errors import ConfigError

BUILD_SYSTEM = '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n[project]\nname = "x"\n'
NO_BUILD_SYSTEM = '[project]\nname = "x"\nversion = "1"\ndependencies = ["flask>=3", "requests"]\n'
EVERY_LOCK = {"uv.lock": "", "poetry.lock": "", "Pipfile.lock": "{}", "requirements.txt": "", "pyproject.toml": NO_BUILD_SYSTEM}

# tree, environment -> expected Dependencies fields
KIND_CASES = [
    pytest.param(
        EVERY_LOCK, {}, {"kind": "uv.lock", "files": ("uv.lock", "pyproject.toml"), "install_project": False}, id="uv.lock-first"
    ),
    pytest.param(
        {**EVERY_LOCK, "uv.lock": None},
        {},
        {"kind": "poetry.lock", "files": ("poetry.lock", "pyproject.toml")},
        id="poetry.lock-second",
    ),
    pytest.param({"poetry.lock": ""}, {}, {"kind": "poetry.lock", "files": ("poetry.lock",)}, id="poetry.lock-alone"),
    pytest.param(
        {"Pipfile.lock": "{}", "requirements.txt": "", "setup.py": ""},
        {},
        {"kind": "Pipfile.lock", "files": ("Pipfile.lock",)},
        id="Pipfile.lock-beats-requirements",
    ),
    pytest.param(
        {"requirements.txt": "flask\n", "pyproject.toml": BUILD_SYSTEM},
        {},
        # The S2I builder installs such a project (pip install .) after requirements.txt: so does warptasks.
        {"kind": "requirements.txt", "files": ("requirements.txt", "pyproject.toml"), "install_project": True},
        id="requirements-beats-pyproject-then-the-project",
    ),
    pytest.param(
        {"pyproject.toml": BUILD_SYSTEM},
        {},
        {"kind": "pyproject.toml", "files": ("pyproject.toml",), "install_project": True, "packages": ()},
        id="pyproject-with-build-system-installs-the-project",
    ),
    pytest.param(
        {"pyproject.toml": NO_BUILD_SYSTEM},
        {},
        {"kind": "pyproject.toml", "install_project": False, "packages": ("flask>=3", "requests")},
        id="pyproject-without-build-system-installs-its-dependencies",
    ),
    pytest.param(
        {"pyproject.toml": "[tool.black]\nline-length = 100\n"},
        {},
        {"kind": "pyproject.toml", "install_project": False, "packages": ()},
        id="pyproject-tool-config-only",
    ),
    pytest.param(
        {"pyproject.toml": NO_BUILD_SYSTEM, "setup.py": ""},
        {},
        {"kind": "pyproject.toml", "install_project": True},
        id="pyproject-with-setup.py-installs-the-project",
    ),
    pytest.param(
        {"pyproject.toml": NO_BUILD_SYSTEM, "setup.py": ""},
        {"DISABLE_SETUP_PY_PROCESSING": "1"},
        {"kind": "pyproject.toml", "install_project": False, "packages": ("flask>=3", "requests")},
        id="pyproject-with-setup.py-processing-disabled",
    ),
    pytest.param({"setup.py": ""}, {}, {"kind": "setup.py", "files": ("setup.py",), "install_project": True}, id="setup.py"),
    pytest.param(
        {"setup.cfg": "", "setup.py": ""}, {}, {"kind": "setup.py", "files": ("setup.py", "setup.cfg")}, id="setup.cfg-too"
    ),
    pytest.param(
        {"setup.py": ""}, {"DISABLE_SETUP_PY_PROCESSING": "true"}, {"kind": "none", "files": ()}, id="setup.py-disabled"
    ),
    pytest.param({"setup.py": ""}, {"DISABLE_SETUP_PY_PROCESSING": "false"}, {"kind": "setup.py"}, id="setup.py-disable-false"),
    pytest.param({"setup.py": ""}, {"DISABLE_SETUP_PY_PROCESSING": "0"}, {"kind": "setup.py"}, id="setup.py-disable-0"),
    pytest.param(
        {"requirements.txt": "", "setup.py": ""},
        {},
        {"kind": "requirements.txt", "files": ("requirements.txt", "setup.py"), "install_project": True},
        id="requirements-then-setup.py",
    ),
    pytest.param(
        {"requirements.txt": "", "setup.py": ""},
        {"DISABLE_SETUP_PY_PROCESSING": "yes"},
        {"kind": "requirements.txt", "files": ("requirements.txt",), "install_project": False},
        id="requirements-setup.py-disabled",
    ),
    pytest.param({"README.md": ""}, {}, {"kind": "none", "files": (), "install_project": False}, id="nothing"),
]


@pytest.mark.parametrize(("files", "environment", "expected"), KIND_CASES)
def test_dependency_source_is_the_most_exact_one(
    tmp_path: Path, files: dict[str, str | None], environment: dict[str, str], expected: dict[str, Any]
) -> None:
    write_tree(tmp_path, {k: v for k, v in files.items() if v is not None})
    found = detect_dependencies(tmp_path, environment)
    assert {name: getattr(found, name) for name in expected} == expected
    assert found.why
    assert len(found.digest) == 64


def test_invalid_pyproject_is_a_config_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pyproject.toml": "[project\nname = 'x'\n"})
    with pytest.raises(ConfigError, match="pyproject.toml is not valid TOML"):
        detect_dependencies(tmp_path)


# requirement files -> every file read, in reading order
INCLUDE_CASES = [
    pytest.param({"requirements.txt": "flask\n"}, ("requirements.txt",), id="no-includes"),
    pytest.param(
        {"requirements.txt": "-r base.txt\n-c constraints.txt\nflask\n", "base.txt": "", "constraints.txt": ""},
        ("requirements.txt", "base.txt", "constraints.txt"),
        id="-r-and-c",
    ),
    pytest.param(
        {"requirements.txt": "--requirement=base.txt\n--constraint  pins.txt  # pinned\n", "base.txt": "", "pins.txt": ""},
        ("requirements.txt", "base.txt", "pins.txt"),
        id="long-options",
    ),
    pytest.param(
        {"requirements.txt": "-rbase.txt\n-cpins.txt\n", "base.txt": "", "pins.txt": ""},
        ("requirements.txt", "base.txt", "pins.txt"),
        id="short-options-glued-to-the-file",
    ),
    pytest.param(
        {
            "requirements.txt": "-r reqs/prod.txt\n",
            "reqs/prod.txt": "-r base.txt\n-r ../common.txt\n",
            "reqs/base.txt": "-c ./pins/p.txt\n",
            "reqs/pins/p.txt": "",
            "common.txt": "",
        },
        ("requirements.txt", "reqs/prod.txt", "reqs/base.txt", "reqs/pins/p.txt", "common.txt"),
        id="nested-relative-to-the-including-file",
    ),
    pytest.param(
        {"requirements.txt": "-r a.txt\n", "a.txt": "-r b.txt\n", "b.txt": "-r a.txt\n-r requirements.txt\n"},
        ("requirements.txt", "a.txt", "b.txt"),
        id="cycle",
    ),
    pytest.param({"requirements.txt": "-r requirements.txt\n"}, ("requirements.txt",), id="includes-itself"),
    pytest.param(
        {"requirements.txt": "-r a.txt\n-r b.txt\n", "a.txt": "-r c.txt\n", "b.txt": "-r c.txt\n", "c.txt": ""},
        ("requirements.txt", "a.txt", "c.txt", "b.txt"),
        id="diamond-read-once",
    ),
    pytest.param(
        {"requirements.txt": "# -r commented.txt\nflask  # -r not-an-include.txt\n"},
        ("requirements.txt",),
        id="comments-are-not-includes",
    ),
]


@pytest.mark.parametrize(("files", "expected"), INCLUDE_CASES)
def test_requirement_includes_are_followed(tmp_path: Path, files: dict[str, str], expected: tuple[str, ...]) -> None:
    write_tree(tmp_path, files)
    assert requirement_includes(tmp_path, "requirements.txt") == expected
    assert detect_dependencies(tmp_path).files == expected


@pytest.mark.parametrize(
    ("files", "missing", "parent"),
    [
        pytest.param({"requirements.txt": "-r base.txt\n"}, "base.txt", "requirements.txt", id="direct"),
        pytest.param(
            {"requirements.txt": "-r reqs/prod.txt\n", "reqs/prod.txt": "-c pins.txt\n"},
            "reqs/pins.txt",
            "reqs/prod.txt",
            id="nested",
        ),
    ],
)
def test_missing_include_names_the_including_file(tmp_path: Path, files: dict[str, str], missing: str, parent: str) -> None:
    write_tree(tmp_path, files)
    with pytest.raises(ConfigError) as error:
        detect_dependencies(tmp_path)
    assert repr(missing) in error.value.message
    assert f"included from {parent}" in error.value.message


def test_digest_changes_when_an_included_file_changes(tmp_path: Path) -> None:
    write_tree(tmp_path, {"requirements.txt": "-r reqs/base.txt\n", "reqs/base.txt": "flask==3.0\n", "notes.txt": "a"})
    before = detect_dependencies(tmp_path).digest
    assert detect_dependencies(tmp_path).digest == before
    (tmp_path / "notes.txt").write_text("unrelated change", encoding="utf-8")
    assert detect_dependencies(tmp_path).digest == before
    (tmp_path / "reqs/base.txt").write_text("flask==3.1\n", encoding="utf-8")
    assert detect_dependencies(tmp_path).digest != before


def test_digest_changes_when_setup_py_changes(tmp_path: Path) -> None:
    write_tree(tmp_path, {"requirements.txt": "flask\n", "setup.py": "# v1\n"})
    before = detect_dependencies(tmp_path).digest
    (tmp_path / "setup.py").write_text("# v2\n", encoding="utf-8")
    assert detect_dependencies(tmp_path).digest != before


def test_digest_of_a_uv_project_covers_pyproject(tmp_path: Path) -> None:
    write_tree(tmp_path, {"uv.lock": "lock", "pyproject.toml": NO_BUILD_SYSTEM})
    before = detect_dependencies(tmp_path).digest
    (tmp_path / "pyproject.toml").write_text(NO_BUILD_SYSTEM + "# edited\n", encoding="utf-8")
    assert detect_dependencies(tmp_path).digest != before


# files -> (version, phrase of why)
PYTHON_CASES = [
    pytest.param({".python-version": "3.12\n"}, ("3.12", ".python-version asks for 3.12"), id="python-version"),
    pytest.param({".python-version": "3.12.1\n"}, ("3.12", "3.12.1"), id="python-version-patch"),
    pytest.param({".python-version": "# pinned\n\n  3.10.4  \n3.9\n"}, ("3.10", "3.10.4"), id="python-version-first-real-line"),
    pytest.param({".python-version": "cpython-3.11.2\n"}, ("3.11", "cpython-3.11.2"), id="python-version-cpython"),
    pytest.param({"runtime.txt": "python-3.11.4\n"}, ("3.11", "runtime.txt asks for python-3.11.4"), id="runtime.txt"),
    pytest.param({"runtime.txt": "3.13\n"}, ("3.13", "runtime.txt"), id="runtime.txt-bare"),
    pytest.param(
        {".python-version": "3.12\n", "runtime.txt": "python-3.9.1\n"},
        ("3.12", ".python-version"),
        id="python-version-beats-runtime.txt",
    ),
    pytest.param(
        {".python-version": "# nothing\n", "runtime.txt": "python-3.9.1\n"},
        ("3.9", "runtime.txt"),
        id="comment-only-python-version-falls-through",
    ),
    pytest.param({}, (None, "no .python-version or runtime.txt"), id="none"),
]


@pytest.mark.parametrize(("files", "expected"), PYTHON_CASES)
def test_python_version_is_read(tmp_path: Path, files: dict[str, str], expected: tuple[str | None, str]) -> None:
    request = detect_python(write_tree(tmp_path, files))
    assert request.version == expected[0]
    assert expected[1] in request.why


@pytest.mark.parametrize(
    ("files", "source"),
    [
        pytest.param({".python-version": "system\n"}, ".python-version", id="system"),
        pytest.param({".python-version": "pypy3.9\n"}, ".python-version", id="pypy"),
        pytest.param({".python-version": "3\n"}, ".python-version", id="major-only"),
        pytest.param({"runtime.txt": "python-latest\n"}, "runtime.txt", id="runtime-latest"),
        pytest.param({"runtime.txt": ""}, "runtime.txt", id="runtime-empty"),
    ],
)
def test_bad_python_version_is_a_config_error(tmp_path: Path, files: dict[str, str], source: str) -> None:
    with pytest.raises(ConfigError, match="not a Python version") as error:
        detect_python(write_tree(tmp_path, files))
    assert error.value.message.startswith(source)
    assert "3.12" in error.value.hint


@pytest.mark.parametrize("setup_file", ["setup.py", "setup.cfg"])
def test_digest_of_an_installed_pyproject_covers_setuptools_files(tmp_path: Path, setup_file: str) -> None:
    write_tree(tmp_path, {"pyproject.toml": BUILD_SYSTEM, setup_file: "# v1\n"})
    found = detect_dependencies(tmp_path)
    assert found.files == ("pyproject.toml", setup_file)
    (tmp_path / setup_file).write_text("# v2\n", encoding="utf-8")
    assert detect_dependencies(tmp_path).digest != found.digest
