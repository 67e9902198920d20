"""The command line as a user meets it: the core options warp keeps, every task's short flags (read from its own
``--help``), and whole-number options refused with a clear error and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from invoke.parser import Parser

import warptasks
from warptasks.cli import CORE_OPTIONS, program
from warptasks.tasks.flags import SHORT_FLAGS, WHOLE_NUMBERS, WarpTask

TASKS = sorted(warptasks.ns.task_names)
HIDDEN_CORE = [
    "--prompt-for-sudo-password",
    "--write-pyc",
    "--dry",
    "-R",
    "--echo",
    "-e",
    "--pty",
    "--hide=both",
    "--warn-only",
    "-w",
    "--command-timeout=5",
    "-T",
    "--debug",
    "-d",
    "--list-depth=1",
    "--list-format=json",
]


def warp(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``warp ARGV`` as a user runs it: its own process, this checkout's warptasks."""
    environment = dict(os.environ, PYTHONPATH=str(Path(warptasks.__file__).parents[1]), **(env or {}))
    for name in [n for n in environment if n.startswith("INVOKE_")]:
        if name not in (env or {}):
            del environment[name]
    return subprocess.run(
        [sys.executable, "-m", "warptasks", *argv], capture_output=True, text=True, cwd=cwd, env=environment, timeout=60
    )


def task_help(name: str, capsys: pytest.CaptureFixture[str], flag: str = "--help") -> str:
    with pytest.raises(SystemExit) as exited:
        program.run(["warp", name, flag])
    assert exited.value.code in (0, None)
    return capsys.readouterr().out


def shown_flags(help_text: str) -> list[tuple[str, ...]]:
    """Each option line of a task's --help, as its names: ('-p', '--project'), ('--json',)."""
    options = help_text.split("Options:", 1)[1]
    return [
        tuple(re.findall(r"--?[\w-]+|--?(?=[ ,])", spec))
        for spec in re.findall(r"^  (-\S.*?)(?:\s{2,}|$)", options, re.MULTILINE)
    ]


