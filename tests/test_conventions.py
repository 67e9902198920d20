"""warpdrive and S2I conventions: environment files, action hooks, one-value setting files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cases import Exe, write_tree
from warptasks.detect.conventions import HOOKS, find_hooks, parse_environment, read_environment, read_setting_files
from warptasks.errors import ConfigError

# environment file text -> parsed values
ENVIRONMENT_CASES = [
    pytest.param("A=1\n", {"A": "1"}, id="plain"),
    pytest.param("export A=1\nexport  B=2\n", {"A": "1", "B": "2"}, id="export"),
    pytest.param("A=\"x y\"\nB='single $q'\n", {"A": "x y", "B": "single $q"}, id="quotes-removed"),
    pytest.param('A="unbalanced\nB=\'x"\n', {"A": '"unbalanced', "B": "'x\""}, id="unbalanced-quotes-kept"),
    pytest.param("# a comment\n\n   \n  B = 2  \n#C=3\n", {"B": "2"}, id="comments-blanks-spaces"),
    pytest.param("URL=postgres://u:p@h/db?x=1\n", {"URL": "postgres://u:p@h/db?x=1"}, id="equals-in-value"),
    pytest.param('EMPTY=\nQUOTED=""\n', {"EMPTY": "", "QUOTED": ""}, id="empty-values"),
    pytest.param("A=$HOME/x\nB=`id`\n", {"A": "$HOME/x", "B": "`id`"}, id="no-expansion"),
    pytest.param("A=1\nA=2\n", {"A": "2"}, id="later-line-wins"),
    pytest.param("_private9=x\n", {"_private9": "x"}, id="underscore-and-digits"),
    pytest.param("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}, id="crlf"),
]


@pytest.mark.parametrize(("text", "expected"), ENVIRONMENT_CASES)
def test_environment_file_is_parsed(text: str, expected: dict[str, str]) -> None:
    assert parse_environment(text, ".s2i/environment") == expected


# environment file text -> line number of the bad line
BAD_ENVIRONMENT_CASES = [
    pytest.param("JUSTTEXT\n", 1, id="no-equals"),
    pytest.param("A=1\n\n# c\nFOO BAR=1\n", 4, id="space-in-name"),
    pytest.param("A=1\n1A=x\n", 2, id="leading-digit"),
    pytest.param("A-B=1\n", 1, id="dash"),
    pytest.param("=x\n", 1, id="no-name"),
    pytest.param("export\n", 1, id="bare-export"),
    pytest.param("A=1\nÉTAT=x\n", 2, id="non-ascii-name"),
]


@pytest.mark.parametrize(("text", "line"), BAD_ENVIRONMENT_CASES)
def test_bad_environment_line_gives_its_number(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as error:
        parse_environment(text, ".warpdrive/environment")
    assert error.value.message.startswith(f".warpdrive/environment, line {line}: expected NAME=VALUE")
    assert error.value.hint


def test_warpdrive_environment_file_wins_over_s2i(tmp_path: Path) -> None:
    write_tree(tmp_path, {".s2i/environment": "A=s2i\nB=s2i\n", ".warpdrive/environment": "B=warpdrive\n"})
    assert read_environment(tmp_path) == ({"A": "s2i", "B": "warpdrive"}, (".s2i/environment", ".warpdrive/environment"))


def test_no_environment_files_is_empty(tmp_path: Path) -> None:
    assert read_environment(tmp_path) == ({}, ())


# files -> (hooks, executable)
HOOK_CASES = [
    pytest.param({}, ({}, {}), id="none"),
    pytest.param(
        {".warpdrive/action_hooks/build": Exe()},
        ({"build": ".warpdrive/action_hooks/build"}, {"build": True}),
        id="warpdrive-executable",
    ),
    pytest.param(
        {".s2i/action_hooks/pre_build": "echo\n"},
        ({"pre-build": ".s2i/action_hooks/pre_build"}, {"pre-build": False}),
        id="s2i-underscore-not-executable",
    ),
    pytest.param(
        {".s2i/action_hooks/deploy_env": "", ".s2i/action_hooks/build_env": Exe()},
        (
            {"build-env": ".s2i/action_hooks/build_env", "deploy-env": ".s2i/action_hooks/deploy_env"},
            {"build-env": True, "deploy-env": False},
        ),
        id="env-hooks-underscore",
    ),
    pytest.param(
        {".warpdrive/action_hooks/build": "", ".s2i/action_hooks/build": Exe()},
        ({"build": ".warpdrive/action_hooks/build"}, {"build": False}),
        id="warpdrive-beats-s2i",
    ),
    pytest.param(
        {".warpdrive/action_hooks/deploy_env": "", ".s2i/action_hooks/deploy-env": ""},
        ({"deploy-env": ".warpdrive/action_hooks/deploy_env"}, {"deploy-env": False}),
        id="folder-beats-spelling",
    ),
    pytest.param(
        {".warpdrive/action_hooks/pre-build": "", ".warpdrive/action_hooks/pre_build": ""},
        ({"pre-build": ".warpdrive/action_hooks/pre-build"}, {"pre-build": False}),
        id="dash-spelling-first",
    ),
    pytest.param(
        {".warpdrive/action_hooks/post-build": Exe(), ".warpdrive/action_hooks/deploy/": ""},
        ({}, {}),
        id="unknown-names-and-folders-ignored",
    ),
]


@pytest.mark.parametrize(("files", "expected"), HOOK_CASES)
def test_action_hooks_are_found(tmp_path: Path, files: dict[str, str | Exe], expected: tuple[dict, dict]) -> None:
    assert find_hooks(write_tree(tmp_path, files)) == expected


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_documented_hook_is_found_in_both_folders(tmp_path: Path, name: str) -> None:
    underscore = name.replace("-", "_")
    write_tree(tmp_path / "a", {f".warpdrive/action_hooks/{name}": Exe()})
    write_tree(tmp_path / "b", {f".s2i/action_hooks/{underscore}": ""})
    assert find_hooks(tmp_path / "a") == ({name: f".warpdrive/action_hooks/{name}"}, {name: True})
    assert find_hooks(tmp_path / "b") == ({name: f".s2i/action_hooks/{underscore}"}, {name: False})


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({".warpdrive/server_type": " gunicorn \n"}, {"WARPDRIVE_SERVER_TYPE": "gunicorn"}, id="server_type"),
        pytest.param({".warpdrive/home": "src\n"}, {"WARPDRIVE_APP_HOME": "src"}, id="home"),
        pytest.param({".warpdrive/server_type": "\n", ".warpdrive/home": ""}, {}, id="empty-files-ignored"),
        pytest.param({".s2i/server_type": "gunicorn"}, {}, id="only-in-warpdrive"),
    ],
)
def test_warpdrive_setting_files_are_read(tmp_path: Path, files: dict[str, str], expected: dict[str, str]) -> None:
    assert read_setting_files(write_tree(tmp_path, files)) == expected
