"""warp logs, and exec/shell/hooks on hosts: the pure pieces (--since, the recorded commands, prefixed lines) and
the agent's ``logs`` and timestamped log writer run for real on a temporary deploy root."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

import warptasks
from tests.cases import django_tree, write_tree
from warptasks.detect import detect_app
from warptasks.errors import ConfigError
from warptasks.remote import front
from warptasks.remote.console import Prefixed, parse_since, recorded_command
from warptasks.remote.host import HostDeploy
from warptasks.remote.hosts import HostTarget
from warptasks.remote.layout import with_shared_environment
from warptasks.remote.session import DeployFailed
from warptasks.scripts import agent as agent_module
from warptasks.scripts import source
from warptasks.settings import DeploySettings

AGENT = source("agent.py")
AGENT_FILE = str(files("warptasks.scripts").joinpath("agent.py"))  # run as a file: -c is capped at 128 KiB
NOW = datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc)

SINCE = [
    ("30s", {"since_seconds": 30.0}),
    ("10m", {"since_seconds": 600.0}),
    (" 2h ", {"since_seconds": 7200.0}),
    ("1.5d", {"since_seconds": 129600.0}),
    ("2026-12-01T15:30", {"since": datetime(2026, 12, 1, 15, 30, tzinfo=timezone.utc).timestamp()}),
    ("2026-12-01T15:30:00Z", {"since": datetime(2026, 12, 1, 15, 30, tzinfo=timezone.utc).timestamp()}),
    ("2026-12-01 16:30:00+01:00", {"since": datetime(2026, 12, 1, 15, 30, tzinfo=timezone.utc).timestamp()}),
]


@pytest.mark.parametrize(("text", "request_keys"), SINCE)
def test_since_is_a_duration_back_on_the_hosts_clock_or_a_time_in_utc(text: str, request_keys: dict[str, float]) -> None:
    assert parse_since(text, NOW) == request_keys


@pytest.mark.parametrize("text", ["10", "ten minutes", "10x", "2026-13-01", "-5m"])
def test_since_that_is_neither_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ConfigError, match="neither a duration nor a time") as error:
        parse_since(text, NOW)
    assert "10m" in (error.value.hint or "")


def test_since_in_the_future_is_refused() -> None:
    with pytest.raises(ConfigError, match="in the future"):
        parse_since("2026-12-01T17:00", NOW)


RECORD = {
    "id": "20261201T160000000Z",
    "commands": {
        "exec": {"argv": ["python3", "-I", "-c", "SRC", "/srv/a b/env/cmd-exec", "--"], "cwd": "/srv/a b", "path": ["/e/bin"]},
        "migrate": {"argv": ["./.warpdrive/action_hooks/migrate"], "cwd": "/srv/x", "path": []},
    },
}


def test_exec_appends_the_users_command_to_the_recorded_one_every_word_quoted() -> None:
    line = recorded_command(RECORD, "exec", ("python", "-c", "print('$HOME; rm -rf /')"))
    assert line == (
        "cd '/srv/a b' && PATH=/e/bin:\"$PATH\" python3 -I -c SRC '/srv/a b/env/cmd-exec' -- python -c "
        + shlex.quote("print('$HOME; rm -rf /')")
    )
    assert recorded_command(RECORD, "migrate") == "cd /srv/x && ./.warpdrive/action_hooks/migrate"


def test_a_hook_the_release_lacks_names_the_file_to_add() -> None:
    with pytest.raises(ConfigError, match=f"{RECORD['id']} has no verify action hook") as error:
        recorded_command(RECORD, "verify")
    assert ".warpdrive/action_hooks/verify" in (error.value.hint or "")


def test_a_release_without_recorded_commands_asks_to_deploy_again() -> None:
    with pytest.raises(DeployFailed, match="recorded no commands") as error:
        recorded_command({"id": "r1", "command": "gunicorn ..."}, "exec", ("ls",))
    assert "deploy again" in (error.value.hint or "")


def test_several_hosts_output_is_whole_lines_each_prefixed_with_its_host() -> None:
    said: list[str] = []
    stream = Prefixed("root@web1:22", said.append)
    stream.write("one\ntw")
    stream.write("o\r\nthree")
    assert said == ["[root@web1:22] one", "[root@web1:22] two"]
    stream.flush()
    assert said[-1] == "[root@web1:22] three"


def test_the_deploy_records_exec_shell_and_the_hooks_the_app_has_without_their_values(tmp_path: Path) -> None:
    files = django_tree() | {
        ".warpdrive/environment": "API_KEY=s3cret-value\n",
        ".warpdrive/action_hooks/verify": "#!/bin/sh\ntrue\n",
    }
    spec = detect_app(str(write_tree(tmp_path, files)))
    deploy = HostDeploy(HostTarget("web1"), DeploySettings.resolve(None, path="/srv/app"), print, release="R1", env="/srv/app/e")
    written: dict[str, str] = {}

    def literal(step: Any, name: str) -> Any:
        literal, text = with_shared_environment(step, deploy.layout, "python3", f"/srv/app/releases/R1/.warp/env/{name}")
        written[name] = text
        return literal

    deploy._literal = literal  # type: ignore[method-assign]
    commands = deploy._commands(spec, 8081)
    # Django's migrate without a hook, as warp migrate runs it locally; verify from its hook; no setup/alive/ready.
    assert set(commands) == {"exec", "shell", "migrate", "verify"}
    assert set(written) == {"cmd-exec", "cmd-shell", "cmd-migrate", "cmd-verify"}
    assert commands["shell"]["argv"][-2:] == ["bash", "-i"] and commands["exec"]["argv"][-1] == "--"
    assert commands["migrate"]["argv"][-4:] == ["python", "manage.py", "migrate", "--noinput"]
    assert all(c["cwd"].startswith("/srv/app/releases/R1") and c["path"] == ["/srv/app/e/bin"] for c in commands.values())
    assert "s3cret-value" not in json.dumps(commands)
    assert 'API_KEY="s3cret-value"' in written["cmd-exec"] and 'WARP_ACTION="shell"' in written["cmd-shell"]
    assert 'WARPDRIVE_HTTP_PORT="8081"' in written["cmd-migrate"]


def test_the_front_tags_each_request_of_an_app_with_its_id_in_the_access_log() -> None:
    app = front.app_id("/srv/shop")
    (route,) = front.site_pieces(front.Site(app, port=8080), front.FrontHost())["routes"]
    assert route["handle"][0] == {"handler": "log_append", "key": "warp_app", "value": app}
    assert route["handle"][-1]["handler"] == "reverse_proxy"


# -- the agent: timestamps, and logs ------------------------------------------------------

STAMP = b"2026-12-01T16:36:28.123Z "

STAMPING = [
    (b"a\nb\n", True, b"S a\nS b\n", True),
    (b"a\nb", True, b"S a\nS b", False),
    (b"rest\nnext\n", False, b"rest\nS next\n", True),
    (b"more", False, b"more", False),
    (b"\n\n", True, b"S \nS \n", True),
]


@pytest.mark.parametrize(("chunk", "at_start", "stamped", "next_at_start"), STAMPING)
def test_the_writer_dates_each_line_where_it_begins_even_across_reads(
    chunk: bytes, at_start: bool, stamped: bytes, next_at_start: bool
) -> None:
    assert agent_module._stamp_lines(chunk, at_start, b"S ") == (stamped, next_at_start)


def test_dated_lines_still_rotate_at_the_cap_cut_at_line_ends(tmp_path: Path) -> None:
    log = tmp_path / "r1.log"
    payload = json.dumps({"action": "logpipe", "path": str(log), "max_bytes": 4096, "keep": 2, "timestamps": True})
    data = b"".join(b"line %06d %s\n" % (n, b"y" * 40) for n in range(3000))
    # Written in pieces that end inside lines: each line gets one date, at its start.
    feeder = subprocess.Popen([sys.executable, AGENT_FILE, payload], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert feeder.stdin is not None
    for start in range(0, len(data), 1000):
        feeder.stdin.write(data[start : start + 1000])
        feeder.stdin.flush()
    feeder.stdin.close()
    assert feeder.wait(timeout=60) == 0
    files = [tmp_path / "r1.log.2", tmp_path / "r1.log.1", log]
    assert all(0 < f.stat().st_size <= 4096 and f.read_bytes().endswith(b"\n") for f in files)
    lines = b"".join(f.read_bytes() for f in files).splitlines()
    assert all(agent_module.LOG_TIME.match(line) for line in lines)
    assert [line[len(STAMP) :] for line in lines] == data.splitlines()[-len(lines) :]


def _access(app: str | None, when: float, uri: str) -> str:
    entry: dict[str, Any] = {"ts": when, "status": 200, "size": 5, "duration": 0.002}
    entry["request"] = {"client_ip": "127.0.0.1", "method": "GET", "host": "example.org", "uri": uri, "proto": "HTTP/1.1"}
    if app:
        entry["warp_app"] = app
    return json.dumps(entry) + "\n"


@pytest.fixture
def deployed(tmp_path: Path) -> dict[str, Any]:
    """A deploy root with a live release's logs (dated, rotated, a worker's) and a front whose log holds two apps."""
    root, home = tmp_path / "app", tmp_path / "front"
    logs = root / "shared" / "logs"
    for folder in (root / "releases" / "R1", root / "releases" / "R0", logs, home / "logs"):
        folder.mkdir(parents=True)
    (root / "current").symlink_to("releases/R1")
    now = time.time()
    t = agent_module._log_time
    (logs / "R1.log.1").write_text(f"{t(now - 3600)} booting\n{t(now - 3500)} old request\n")
    (logs / "R1.log").write_text(f"{t(now - 60)} GET /recent\n{t(now - 5)} GET /newest\n")
    (logs / "R1.worker.1.log").write_text(f"{t(now - 30)} task done\n")
    (logs / "R0.log").write_text(f"{t(now - 9000)} the old release\n")
    app, other = front.app_id(str(root)), front.app_id("/srv/other")
    (home / "logs" / "access.log").write_text(
        _access(app, now - 20, "/ours") + _access(other, now - 10, "/theirs") + _access(None, now - 8, "/untagged")
    )
    return {"root": str(root), "app": app, "front_home": str(home), "now": now}


def run_logs(deployed: dict[str, Any], **request: Any) -> tuple[int, list[str], str]:
    keys = {k: deployed[k] for k in ("root", "app", "front_home")}
    line = json.dumps({"action": "logs", **keys, **request}) + "\n"
    done = subprocess.run([sys.executable, AGENT_FILE], input=line, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout.splitlines(), done.stderr


def test_logs_mix_the_sources_in_time_order_each_line_saying_where_it_came_from(deployed: dict[str, Any]) -> None:
    code, lines, _ = run_logs(deployed)
    assert code == 0
    assert [line.split(" | ")[0].strip() for line in lines] == ["web", "web", "web", "worker.1", "proxy", "web"]
    assert lines[0].endswith(" booting") and lines[-1].endswith(" GET /newest")
    proxy = next(line for line in lines if line.startswith("proxy"))
    assert '"GET example.org/ours HTTP/1.1" 200 5B 2.0ms' in proxy
    # Another app's requests, and lines no app is named on, are never shown.
    assert not any("/theirs" in line or "/untagged" in line or "old release" in line for line in lines)


LOG_FILTERS = [
    ({"lines": 2}, ["proxy    | GET example.org/ours", "web      | GET /newest"]),
    ({"since_seconds": 40}, ["worker.1 | task done", "proxy    | GET example.org/ours", "web      | GET /newest"]),
    ({"grep": "GET /[rn]"}, ["web      | GET /recent", "web      | GET /newest"]),
    ({"release": "R0"}, ["the old release"]),
]


@pytest.mark.parametrize(("request_keys", "expected"), LOG_FILTERS)
def test_logs_filters(deployed: dict[str, Any], request_keys: dict[str, Any], expected: list[str]) -> None:
    if request_keys.get("release") == "R0":
        deployed["app"] = None  # no proxy: the one source is shown unlabelled
    code, lines, _ = run_logs(deployed, **request_keys)
    assert code == 0 and len(lines) == len(expected), lines
    for line, want in zip(lines, expected, strict=True):
        label, _, text = want.rpartition(" | ")
        assert line.startswith(label + " | " if label else "20") and text.split(" ", 1)[-1] in line, (line, want)


def test_since_dates_lines_without_a_time_by_their_files_modification(deployed: dict[str, Any]) -> None:
    logs = Path(deployed["root"]) / "shared" / "logs"
    (logs / "R1.log").write_text("uncapped, undated\n")
    os.utime(logs / "R1.log", (deployed["now"] - 600, deployed["now"] - 600))
    assert "undated" not in "".join(run_logs(deployed, since_seconds=300)[1])
    assert "undated" in "".join(run_logs(deployed, since_seconds=900)[1])


def test_logs_without_a_live_release_or_with_a_bad_pattern_fail_clearly(deployed: dict[str, Any]) -> None:
    code, lines, error = run_logs(deployed, grep="(")
    assert code == 1 and lines == [] and "is not a regular expression" in error
    code, lines, error = run_logs(deployed, release="R9")
    assert code == 1 and lines == [] and "release R9 does not exist" in error  # stderr only: no JSON among the lines
    os.unlink(Path(deployed["root"]) / "current")
    code, lines, error = run_logs(deployed)
    assert code == 1 and lines == [] and "no release is live" in error and "--release" in error


def test_follow_shows_new_lines_through_a_rotation_and_ends_when_nobody_reads(deployed: dict[str, Any]) -> None:
    log = Path(deployed["root"]) / "shared" / "logs" / "R1.log"
    line = json.dumps({"action": "logs", "root": deployed["root"], "follow": True, "lines": 0}) + "\n"
    proc = subprocess.Popen([sys.executable, AGENT_FILE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode())
    proc.stdin.close()
    try:
        time.sleep(0.5)
        with open(log, "ab") as handle:
            handle.write(b"first half")
        time.sleep(0.5)
        with open(log, "ab") as handle:
            handle.write(b" second half\n")
        os.replace(log, str(log) + ".1")  # the writer rotates
        log.write_bytes(b"after the rotation\n")
        os.set_blocking(proc.stdout.fileno(), False)
        seen, deadline = b"", time.monotonic() + 10
        while b"after the rotation" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read() or b""
            time.sleep(0.05)
        assert seen.replace(b" ", b"").endswith(b"web|firsthalfsecondhalf\nweb|aftertherotation\n"), seen
        proc.stdout.close()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()


def test_warp_logs_has_the_short_flags_and_exec_keeps_its_own() -> None:
    def flags(name: str) -> set[str]:
        return {n for a in warptasks.ns[name].get_arguments() for n in a.names}

    assert {"n", "lines", "f", "follow", "since", "grep", "release", "host"} <= flags("logs")
    assert {"c", "p", "host", "path", "identity"} <= flags("exec") and "h" not in flags("exec")
    assert {"p", "host"} <= flags("shell") and {"p", "host", "known-hosts"} <= flags("migrate")


def test_a_local_task_runs_on_the_host_fabric_gives_it_or_the_hosts_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from invoke import Config
    from invoke.exceptions import Exit

    from warptasks.remote import console

    calls: list[tuple[Any, ...]] = []

    def run_recorded(targets: Any, settings: Any, action: str, argv: Any = (), **kwargs: Any) -> int:
        calls.append((targets, settings.path, action, argv, kwargs["interactive"]))
        return 4

    monkeypatch.setattr(console, "run_recorded", run_recorded)
    fab = SimpleNamespace(config=Config(), original_host="web1", user="deploy", port=2222)  # what fab -H web1 gives
    with pytest.raises(Exit) as exited:
        warptasks.ns["migrate"].body(fab, path="/srv/shop")
    assert exited.value.code == 4
    assert calls[-1] == ([HostTarget("web1", "deploy", 2222)], "/srv/shop", "migrate", (), False)
    local = SimpleNamespace(config=Config())
    with pytest.raises(Exit):
        warptasks.ns["exec"].body(local, command="python -c 'print(1)'", host=["root@web2:22", "web3"])
    assert calls[-1][0] == [HostTarget("web2", "root", 22), HostTarget("web3")] and calls[-1][2:4] == (
        "exec",
        ("python", "-c", "print(1)"),
    )


def test_fab_exec_refuses_a_command_after_double_dash_which_fab_would_run_raw_on_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``fab -H web1 warp.exec -- CMD``: fab itself runs CMD on the host as a shell command once the tasks are done
    (outside the release, its environment unset): refused before anything runs, naming -c; -c runs as asked."""
    from types import SimpleNamespace

    from invoke import Config
    from invoke.exceptions import Exit

    from warptasks.remote import console

    calls: list[Any] = []
    monkeypatch.setattr(console, "run_recorded", lambda *args, **kwargs: calls.append(args) or 0)
    fab = SimpleNamespace(config=Config(), original_host="web1", user="deploy", port=22)
    monkeypatch.setattr(sys, "argv", ["fab", "-H", "web1", "warp.exec", "--", "touch", "/tmp/x"])
    with pytest.raises(Exit) as refused:
        warptasks.ns["exec"].body(fab)
    assert refused.value.code != 0 and "-c" in str(refused.value.message) and calls == []
    monkeypatch.setattr(sys, "argv", ["fab", "-H", "web1", "warp.exec", "-c", "python manage.py check"])
    warptasks.ns["exec"].body(fab, command="python manage.py check")
    assert calls[-1][2:4] == ("exec", ("python", "manage.py", "check"))
    # warp exec --host keeps -- (warp has no remainder of its own).
    monkeypatch.setattr(sys, "argv", ["warp", "exec", "--host", "web1", "--", "python", "manage.py", "check"])
    warptasks.ns["exec"].body(SimpleNamespace(config=Config()), host=["web1"])
    assert calls[-1][2:4] == ("exec", ("python", "manage.py", "check"))