@pytest.mark.parametrize("name", TASKS)
def test_each_tasks_help_shows_the_tables_short_flags_and_no_other(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(warptasks.ns[name], WarpTask)
    lines = shown_flags(task_help(name, capsys))
    assert len(lines) == len(warptasks.ns[name].get_arguments())  # every option is listed, each once
    seen: list[str] = []
    for names in lines:
        longs = [n[2:] for n in names if n.startswith("--")]
        shorts = [n[1:] for n in names if not n.startswith("--")]
        assert len(longs) == 1 and all(len(s) == 1 and s.isalpha() for s in shorts), names  # no bare "-" or "--"
        expected = [SHORT_FLAGS[longs[0]]] if longs[0] in SHORT_FLAGS else []
        assert shorts == expected, f"{name}: {names}"
        seen += names
    assert len(seen) == len(set(seen)), f"{name} has a flag twice: {seen}"
    assert not {"-h", "-V"} & set(seen)  # the core's short flags stay theirs: -h is always help


def test_the_short_flag_table_gives_each_letter_one_option_and_never_h() -> None:
    letters = list(SHORT_FLAGS.values())
    assert len(letters) == len(set(letters)) and "h" not in letters and "V" not in letters
    options = {a.names[0] for t in TASKS for a in warptasks.ns[t].get_arguments()}
    assert set(SHORT_FLAGS) <= options and set(WHOLE_NUMBERS) <= options  # no row for an option no task has


@pytest.mark.parametrize("name", TASKS)
def test_dash_h_is_help_for_every_task(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert task_help(name, capsys, "-h").startswith(f"Usage: warp [--core-opts] {name} [--options]")


def test_warp_start_dash_h_prints_help_in_a_process() -> None:
    result = warp("start", "-h")
    assert result.returncode == 0 and "--listen" in result.stdout and not result.stderr


def test_warp_help_shows_only_the_core_options_warp_keeps() -> None:
    result = warp("--help")
    assert result.returncode == 0
    core = result.stdout.split("Subcommands:")[0]
    shown = set(re.findall(r"(?<![\w-])--?[\w-]+", core.split("Core options:")[1]))
    assert shown == {f"-{n}" if len(n) == 1 else f"--{n}" for names, _ in CORE_OPTIONS.values() for n in names}
    for gone in ("sudo", "pyc", "--dry", "--echo", "--pty", "--hide", "--warn-only", "--debug", "timeout"):
        assert gone not in core


@pytest.mark.parametrize("flag", HIDDEN_CORE)
def test_invokes_other_core_options_are_refused_not_half_honoured(flag: str, tmp_path: Path) -> None:
    (tmp_path / "wsgi.py").write_text("def application(environ, start_response):\n    return []\n")
    result = warp(flag, "plan", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"warp: error: No idea what '{flag.split('=')[0]}' is!" in result.stderr
    assert "warp COMMAND --help" in result.stderr and "probe" not in result.stdout + result.stderr


def test_the_core_options_kept_work(tmp_path: Path) -> None:
    version = warp("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"warp {warptasks.__version__}"
    assert warp("-V").stdout == version.stdout
    listed = warp("--list")
    assert listed.returncode == 0 and {"start", "deploy", "logs"} <= set(listed.stdout.split())
    script = warp("--print-completion-script", "bash")
    assert script.returncode == 0 and "--complete" in script.stdout
    (tmp_path / "wsgi.py").write_text("")
    (tmp_path / "other.yaml").write_text("warp:\n  port: 99999\n")
    assert warp("plan", cwd=tmp_path).returncode == 0
    read = warp("--config", str(tmp_path / "other.yaml"), "plan", cwd=tmp_path)  # the file is read: its port refused
    assert read.returncode == 1 and "warp: error: port 99999 is out of range" in read.stderr


def test_a_removed_short_flag_is_an_error_that_says_where_to_look() -> None:
    result = warp("start", "-t", "4")  # threads had -t; -t is --tag now
    assert result.returncode == 1
    assert result.stderr == (
        "warp: error: No idea what '-t' is!\n  -> warp --help lists the commands, warp COMMAND --help a command's options\n"
    )


# -- whole numbers ------------------------------------------------------------------------------------------------

BAD_NUMBERS = [
    (("start", "--processes", "two"), "--processes 'two' is not a whole number", "of at least 1"),
    (("start", "--processes", "0"), "--processes 0 is out of range", "of at least 1"),
    (("start", "-r", "worker=2"), "--processes 'worker=2' is not a whole number", "of at least 1"),
    (("start", "--port", "99999"), "--port 99999 is out of range", "from 1 to 65535, e.g. --port 8080"),
    (("start", "-o", "http"), "--port 'http' is not a whole number", "from 1 to 65535"),
    (("start", "--threads", "0"), "--threads 0 is out of range", "of at least 1"),
    (("start", "--threads", "1.5"), "--threads '1.5' is not a whole number", "of at least 1"),
    (("start", "-H", "web1", "--backend-port", "70000"), "--backend-port 70000 is out of range", "from 1 to 65535"),
    (("plan", "--port", "0"), "--port 0 is out of range", "from 1 to 65535"),
    (("kube", "--port", "two"), "--port 'two' is not a whole number", "from 1 to 65535"),
    (("kube", "--replicas", "0"), "--replicas 0 is out of range", "of at least 1"),
    (("logs", "-H", "web1", "--lines", "x"), "--lines 'x' is not a whole number", "of at least 0"),
    (("logs", "-H", "web1", "-n", "-5"), "--lines -5 is out of range", "of at least 0"),
    (("deploy", "-H", "web1", "--keep", "all"), "--keep 'all' is not a whole number", "of at least 0"),
    (("deploy", "-H", "web1", "--port", "65536"), "--port 65536 is out of range", "from 1 to 65535"),
    (("deploy", "-H", "web1", "--processes", "two"), "processes 'two' is not a number", "TYPE=N"),
    (("deploy", "-H", "web1", "--processes", "0"), "processes 0 is out of range", "TYPE=N"),
    (("config", "-H", "web1", "-o", "x"), "--port 'x' is not a whole number", "from 1 to 65535"),
    (("restart", "-H", "web1", "--backend-port", "0"), "--backend-port 0 is out of range", "from 1 to 65535"),
    (("audit", "-H", "web1", "--limit", "0"), "--limit 0 is out of range", "of at least 1"),
]


@pytest.mark.parametrize(("argv", "message", "hint"), BAD_NUMBERS, ids=[" ".join(a) for a, _, _ in BAD_NUMBERS])
def test_a_bad_whole_number_is_a_clear_error(argv: tuple[str, ...], message: str, hint: str, tmp_path: Path) -> None:
    (tmp_path / "wsgi.py").write_text("")
    result = warp(*argv, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    first, second = result.stderr.splitlines()[:2]
    assert first.startswith("warp: error: ") and message in first
    assert second.startswith("  -> ") and hint in second


GOOD_NUMBERS = [
    ("start", ("--port", "8085", "--processes", "2", "--threads", "4"), {"port": 8085, "processes": 2, "threads": 4}),
    ("start", ("-o", "1", "-r", "1", "--backend-port", "65535"), {"port": 1, "processes": 1, "backend_port": 65535}),
    ("start", (), {"port": None, "processes": None, "threads": None}),
    ("logs", ("-n", "0"), {"lines": 0}),
    ("logs", (), {"lines": 100}),
    ("kube", ("--replicas", "3", "-o", "9000"), {"replicas": 3, "port": 9000}),
    ("kube", (), {"replicas": 2, "port": None}),
    ("deploy", ("--keep", "0", "-r", "worker=2", "-r", "3"), {"keep": 0, "processes": ["worker=2", "3"]}),
    ("audit", ("--limit", "1"), {"limit": 1}),
]


@pytest.mark.parametrize(("name", "argv", "values"), GOOD_NUMBERS)
def test_good_whole_numbers_reach_the_task_as_numbers(name: str, argv: tuple[str, ...], values: dict[str, object]) -> None:
    parser = Parser(contexts=warptasks.ns.to_contexts())
    [parsed] = parser.parse_argv([name, *argv])
    assert {key: parsed.args[key].value for key in values} == values


BAD_CONFIG = [
    ("plan", {"INVOKE_WARP_PORT": "abc"}, "port 'abc' is not a number"),
    ("plan", {"INVOKE_WARP_PORT": "99999"}, "port 99999 is out of range: it must be 1 to 65535"),
    ("plan", {"INVOKE_WARP_THREADS": "0"}, "threads 0 is out of range: it must be at least 1"),
    ("plan", {"INVOKE_WARP_PROCESSES": "x"}, "processes 'x' is not a number"),
    ("deploy", {"INVOKE_WARP_DEPLOY_PORT": "http"}, "port 'http' is not a number"),
    ("deploy", {"INVOKE_WARP_DEPLOY_KEEP": "-1"}, "keep -1 is out of range: it must be at least 0"),
    ("deploy", {"INVOKE_WARP_DEPLOY_DRAIN": "soon"}, "drain 'soon' is not a number of seconds"),
    ("deploy", {"INVOKE_WARP_DEPLOY_HEALTH_TIMEOUT": "x"}, "health_timeout 'x' is not a number of seconds"),
]


@pytest.mark.parametrize(("task", "env", "message"), BAD_CONFIG, ids=[f"{t} {' '.join(e)}" for t, e, _ in BAD_CONFIG])
def test_a_bad_number_in_the_configuration_names_the_configuration(
    task: str, env: dict[str, str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "wsgi.py").write_text("")
    result = warp(task, *(["-H", "web1.invalid"] if task == "deploy" else []), cwd=tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"warp: error: {message}" in result.stderr
    assert "in the warp: configuration (invoke.yaml, a --config file or an INVOKE_WARP_* variable)" in result.stderr
    assert "--port" not in result.stderr  # not given: the hint names where the value came from, not the option


def test_numbers_from_invoke_variables_still_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The twin of the above: good values, a fraction of a second included (invoke cast it with int() before).
    (tmp_path / "wsgi.py").write_text("")
    env = {"INVOKE_WARP_PORT": "8123", "INVOKE_WARP_DEPLOY_DRAIN": "1.5", "INVOKE_WARP_DEPLOY_KEEP": "2"}
    result = warp("plan", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    from invoke import Config

    from warptasks.settings import DeploySettings, Settings

    config = Config()
    config.load_collection(warptasks.ns.configuration())
    # The port is decided at start (PORT, else 8080) when no setting gives one; the other defaults are kept.
    assert Settings.resolve(config).port is None and DeploySettings.resolve(config).drain == 2
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config.load_shell_env()
    assert Settings.resolve(config).port == 8123
    assert (DeploySettings.resolve(config).drain, DeploySettings.resolve(config).keep) == (1.5, 2)


# -- errors that name the right fix -------------------------------------------------------------------------------


def built_project(root: Path) -> Path:
    """A project warp exec accepts without a build of minutes: an app and a current environment with one tool."""
    (root / "wsgi.py").write_text("")
    tools = root / ".warp" / "current" / "bin"
    tools.mkdir(parents=True)
    (tools / "mytool").write_text('#!/bin/sh\necho "mytool ran: $*"\n')
    (tools / "mytool").chmod(0o755)
    (tools / "notexec").write_text("echo never\n")
    return tools


def test_warp_exec_of_a_missing_command_says_it_was_not_found(tmp_path: Path) -> None:
    tools = built_project(tmp_path)
    for argv in (("exec", "--", "nosuchcmd", "--flag"), ("exec", "-c", "nosuchcmd --flag")):
        result = warp(*argv, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr == (
            "warp: error: command not found: nosuchcmd\n"
            f"  -> check its name: it is looked for in the app's environment ({tools}), then on PATH\n"
        )
        assert "warp build" not in result.stderr
    refused = warp("exec", "--", "notexec", cwd=tmp_path)
    assert refused.returncode == 1 and "warp: error: cannot run notexec: Permission denied" in refused.stderr
    assert "warp build" not in refused.stderr
    # The twin: a command that is there runs, found in the environment's bin first.
    ran = warp("exec", "--", "mytool", "a", "b", cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout == "mytool ran: a b\n"


def test_a_missing_python_is_said_to_be_missing_on_this_machine(tmp_path: Path) -> None:
    (tmp_path / "wsgi.py").write_text("")
    result = warp("build", "--python", "3.99", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "warp: error: Python 'python3.99' is not available on this machine" in result.stderr
    assert "target" not in result.stderr


def test_a_missing_python_on_a_host_names_the_host() -> None:
    from invoke import Result

    from warptasks.errors import ConfigError
    from warptasks.run.executor import gather_facts

    class Connection:  # what gather_facts reads of fabric's Connection
        original_host = "web1"

        def run(self, command: str, **kwargs: object) -> Result:
            return Result(stderr="sh: 1: python3.99: not found", exited=127)

    with pytest.raises(ConfigError, match="Python 'python3.99' is not available on web1\n"):
        gather_facts(Connection(), "python3.99", {})


@pytest.mark.parametrize(
    "argv", [("nosuch",), ("-h", "nosuch"), ("--list", "nosuch"), ("start", "-h", "0.0.0.0"), ("start", "-e")]
)
def test_an_unknown_word_is_a_warp_error_with_where_to_look(argv: tuple[str, ...]) -> None:
    result = warp(*argv)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("warp: error: No idea what ")
    assert result.stderr.endswith("\n  -> warp --help lists the commands, warp COMMAND --help a command's options\n")
