"""envfile.py: the one environment-file parser, and its entry point that runs a command with a file's values, literally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warptasks.detect.conventions import parse_environment
from warptasks.errors import ConfigError
from warptasks.scripts import envfile, source

# Each line as a shell sourcing it would break it (or run it); the child must see exactly the text.
NASTY = {
    "SECRET_KEY": ("SECRET_KEY=k9$x2&(z)!=a", "k9$x2&(z)!=a"),
    "DB_PASSWORD": ("DB_PASSWORD=pa$word1", "pa$word1"),
    "TICKS": ("TICKS=`touch {marker}`$(touch {marker})", "`touch {marker}`$(touch {marker})"),
    "DOUBLE": ('export DOUBLE="two  spaced words"', "two  spaced words"),
    "SINGLE": ("SINGLE='$HOME and \"inner\"'", '$HOME and "inner"'),
    "HASH": ("HASH=abc#def # not a comment", "abc#def # not a comment"),
    "EQUALS": ("EQUALS=a=b==c", "a=b==c"),
    "SPACES": ("SPACES =   padded value   ", "padded value"),
    "SEMI": ("SEMI=a; touch {marker} | cat > {marker}", "a; touch {marker} | cat > {marker}"),
    "EMPTY": ("EMPTY=", ""),
    "BACKSLASH": (r"BACKSLASH=C:\new\table", r"C:\new\table"),
    "UNICODE": ("UNICODE=café ☕", "café ☕"),
}
SHOW = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """envfile.py as the coordinator ships it: its source, run by a Python of the target."""
    return subprocess.run(
        [sys.executable, "-c", source("envfile.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_the_child_sees_each_value_exactly_as_written_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    lines = ["# a comment", "", *(line.format(marker=marker) for line, _ in NASTY.values())]
    path = tmp_path / "environment"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())  # as saved on Windows
    result = run(str(path), "--", sys.executable, "-c", SHOW, *NASTY)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {name: value.format(marker=marker) for name, (_, value) in NASTY.items()}
    assert not marker.exists(), "a shell ran part of a value"


def test_the_files_values_win_over_the_environment_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "environment"
    path.write_text("A=from-file\n")
    result = run(str(path), "--", sys.executable, "-c", SHOW, "A", "B", env={"A": "inherited", "B": "kept"})
    assert json.loads(result.stdout) == {"A": "from-file", "B": "kept"}


def test_several_files_are_read_in_order_later_ones_winning(tmp_path: Path) -> None:
    first, second = tmp_path / "values", tmp_path / "shared"
    first.write_text("A=first\nB=first\n")
    second.write_text("B=second\n")
    missing = tmp_path / "no-such-file"
    result = run(str(first), str(missing), str(second), "--", sys.executable, "-c", SHOW, "A", "B")
    assert json.loads(result.stdout) == {"A": "first", "B": "second"}


def test_a_missing_file_adds_nothing_and_the_commands_arguments_and_exit_pass_through(tmp_path: Path) -> None:
    script = "import sys; print(sys.argv[1:]); sys.exit(3)"
    result = run(str(tmp_path / "no-such-file"), "--", sys.executable, "-c", script, "a b", "$HOME", "--", "")
    assert result.returncode == 3
    assert result.stdout.strip() == "['a b', '$HOME', '--', '']"


def test_a_malformed_line_names_the_file_and_line_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "environment"
    path.write_text("A=1\n# fine\nnot a setting\nB=2\n")
    result = run(str(path), "--", "touch", str(marker))
    assert result.returncode == 2
    assert f"{path}, line 3: expected NAME=VALUE, found 'not a setting'" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(("FILE",), 2, "usage:", id="no-separator"),
        pytest.param(("FILE", "--"), 2, "usage:", id="no-command"),
        pytest.param(("--", "true"), 2, "usage:", id="no-file"),
        pytest.param(("FILE", "--", "no-such-command-warptasks"), 127, "cannot run no-such-command-warptasks", id="not-found"),
    ],
)
def test_wrong_use_is_a_clear_error(tmp_path: Path, args: tuple[str, ...], code: int, message: str) -> None:
    result = run(*(str(tmp_path / "environment") if a == "FILE" else a for a in args))
    assert result.returncode == code and message in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_file_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    result = run(str(tmp_path), "--", "true")  # a folder: exists, cannot be read as a file
    assert result.returncode == 2 and f"cannot read {tmp_path}" in result.stderr


def test_detection_parses_with_the_same_parser() -> None:
    text = "\n".join(line.format(marker="/m") for line, _ in NASTY.values())
    assert parse_environment(text, ".s2i/environment") == envfile.parse(text, ".s2i/environment")
    with pytest.raises(ConfigError) as error:
        parse_environment("A=1\n2BAD=x\n", ".s2i/environment")
    assert error.value.message == ".s2i/environment, line 2: expected NAME=VALUE, found '2BAD=x'"
    assert error.value.hint == "fix or remove that line"


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x1c\x1d\x1e\x85"),
            max_size=20,
        ),
    )
)
def test_any_value_without_surrounding_space_or_quotes_reads_back_as_written(values: dict[str, str]) -> None:
    values = {name: value.strip() for name, value in values.items()}
    values = {n: v for n, v in values.items() if not (len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"")}
    text = "".join(f"{name}={value}\n" for name, value in values.items())
    assert envfile.parse(text, "env") == values


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20).filter(
            lambda v: v == "".join(v.splitlines()) and "\0" not in v
        ),
    )
)
def test_rendered_values_read_back_exactly_spaces_quotes_and_all(values: dict[str, str]) -> None:
    # What a deploy writes for a server (its environment, off its command line) must reach it unchanged.
    assert envfile.parse(envfile.render(values), "env") == values


@pytest.mark.parametrize(
    "values",
    [{"A": "two\nlines"}, {"A": "carriage\rreturn"}, {"A": "sep\u2028arated"}, {"A": "n\0ul"}, {"2BAD": "x"}, {"A\n": "x"}],
)
def test_values_a_file_cannot_hold_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        envfile.render(values)
