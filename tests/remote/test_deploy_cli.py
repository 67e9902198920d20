"""warp deploy / status / rollback as users run them: the warp command, inv with invoke.yaml,
and fab -H, against a real SSH host that installs from the package index (gunicorn)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts

from .deploy_helpers import make_django_project, release_served, set_version
from .test_deploy import deploy_image, free_port_run

pytestmark = pytest.mark.remote

PATH = "/srv/cli-site"
BIN = os.path.dirname(sys.executable)

USER_TASKS = """from invoke import Collection
import warptasks

ns = Collection(warptasks.ns)
"""


@dataclass
class Site:
    host: Any
    project: Path
    home: Path
    port: int
    known_hosts: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def run(self, program: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        # HOME is a fresh folder: nothing from this machine's ~/.ssh is used.
        env = {**os.environ, "HOME": str(self.home)}
        return subprocess.run(
            [os.path.join(BIN, program), *args], cwd=cwd or self.project, capture_output=True, text=True, timeout=900, env=env
        )

    def reach(self, known_hosts: str | None = None) -> list[str]:
        host = self.host
        return [
            "--host",
            host.host_string,
            "--identity",
            host.key_filename,
            "--known-hosts",
            known_hosts or self.known_hosts,
            "--path",
            PATH,
        ]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = Path(tempfile.mkdtemp(prefix="warp-deploy-cli-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    home = workdir / "home"
    home.mkdir()
    try:
        project = make_django_project(workdir / "site", "1", server="gunicorn")
        yield Site(host, project, home, free_port_run(), host.known_hosts)
    finally:
        remove_hosts([host])
        shutil.rmtree(workdir, ignore_errors=True)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_warp_deploy_installs_from_the_index_and_status_reports_it(site: Site) -> None:
    out = _ok(site.run("warp", "deploy", *site.reach(), "--port", str(site.port), "--listen", "127.0.0.1"))
    assert "install requirements" in out and "wheels" not in out
    # Hosts deploy in parallel with step output hidden: each step still says, per host, how long it took.
    assert re.search(r"^\[[^]]+\] \[\d+/\d+\] install requirements: done in \d+\.\ds$", out, re.M), out
    assert f"ok   {site.host.host_string}: live:" in out
    assert release_served(site.url) == "1"
    shown = _ok(site.run("warp", "status", *site.reach()))
    assert "current 2" in shown and "server pid" in shown and "NOT RUNNING" not in shown and "health: 200" in shown


def test_redeploying_the_same_source_changes_nothing_unless_forced(site: Site) -> None:
    releases = site.host.exec(f"ls {PATH}/releases")[1].split()
    out = _ok(site.run("warp", "deploy", *site.reach(), "--port", str(site.port), "--listen", "127.0.0.1"))
    assert f"unchanged: {releases[-1]} stays live" in out
    assert site.host.exec(f"ls {PATH}/releases")[1].split() == releases
    out = _ok(site.run("warp", "deploy", *site.reach(), "--port", str(site.port), "--listen", "127.0.0.1", "--force"))
    assert "skip install requirements" in out
    assert len(site.host.exec(f"ls {PATH}/releases")[1].split()) == len(releases) + 1
    assert release_served(site.url) == "1"


def test_a_host_named_in_ssh_config_is_reached_by_its_name(site: Site) -> None:
    ssh = site.home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "config").write_text(
        f"Host web-alias\n    HostName {site.host.address}\n    Port {site.host.port}\n    User root\n"
        f"    IdentityFile {site.host.key_filename}\n"
    )
    try:
        set_version(site.project, "1b")
        out = _ok(
            site.run(
                "warp",
                "deploy",
                "--host",
                "web-alias",
                "--known-hosts",
                site.known_hosts,
                "--path",
                PATH,
                "--port",
                str(site.port),
                "--listen",
                "127.0.0.1",
            )
        )
        assert "ok   web-alias: live:" in out and "(rsync)" in out
        assert release_served(site.url) == "1b"
    finally:
        (ssh / "config").unlink()
        set_version(site.project, "1")


def test_an_unknown_host_key_is_refused_unless_accepted(site: Site) -> None:
    empty = site.home / "empty_known_hosts"
    empty.write_text("")
    refused = site.run("warp", "status", *site.reach(str(empty)))
    assert refused.returncode != 0 and "not in known_hosts" in refused.stdout + refused.stderr
    accepted = site.run("warp", "status", *site.reach(str(empty)), "--accept-unknown-host")
    assert accepted.returncode == 0, accepted.stderr


def test_a_changed_host_key_is_refused(site: Site) -> None:
    forged = site.home / "forged_known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(site.home / "other")], check=True)
    other = (site.home / "other.pub").read_text().split()
    forged.write_text(f"[127.0.0.1]:{site.host.port} {other[0]} {other[1]}\n")
    refused = site.run("warp", "status", *site.reach(str(forged)), "--accept-unknown-host")
    assert refused.returncode != 0 and "CHANGED" in refused.stdout + refused.stderr


def test_inv_deploys_to_the_hosts_named_in_invoke_yaml(site: Site) -> None:
    set_version(site.project, "2")
    host = site.host
    (site.project / "tasks.py").write_text(USER_TASKS)
    (site.project / "invoke.yaml").write_text(
        "warp:\n  deploy:\n"
        f"    hosts:\n      - host: {host.host_string}\n        port: {site.port}\n        listen: 127.0.0.1\n"
        f"    path: {PATH}\n    identity: {host.key_filename}\n    known_hosts: {site.known_hosts}\n    keep: 2\n"
    )
    try:
        _ok(site.run("inv", "warp.deploy"))
        assert release_served(site.url) == "2"
        shown = _ok(site.run("inv", "warp.status"))
        assert "health: 200" in shown
    finally:
        (site.project / "tasks.py").unlink()
        (site.project / "invoke.yaml").unlink()


def test_fab_with_its_own_host_flag_deploys_and_warp_rolls_back(site: Site) -> None:
    set_version(site.project, "3")
    fabdir = site.home / "fab"
    fabdir.mkdir(exist_ok=True)
    (fabdir / "fabfile.py").write_text(USER_TASKS)
    (fabdir / "fabric.yaml").write_text(
        f"warp:\n  project: {site.project}\n  deploy:\n    path: {PATH}\n    port: {site.port}\n    listen: 127.0.0.1\n"
        f"    known_hosts: {site.known_hosts}\n"
    )
    out = _ok(site.run("fab", "-i", site.host.key_filename, "-H", site.host.host_string, "warp.deploy", cwd=fabdir))
    assert "ok   " in out
    assert release_served(site.url) == "3"
    _ok(site.run("warp", "rollback", *site.reach()))
    assert release_served(site.url) == "2"
