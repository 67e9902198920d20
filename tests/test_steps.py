"""Steps become shell lines in one place; whatever text they carry, the shell must not interpret it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cases import write_tree
from warptasks.detect import detect_app
from warptasks.errors import ConfigError
from warptasks.plan import Plan, Step, command_line, write_file
from warptasks.plan.environment import source_env_hooks

# Prints what the process received: its arguments, working directory, chosen variables and PATH.
REPORT = (
    "import json, os, sys\n"
    "names = json.loads(os.environ['WT_NAMES'])\n"
    "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': {n: os.environ.get(n) for n in names},"
    " 'path': os.environ.get('PATH', '')}))\n"
)
SHELL_ENV = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}

# Text a shell would love to interpret: quotes, $, ;, backticks, globs, newlines, unicode. NUL cannot be in argv.
TOKENS = [*" \t\n\r'\"$;`\\|&<>(){}*?[]~#!%=-:", "$(id)", "${HOME}", "$1", "é", "中", "🙂"]
nasty = st.lists(st.one_of(st.sampled_from(TOKENS), st.characters(codec="utf-8", exclude_characters="\x00")), max_size=12).map(
    "".join
)
# A directory name: any of the above but / and NUL, and not . or ..
dir_names = nasty.map(lambda s: "d" + s.replace("/", "_")).filter(lambda s: len(s.encode()) < 200)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


def run(line: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", line], capture_output=True, env=SHELL_ENV, timeout=30, check=False)


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    args=st.lists(nasty, max_size=5),
    values=st.lists(nasty, max_size=3),
    folder=dir_names,
    path=st.lists(nasty.map(lambda s: s.replace(":", "_")), max_size=2),
)
def test_command_line_passes_every_word_through_the_shell_unchanged(
    scratch: Path, args: list[str], values: list[str], folder: str, path: list[str]
) -> None:
    cwd = scratch / folder
    cwd.mkdir(exist_ok=True)
    env = {f"WT_VALUE_{i}": value for i, value in enumerate(values)}
    expected = dict(env)
    env["WT_NAMES"] = json.dumps(sorted(expected))
    step = Step("probe", (sys.executable, "-S", "-c", REPORT, *args), str(cwd), "why", env=env, path=tuple(path))
    done = run(command_line(step))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    seen = json.loads(done.stdout)
    assert seen["argv"] == args
    assert os.path.samefile(seen["cwd"], cwd)
    assert seen["env"] == expected
    if path:
        assert seen["path"].startswith(":".join(path) + ":")


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(nasty, st.text(max_size=200).map(lambda s: s.replace("\x00", ""))), name=dir_names)
def test_write_file_writes_exact_content(scratch: Path, content: str, name: str) -> None:
    target = scratch / "files" / name
    target.parent.mkdir(exist_ok=True)
    step = write_file("write", str(target), content, str(scratch), "why")
    done = run(command_line(step))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert target.read_bytes() == content.encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not target.with_name(name + ".tmp").exists()


# step -> the exact line
LINE_CASES = [
    pytest.param(Step("s", ("echo", "a b"), "", "w"), "echo 'a b'", id="no-cwd"),
    pytest.param(Step("s", ("ls",), "/srv/my app", "w"), "cd '/srv/my app' && ls", id="cwd-quoted"),
    pytest.param(Step("s", ("ls",), "/x", "w", path=("/e/bin", "/o b")), "cd /x && PATH='/e/bin:/o b':\"$PATH\" ls", id="path"),
    pytest.param(Step("s", ("ls",), "", "w", env={"A": "$HOME", "B": "it's"}), "A='$HOME' B='it'\"'\"'s' ls", id="env-quoted"),
    pytest.param(Step("s", ("sh", "-c", "echo $1", "sh", ";rm"), "", "w"), "sh -c 'echo $1' sh ';rm'", id="argv-quoted"),
]


@pytest.mark.parametrize(("step", "line"), LINE_CASES)
def test_command_line_is_exact(step: Step, line: str) -> None:
    assert command_line(step) == line
    assert step.as_dict()["command"] == line


@pytest.mark.parametrize("name", ["A-B", "1A", "", "A B", "É", "A=B", "$(id)", "A\n"])
def test_invalid_environment_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid environment variable name") as error:
        command_line(Step("s", ("true",), "", "w", env={"OK": "1", name: "x"}))
    assert repr(name) in error.value.message


def test_write_file_carries_content_and_path_as_parameters_not_code() -> None:
    step = write_file("w", "/a b/$x", "$(id) `id`", "/", "why", mode="600", phase="deps", skip="no")
    assert step.argv[3:] == ("sh", "$(id) `id`", "/a b/$x", "600")
    assert "$(id)" not in step.argv[2]
    assert (step.phase, step.skip) == ("deps", "no")


def test_plan_runnable_and_phases_keep_order() -> None:
    steps = (
        Step("a", ("true",), "", "", phase="deps"),
        Step("b", ("true",), "", "", phase="deps", skip="done"),
        Step("c", ("true",), "", "", phase="app"),
    )
    plan = Plan("build", steps, ("note",))
    assert [s.name for s in plan.runnable] == ["a", "c"]
    assert [s.name for s in plan.phase("deps").steps] == ["a", "b"]
    assert plan.phase("app").notes == ("note",)
    data = json.loads(json.dumps(plan.as_dict()))
    assert [s["name"] for s in data["steps"]] == ["a", "b", "c"]
    assert data["steps"][1]["skip"] == "done"


def test_the_env_hook_field_not_the_name_decides_what_sources_the_hook(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": "", ".s2i/action_hooks/build_env": "export A=1\n"}))
    asked = Step("anything at all", ("true",), "/p", "w", env_hook="build-env")
    named_like_an_install = Step("install requirements", ("true",), "/p", "w")
    other_hook = Step("s", ("true",), "/p", "w", env_hook="deploy-env")
    sourced, plain, absent = source_env_hooks(spec, "/p", [asked, named_like_an_install, other_hook])
    assert sourced.argv[:2] == ("bash", "-c") and sourced.argv[4] == "/p/.s2i/action_hooks/build_env"
    assert sourced.argv[5:] == ("true",) and sourced.env_hook == "build-env"
    assert plain == named_like_an_install
    # The app has no deploy-env hook: nothing is sourced, and the step no longer claims it.
    assert absent.argv == ("true",) and absent.env_hook == ""
    assert [s.as_dict()["env_hook"] for s in (sourced, plain, absent)] == ["build-env", "", ""]


def test_every_step_runs_with_echo_off_and_no_configured_environment_whatever_the_configuration() -> None:
    """run.echo in anyone's invoke configuration would print a step's command line with the environment file's values;
    run.env would add BASH_ENV and the like to every step. run_step, the probe and the checks pass their own."""
    from invoke import Config, MockContext, Result

    from warptasks.plan import Step
    from warptasks.run.executor import run_step

    config = Config(overrides={"run": {"echo": True, "env": {"BASH_ENV": "/tmp/evil.rc"}}})
    c = MockContext(config=config, run=Result(exited=0))
    run_step(c, Step("install", ("true",), "/", "x", env={"SECRET_KEY": "s"}))
    kwargs = c.run.call_args.kwargs
    assert kwargs["echo"] is False and kwargs["env"] == {}
    assert "replace_env" not in kwargs  # the runner's own: a fabric Connection must not get this machine's environment
