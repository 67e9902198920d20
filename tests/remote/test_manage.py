"""Day-2 operations on a real SSH host, as users run them (the warp command): config list/set/unset, restart under
load with zero failed requests (and with a failing check, the old server still serving), stop and start, the audit
log, --json; then restart, stop and start on a host where systemd runs the servers as units.

The app is a small WSGI app under gunicorn that answers ``release <version>-<GREETING>``: what the server's
environment holds is what the test reads back over HTTP, through the host's front (Caddy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote import manage
from warptasks.remote.commands import Change
from warptasks.remote.hosts import HostTarget
from warptasks.remote.rollback import status
from warptasks.settings import DeploySettings

from .deploy_helpers import Load, drop_workdir, get, make_django_project, make_workdir, release_served
from .test_deploy import deploy_image, free_port_run
from .test_deploy_systemd import SERVER_UNIT, SystemdHost

pytestmark = pytest.mark.remote

PATH = "/srv/ops-site"
BIN = os.path.dirname(sys.executable)
SECRET = "s3cr3t$value`x`"
HOST_ENV = f"GREETING=hello\nSECRET_KEY='{SECRET}'\n"

APP = """import os

VERSION = "{version}"


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/broken":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such page\\n"]
    body = "release {{}}-{{}}\\n".format(VERSION, os.environ.get("GREETING", "none"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""


def write_app(project: Path, version: str) -> None:
    (project / "wsgi.py").write_text(APP.format(version=version))
    os.chmod(project / "wsgi.py", 0o644)


@dataclass
class Site:
    host: Any
    project: Path
    home: Path
    port: int
    env_file: Path
    said: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def label(self) -> str:
        return self.host.host_string

    def reach(self) -> list[str]:
        h = self.host
        return ["--host", h.host_string, "--identity", h.key_filename, "--known-hosts", h.known_hosts, "--path", PATH]

    def warp(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.home)}
        return subprocess.run(
            [os.path.join(BIN, "warp"), *args],
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            input=stdin if stdin is not None else "",
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.warp(*args, stdin=stdin)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result.stdout

    def sh(self, command: str) -> str:
        code, output = self.host.exec(command)
        assert code == 0, output
        return output

    def live(self) -> dict[str, Any]:
        state = json.loads(self.ok("status", *self.reach(), "--json"))["hosts"][self.label]
        return next(r for r in state["releases"] if r["id"] == state["current"])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = make_workdir("warp-manage-")
    try:
        home = workdir / "home"
        home.mkdir()
        project = workdir / "site"
        (project / ".warpdrive").mkdir(parents=True)
        (project / ".warpdrive" / "server_type").write_text("gunicorn\n")
        write_app(project, "1")
        for path in [project, *project.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        env_file = workdir / "host.env"
        env_file.write_text(HOST_ENV)
        yield Site(host, project, home, free_port_run(), env_file)
    finally:
        remove_hosts([host])
        drop_workdir(workdir)


def _deploy(site: Site, *more: str) -> dict[str, Any]:
    result = site.warp("deploy", *site.reach(), "--port", str(site.port), "--listen", "127.0.0.1", "--json", *more)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    site.said = result.stderr  # with --json, the progress lines
    return json.loads(result.stdout)


def test_config_can_be_set_before_the_first_deploy(site: Site) -> None:
    out = site.ok("config", *site.reach(), "set", "EARLY=1")
    assert "shared/environment: set EARLY" in out
    assert site.sh(f"cat {PATH}/shared/environment").splitlines()[-1] == 'EARLY="1"'
    refused = site.warp("restart", *site.reach())
    assert refused.returncode != 0 and "no release is live" in refused.stdout + refused.stderr


def test_deploy_and_status_answer_json_of_one_shape(site: Site) -> None:
    data = _deploy(site, "--env-file", str(site.env_file))
    # --env-file replaces the host's file whole: the name only the host had is named (never its value).
    assert "drops EARLY" in site.said and "warp config set" in site.said
    assert data["format"] == 1 and data["command"] == "deploy" and data["ok"] is True, data
    [(label, result)] = data["hosts"].items()
    assert label == site.label and result["ok"] is True and result["release"] and "live" in result["message"]
    assert release_served(site.url) == "1-hello"
    state = json.loads(site.ok("status", *site.reach(), "--json"))
    assert state["format"] == 1 and state["command"] == "status" and state["ok"] is True
    assert state["hosts"][site.label]["current"] == result["release"] and state["hosts"][site.label]["ok"] is True


def test_config_lists_names_with_values_masked_unless_revealed(site: Site) -> None:
    shown = site.ok("config", *site.reach())
    assert shown.splitlines() == ["GREETING=***", "SECRET_KEY=***"]
    assert SECRET not in shown
    revealed = site.ok("config", *site.reach(), "--reveal")
    assert revealed.splitlines() == ["GREETING=hello", f"SECRET_KEY={SECRET}"]
    data = json.loads(site.ok("config", *site.reach(), "--json"))
    assert data["command"] == "config" and data["hosts"][site.label]["names"] == ["GREETING", "SECRET_KEY"]
    assert data["hosts"][site.label]["values"] == {"GREETING": "***", "SECRET_KEY": "***"}


def test_config_set_with_restart_changes_what_the_app_sees_with_no_failed_request(site: Site) -> None:
    before = site.live()
    with Load([site.url, site.url]) as load:
        out = site.ok("config", *site.reach(), "set", "GREETING=changed", "--restart")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 0 and "1-hello" in load.seen, load.seen
    assert release_served(site.url) == "1-changed"
    assert "shared/environment: set GREETING" in out and "restarted" in out
    after = site.live()
    assert after["id"] == before["id"] and after["port"] != before["port"] and after["pid"] != before["pid"]
    assert site.sh(f"stat -c %a {PATH}/shared/environment").strip() == "600"
    # The other value is as it was, the comment-free file written literally.
    assert f"SECRET_KEY='{SECRET}'" in site.sh(f"cat {PATH}/shared/environment")


def test_config_set_reads_a_value_from_stdin_and_unset_removes_it(site: Site) -> None:
    out = site.ok("config", *site.reach(), "--set", "API_TOKEN", stdin="tok$en `never run`\n")
    assert "applies when the server next starts" in out
    values = json.loads(site.ok("config", *site.reach(), "--reveal", "--json"))["hosts"][site.label]["values"]
    assert values["API_TOKEN"] == "tok$en `never run`"
    site.ok("config", *site.reach(), "unset", "API_TOKEN")
    assert "API_TOKEN" not in site.ok("config", *site.reach())


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (["set", "1BAD=x"], "is not an environment variable name"),
        (["set", "GREETING=two\nlines"], "line break"),
        (["unset", "NOT-A-NAME"], "is not an environment variable name"),
    ],
)
def test_a_bad_config_change_is_a_clear_error_and_changes_nothing(site: Site, words: list[str], says: str) -> None:
    before = site.sh(f"sha256sum {PATH}/shared/environment")
    result = site.warp("config", *site.reach(), *words)
    assert result.returncode != 0 and says in result.stderr, result.stderr
    assert site.sh(f"sha256sum {PATH}/shared/environment") == before


def test_restart_under_load_fails_no_request(site: Site) -> None:
    before = site.live()
    with Load([site.url, site.url]) as load:
        data = json.loads(site.ok("restart", *site.reach(), "--json"))
    assert load.failures == [] and load.ok > 0, load.failures[:5]
    assert data["command"] == "restart" and data["ok"] is True
    result = data["hosts"][site.label]
    assert result["port"] != before["port"] and result["previous_port"] == before["port"]
    assert site.live()["port"] == result["port"] and release_served(site.url) == "1-changed"


def test_a_restart_whose_check_fails_leaves_the_old_server_serving(site: Site) -> None:
    before = site.live()
    with Load([site.url]) as load:
        result = site.warp("restart", *site.reach(), "--health", "/broken")
    assert result.returncode != 0 and "keeps serving" in result.stdout + result.stderr, result.stdout + result.stderr
    assert load.failures == [] and load.ok > 0, load.failures[:5]
    after = site.live()
    assert (after["port"], after["pid"]) == (before["port"], before["pid"])
    assert release_served(site.url) == "1-changed"


def test_stop_then_start(site: Site) -> None:
    site.ok("stop", *site.reach())
    status_code, _ = get(site.url)
    assert status_code >= 500  # the front answers, nothing behind it
    shown = site.ok("status", *site.reach())
    assert "STOPPED on purpose" in shown
    refused = site.warp("restart", *site.reach())
    assert refused.returncode != 0 and "warp start" in refused.stdout + refused.stderr
    site.ok("start", *site.reach())
    assert release_served(site.url) == "1-changed"
    assert "STOPPED" not in site.ok("status", *site.reach())


def test_rollback_and_deploy_after_restarts(site: Site) -> None:
    first = site.live()
    write_app(site.project, "2")
    assert _deploy(site)["ok"] is True
    assert release_served(site.url) == "2-changed"
    site.ok("restart", *site.reach())
    # The restart moved release 2's server to the port release 1 was recorded on: the rollback starts beside it.
    assert site.live()["port"] == first["port"]
    with Load([site.url]) as load:
        site.ok("rollback", *site.reach())
    assert load.failures == [], load.failures[:5]
    assert release_served(site.url) == "1-changed" and site.live()["id"] == first["id"]


def test_the_audit_log_lists_every_action_with_its_result_and_no_secret(site: Site) -> None:
    data = json.loads(site.ok("audit", *site.reach(), "--limit", "100", "--json"))
    assert data["command"] == "audit" and data["ok"] is True
    entries = data["hosts"][site.label]["entries"]
    ends = [(e["action"], e["result"]) for e in entries if e["result"] != "begun"]
    assert ends == [
        ("config", "ok"),  # set EARLY, before the first deploy
        ("restart", "failed"),  # nothing live yet
        ("deploy", "ok"),
        ("config", "ok"),  # set GREETING --restart
        ("config", "ok"),  # set API_TOKEN
        ("config", "ok"),  # unset API_TOKEN
        ("restart", "ok"),
        ("restart", "failed"),  # --health /broken
        ("stop", "ok"),
        ("restart", "failed"),  # refused: stopped on purpose
        ("start", "ok"),
        ("deploy", "ok"),
        ("restart", "ok"),
        ("rollback", "ok"),
    ], ends
    begun = [e["action"] for e in entries if e["result"] == "begun"]
    assert begun == [a for a, _ in ends]
    config = [e for e in entries if e["action"] == "config" and e["result"] == "ok"]
    assert config[1]["details"]["set"] == ["GREETING"] and config[1]["details"]["restart"] is True
    assert config[3]["details"]["unset"] == ["API_TOKEN"]
    failed = [e for e in entries if e["result"] == "failed"]
    assert "no release is live" in failed[0]["error"]
    assert "/broken" in failed[1]["error"] and "warp start" in failed[2]["error"]
    assert all(e["by"] and e["from"] and e["time"].endswith("Z") for e in entries)
    log = site.sh(f"cat {PATH}/shared/audit.log")
    for secret in (SECRET, "changed", "tok$en"):
        assert secret not in log
    assert site.sh(f"stat -c %a {PATH}/shared/audit.log").strip() == "640"
    shown = site.ok("audit", *site.reach(), "--limit", "2").splitlines()
    assert len(shown) == 2 and " rollback ok by " in shown[-1]


# -- a host where systemd runs the servers --------------------------------------------------------------------------

SYSTEMD_PATH = "/srv/sys-site"  # the path SERVER_UNIT is named for


@pytest.fixture(scope="module")
def systemd_host() -> Iterator[SystemdHost]:
    workdir = make_workdir("warp-manage-systemd-")
    machine = SystemdHost(ensure_engine(), workdir)
    try:
        yield machine
    finally:
        machine.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def test_restart_stop_and_start_with_systemd_units(systemd_host: SystemdHost) -> None:
    from warptasks.remote.deploy import deploy

    host = systemd_host
    workdir = Path(host.known_hosts).parent
    project = make_django_project(workdir / "site", "1", server="gunicorn")
    opts = DeploySettings.resolve(
        None, path=SYSTEMD_PATH, identity=host.keys.key_filename, known_hosts=host.known_hosts, wheels=True, drain=1
    )
    target = HostTarget(host.address, "root")
    url = f"http://{host.address}:8080/"
    results = deploy([target], str(project), opts, say=print)
    assert all(r.ok for r in results), results
    first, second = SERVER_UNIT.format(port=8081), SERVER_UNIT.format(port=8082)

    def enabled(unit: str) -> str:
        return host.container.exec_run(["systemctl", "is-enabled", unit]).output.decode().strip()

    def active(unit: str) -> str:
        return host.container.exec_run(["systemctl", "is-active", unit]).output.decode().strip()

    with Load([url, url]) as load:
        outcome = manage.restart([target], opts, say=print)
    assert all(r.ok for r in outcome.results), outcome.results
    assert load.failures == [] and load.ok > 0, load.failures[:5]
    assert (active(second), enabled(second)) == ("active", "enabled")
    assert (active(first), enabled(first)) == ("inactive", "disabled")
    assert release_served(url) == "1"

    outcome = manage.change_config([target], opts, Change({"DEBUG_LEVEL": "3"}), restart=True, say=print)
    assert all(r.ok for r in outcome.results), outcome.results
    assert (active(first), enabled(first)) == ("active", "enabled") and active(second) == "inactive"

    assert all(r.ok for r in manage.stop([target], opts, say=print).results)
    assert (active(first), enabled(first)) == ("inactive", "disabled")
    state = status([target], opts)[target.label]
    live = next(r for r in state["releases"] if r["id"] == state["current"])
    assert live["pid"] is None and live["stopped"]
    assert all(r.ok for r in manage.start([target], opts, say=print).results)
    assert (active(first), enabled(first)) == ("active", "enabled")
    assert release_served(url) == "1"