def test_no_lines_asked_or_no_log_at_all_prints_nothing(deployed: dict[str, Any]) -> None:
    assert run_logs(deployed, lines=0)[:2] == (0, [])
    for log in (Path(deployed["root"]) / "shared" / "logs").iterdir():
        log.unlink()
    deployed["app"] = None
    code, lines, error = run_logs(deployed)
    assert (code, lines) == (0, []) and "release R1 has no log yet" in error


def test_a_shell_is_opened_on_one_host_only() -> None:
    from warptasks.remote.console import run_recorded

    settings = DeploySettings.resolve(None)
    with pytest.raises(ConfigError, match="one interactive shell"):
        run_recorded([HostTarget("web1"), HostTarget("web2")], settings, "shell")
    with pytest.raises(ConfigError, match="no host given"):
        run_recorded([], settings, "exec", ("ls",))


def test_a_proxy_log_this_account_cannot_read_is_said_once_and_left_out(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []

    def refused(path: str, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(agent_module, "open", refused, raising=False)  # the tests run as root, who reads anything
    request = {k: deployed[k] for k in ("root", "app", "front_home")}
    assert agent_module._proxy_log(request, said.append) is None
    assert len(said) == 1 and said[0].startswith("proxy: cannot read ") and "Permission denied" in said[0]


def test_follow_moves_to_the_release_that_goes_live(deployed: dict[str, Any]) -> None:
    root = Path(deployed["root"])
    line = json.dumps({"action": "logs", "root": str(root), "follow": True, "lines": 0}) + "\n"
    proc = subprocess.Popen([sys.executable, AGENT_FILE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode())
    proc.stdin.close()
    try:
        time.sleep(0.5)
        (root / "releases" / "R2").mkdir()
        (root / "shared" / "logs" / "R2.log").write_bytes(b"the new release starts\n")
        os.unlink(root / "current")
        (root / "current").symlink_to("releases/R2")  # a deploy switched
        os.set_blocking(proc.stdout.fileno(), False)
        seen, deadline = b"", time.monotonic() + 10
        while b"the new release starts" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read() or b""
            time.sleep(0.05)
        assert seen.endswith(b"web      | the new release starts\n"), seen
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_logs_show_control_characters_escaped_never_sent_to_the_terminal(deployed: dict[str, Any]) -> None:
    # A server logs what a request sent it (a form field, a JSON body): ESC sequences there would retitle, recolour or
    # rewrite the operator's terminal, a CR hide what came before it on the line.
    logs = Path(deployed["root"]) / "shared" / "logs"
    t = agent_module._log_time(time.time())
    hostile = "login failed for \x1b]0;pwned\x07\x1b[2J\x1b[1;31mroot\rHIDDEN\x9b31m tab\there\r\n"
    (logs / "R1.log").write_text(f"{t} {hostile}", newline="")
    done = subprocess.run(
        [sys.executable, AGENT_FILE],
        input=(json.dumps({"action": "logs", "root": deployed["root"], "lines": 1}) + "\n").encode(),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert not any(ord(c) < 32 and c not in "\t\n" or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)
    assert "login failed for \\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;31mroot\\x0dHIDDEN\\x9b31m tab\there\n" in out
