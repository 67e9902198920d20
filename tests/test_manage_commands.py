"""The day-2 commands' arguments and output shape, pure: config's set/unset (and the `warp config ... set A=1` form),
warp start's --listen and the deprecated bare --host address, and --json's shape."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from warptasks.errors import ConfigError
from warptasks.remote.commands import (
    JSON_FORMAT,
    Change,
    as_json,
    is_listen_address,
    parse_change,
    results_json,
    rewrite_config_argv,
    start_where,
)


def _no_prompt(name: str) -> str:
    raise AssertionError(f"asked for {name}")


@pytest.mark.parametrize(
    ("sets", "unsets", "expected"),
    [
        (["A=1"], [], Change({"A": "1"})),
        (["A=1", "B=2"], ["C"], Change({"A": "1", "B": "2"}, ("C",))),
        # Literal: everything after the first "=", quotes, $, spaces and "=" kept (the file quotes it on the host).
        (["URL=postgres://u:p@h/db?x=1"], [], Change({"URL": "postgres://u:p@h/db?x=1"})),
        (["P=a$b `c` 'd'"], [], Change({"P": "a$b `c` 'd'"})),
        (["EMPTY="], [], Change({"EMPTY": ""})),
        ([], ["A", "A"], Change({}, ("A",))),
    ],
)
def test_set_and_unset_arguments(sets: list[str], unsets: list[str], expected: Change) -> None:
    assert parse_change(sets, unsets, _no_prompt) == expected


@pytest.mark.parametrize(
    ("sets", "unsets", "says"),
    [
        (["1A=x"], [], "not an environment variable name"),
        (["A-B=x"], [], "not an environment variable name"),
        (["=x"], [], "not an environment variable name"),
        (["É=x"], [], "not an environment variable name"),
        ([], ["NOT A NAME"], "not an environment variable name"),
        (["A=one\ntwo"], [], "line break"),
        (["A=one\rtwo"], [], "line break"),
        (["A=nul\0"], [], "line break or a NUL byte"),
        (["A=1"], ["A"], "both set and unset"),
    ],
)
def test_bad_set_and_unset_arguments_are_clear_errors(sets: list[str], unsets: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_change(sets, unsets, _no_prompt)


def test_a_name_without_a_value_reads_it_from_the_secret_source_never_the_command_line() -> None:
    asked: list[str] = []

    def secret(name: str) -> str:
        asked.append(name)
        return "s3cr3t$"

    assert parse_change(["DSN", "A=1"], [], secret) == Change({"DSN": "s3cr3t$", "A": "1"})
    assert asked == ["DSN"]


def test_secrets_come_from_stdin_when_it_is_not_a_terminal() -> None:
    code = "from warptasks.remote.commands import parse_change; print(parse_change(['A', 'B'], []).sets)"
    out = subprocess.run([sys.executable, "-c", code], input="first $x\nsecond\n", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == repr({"A": "first $x", "B": "second"})
    empty = subprocess.run([sys.executable, "-c", code], input="", capture_output=True, text=True)
    assert empty.returncode != 0 and "no value for A on stdin" in empty.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["config", "--host", "web1", "set", "A=1", "B=2"], ["config", "--host", "web1", "--set", "A=1", "--set", "B=2"]),
        (["config", "--host", "web1", "unset", "A"], ["config", "--host", "web1", "--unset", "A"]),
        (["config", "-H", "set", "set", "A"], ["config", "-H", "set", "--set", "A"]),  # a host named "set"
        (["config", "set", "A=1", "--restart"], ["config", "--set", "A=1", "--restart"]),
        (["config", "--host=web1", "set", "A"], ["config", "--host=web1", "--set", "A"]),
        (["warp.config", "set", "A=1"], ["warp.config", "--set", "A=1"]),
        (["config", "--host", "web1"], ["config", "--host", "web1"]),
        (["--echo", "config", "unset", "A", "B"], ["--echo", "config", "--unset", "A", "--unset", "B"]),
        (["deploy", "--host", "set"], ["deploy", "--host", "set"]),  # other tasks untouched
        (["config", "set", "A=1", "--", "set"], ["config", "--set", "A=1", "--", "set"]),
        # Only when config is the task: never a word of another task's, nor of a command after --.
        (["exec", "--", "tool", "config", "set", "x"], ["exec", "--", "tool", "config", "set", "x"]),
        (["deploy", "--path", "config", "set"], ["deploy", "--path", "config", "set"]),
        (["-f", "config", "status"], ["-f", "config", "status"]),
        (["-e", "config", "set", "A"], ["-e", "config", "--set", "A"]),
    ],
)
def test_the_issues_config_form_becomes_invokes_options(argv: list[str], expected: list[str]) -> None:
    assert rewrite_config_argv(argv) == expected


def test_config_set_with_no_names_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no names given"):
        rewrite_config_argv(["config", "--host", "web1", "set"])


@pytest.mark.parametrize(
    ("value", "listen"),
    [
        ("0.0.0.0", True),
        ("::", True),
        ("localhost", True),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("::1", True),
        ("fe80::1", True),
        ("web1", False),
        ("deploy@10.1.2.3", False),
        ("10.1.2.3:2222", False),
        ("[::1]:2222", False),
        ("app.example.com", False),
    ],
)
def test_which_start_host_values_are_listen_addresses(value: str, listen: bool) -> None:
    assert is_listen_address(value) is listen


def test_start_listen_and_host() -> None:
    assert start_where(None, None) == start_where(None, []) == start_where(None, [""])
    assert start_where("0.0.0.0", None).listen == "0.0.0.0" and not start_where("0.0.0.0", None).note
    deprecated = start_where(None, ["0.0.0.0"])
    assert deprecated.listen == "0.0.0.0" and deprecated.hosts == () and "use --listen 0.0.0.0" in deprecated.note
    remote = start_where(None, ["web1", "deploy@web2:2222"])
    assert remote.listen is None and remote.hosts == ("web1", "deploy@web2:2222") and not remote.note
    for listen, hosts in ((None, ["0.0.0.0", "web1"]), ("0.0.0.0", ["web1"]), ("::", ["0.0.0.0"])):
        with pytest.raises(ConfigError):
            start_where(listen, hosts)


@dataclass
class _Result:
    host: str
    ok: bool
    release: str
    phase: str
    message: str
    timings: dict[str, float]


def test_json_shape() -> None:
    results = [
        _Result("web1", True, "r2", "stop", "restarted: r2", {"start": 1.234}),
        _Result("web2", False, "", "lock", "held", {}),
    ]
    data = results_json("restart", results, {"web1": {"port": 8082}})
    assert data == {
        "format": JSON_FORMAT,
        "command": "restart",
        "ok": False,
        "hosts": {
            "web1": {
                "ok": True,
                "release": "r2",
                "phase": "stop",
                "message": "restarted: r2",
                "timings": {"start": 1.23},
                "port": 8082,
            },
            "web2": {"ok": False, "release": None, "phase": "lock", "error": "held", "timings": {}},
        },
    }
    assert JSON_FORMAT == 1 and json.loads(json.dumps(data)) == data
    assert as_json("status", {"a": {"ok": True}})["ok"] is True and as_json("audit", {})["ok"] is True


HOSTILE_ENTRY = {
    "time": "2026-12-01T16:40:02.511Z",
    "action": "deploy",
    "result": "failed",
    "by": "alice@\x1b]0;pwned\x07laptop\nFORGED\rLINE",
    "from": "198.51.100.4\x1b[2J",
    "release": "r1\x1b[1;31m",
    "details": {"to": "r0\x9b31m", "set": ["A\x1b[8m"]},
    "error": "boom \x1b[0m\nsecond line",
}


def test_an_audit_entry_is_shown_escaped_as_log_lines_are() -> None:
    from warptasks.remote.manage import describe_entry

    line = describe_entry(HOSTILE_ENTRY)
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line and "\r" not in line and "\x9b" not in line
    assert line == (
        "2026-12-01T16:40:02.511Z deploy failed by alice@\\x1b]0;pwned\\x07laptop\\x0aFORGED\\x0dLINE"
        " from 198.51.100.4\\x1b[2J release r1\\x1b[1;31m (set=['A\\x1b[8m'], to=r0\\x9b31m): boom \\x1b[0m"
    )
    # A plain entry is unchanged.
    plain = dict(HOSTILE_ENTRY, by="alice@laptop", release="r1", details={}, error=None, result="ok")
    plain["from"] = "198.51.100.4"
    assert describe_entry(plain) == "2026-12-01T16:40:02.511Z deploy ok by alice@laptop from 198.51.100.4 release r1"


def test_warp_audit_prints_each_entry_escaped(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from invoke import Context

    from warptasks.remote import manage
    from warptasks.tasks import remote

    answers = {"web1": {"ok": True, "entries": [HOSTILE_ENTRY, dict(HOSTILE_ENTRY, by="bob")]}}
    monkeypatch.setattr(manage, "audit_log", lambda *args, **kwargs: answers)
    remote.audit(Context(), host=["web1"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert out.count("\n") == 2 and "FORGED\\x0dLINE" in out.splitlines()[0] and "second line" not in out
