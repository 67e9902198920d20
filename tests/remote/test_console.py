"""warp logs, exec, shell and migrate on deployed hosts, run as users run them (the warp command) against two real SSH
hosts that a Django project (gunicorn, behind each host's Caddy) was deployed to with an --env-file."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote.account import app_account
from warptasks.remote.deploy import deploy
from warptasks.remote.front import app_id
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

from .deploy_helpers import assert_ok, drop_workdir, get, make_django_project, make_workdir
from .test_deploy import deploy_image, free_port_run
from .warp_runs import BIN, Warp

pytestmark = pytest.mark.remote

PATH = "/srv/console-site"
SECRET = "only-on-the-host-4711"


@dataclass
class Site:
    hosts: list[Any]
    warps: list[Warp]  # the warp command against each host

    def both(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """``warp ACTION --host A --host B ...``"""
        first = self.warps[0]
        argv = first.argv(action, "--host", self.hosts[1].host_string, *extra)
        return subprocess.run(
            argv,
            cwd=first.project,
            env=first.environment(),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    def sh(self, index: int, command: str) -> str:
        code, output = self.hosts[index].exec(command)
        assert code == 0, output
        return output


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    client = ensure_engine()
    hosts = ssh_hosts(client, 2, network="host", image=deploy_image(client))
    workdir = make_workdir("warp-console-")
    try:
        project = make_django_project(workdir / "site", "1", server="gunicorn")
        secrets_file = workdir / "secrets.env"
        secrets_file.write_text(f"CONSOLE_SECRET={SECRET}\n")
        ports = [free_port_run(), free_port_run()]
        targets = [
            HostTarget(h.address, h.user, h.port, app_port=port, listen="127.0.0.1") for h, port in zip(hosts, ports, strict=True)
        ]
        opts = DeploySettings.resolve(
            None, path=PATH, identity=hosts[0].key_filename, known_hosts=hosts[0].known_hosts, env_file=str(secrets_file)
        )
        assert_ok(deploy(targets, str(project), opts, say=print))
        yield Site(hosts, [Warp(h, project, PATH, port, workdir) for h, port in zip(hosts, ports, strict=True)])
    finally:
        remove_hosts(hosts)
        drop_workdir(workdir)


def _code(run: Any, timeout: float = 300) -> tuple[int, str]:
    return run.finish(timeout)


def test_exec_runs_in_the_live_releases_environment_with_shared_environment_and_passes_its_exit_code(site: Site) -> None:
    warp = site.warps[0]
    script = "import os, sys; print('secret=' + os.environ['CONSOLE_SECRET'], os.getcwd()); sys.exit(3)"
    code, output = warp.run("exec", "--", "python", "-c", script)
    live = site.sh(0, f"readlink -f {PATH}/current").strip()
    assert code == 3, output
    assert f"secret={SECRET} {live}" in output.splitlines()
    # The line that ran on the host carried no value: they were read from the release's values file.
    recorded = site.sh(0, f"cat {PATH}/current/.warp/deploy.json")
    assert "cmd-exec" in recorded and SECRET not in recorded
    code, output = warp.run("exec", "--", "python", "manage.py", "check")
    assert code == 0 and "System check identified no issues" in output, output


USER_TASKS = """from invoke import Collection
import warptasks

ns = Collection(warptasks.ns)
"""


def test_fab_with_its_own_host_flag_runs_logs_exec_and_config_on_that_host(site: Site) -> None:
    """The user's path: a tasks.py of warptasks' collection, fabric.yaml naming the deploy path, ``fab -H``."""
    warp, host = site.warps[0], site.hosts[0]
    fabdir = warp.workdir / "fab"
    fabdir.mkdir(exist_ok=True)
    (fabdir / "tasks.py").write_text(USER_TASKS)
    (fabdir / "fabric.yaml").write_text(f"warp:\n  deploy:\n    path: {PATH}\n    known_hosts: {host.known_hosts}\n")

    def fab(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [os.path.join(BIN, "fab"), "-c", "tasks", "-i", host.key_filename, "-H", host.host_string, *args]
        return subprocess.run(
            argv, cwd=fabdir, env=warp.environment(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )

    token = uuid.uuid4().hex
    assert get(f"{warp.url}?fab={token}")[0] == 200
    shown = fab("warp.logs", "--lines", "20", "--grep", token)
    assert shown.returncode == 0, shown.stderr
    assert f"GET /?fab={token} HTTP/1.1" in shown.stdout and "web" in shown.stdout, shown.stdout

    script = "import os, sys; print('secret=' + os.environ['CONSOLE_SECRET']); sys.exit(3)"
    ran = fab("warp.exec", "-c", f'python -c "{script}"')
    assert ran.returncode == 3, ran.stderr
    assert f"secret={SECRET}" in ran.stdout.splitlines(), ran.stdout
    # What follows -- is fab's own (a shell command it would run on the host, outside the release): fab refuses it
    # with a task (the fabric of today, NothingToDo), or warp.exec does, naming -c; nothing runs either way.
    marker = f"/tmp/fab-remainder-{token}"
    refused = fab("warp.exec", "--", "touch", marker)
    assert refused.returncode != 0, refused.stdout
    assert "NothingToDo" in refused.stderr or "the command goes in -c" in refused.stderr, refused.stderr
    assert site.sh(0, f"test -e {marker} && echo ran || echo absent").strip() == "absent"

    listed = fab("warp.config")
    assert listed.returncode == 0, listed.stderr
    assert "CONSOLE_SECRET=***" in listed.stdout.splitlines() and SECRET not in listed.stdout + listed.stderr
    changed = fab("warp.config", "--set", f"FAB_TOKEN={token}")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    try:
        revealed = fab("warp.config", "--reveal")
        assert f"FAB_TOKEN={token}" in revealed.stdout.splitlines() and f"CONSOLE_SECRET={SECRET}" in revealed.stdout
    finally:
        assert fab("warp.config", "--unset", "FAB_TOKEN").returncode == 0
    assert "FAB_TOKEN" not in fab("warp.config").stdout


def test_migrate_runs_the_releases_hook_on_the_host_and_a_missing_hook_names_its_file(site: Site) -> None:
    warp = site.warps[0]
    log = f"{PATH}/shared/data/migrations.log"
    before = site.sh(0, f"cat {log} 2>/dev/null || true").splitlines()
    code, output = warp.run("migrate")
    assert code == 0, output
    after = site.sh(0, f"cat {log}").splitlines()
    live = site.sh(0, f"readlink -f {PATH}/current").strip()
    assert after[: len(before)] == before and len(after) == len(before) + 1 and after[-1].endswith(live)
    code, output = warp.run("verify")
    assert code != 0 and "has no verify action hook" in output and ".warpdrive/action_hooks/verify" in output, output


def test_logs_follow_shows_a_request_made_after_it_started_and_ends_cleanly(site: Site) -> None:
    warp = site.warps[0]
    token = uuid.uuid4().hex
    run = warp.start("logs", "-f", "-n", "5")
    try:
        run.wait_for("web", timeout=60)  # the server's own lines (gunicorn's start) come first
        assert get(f"{warp.url}?made-after={token}")[0] == 200
        # The front's line of it (its format names the host and port), and the server's own (gunicorn's access log).
        run.wait_for(f'"GET 127.0.0.1:{warp.port}/?made-after={token} HTTP/1.1" 200', timeout=30)
        run.wait_for(f'"GET /?made-after={token} HTTP/1.1" 200', timeout=30)
        lines = [line for line in run.text().splitlines() if token in line]
        assert sorted(line.split(" | ")[0] for line in lines) == ["proxy", "web  "], lines
        run.signal(signal.SIGINT)  # Ctrl-C
        code, output = run.finish(timeout=30)
        assert code == 0 and "Traceback" not in output, output
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    # The follower on the host ended with the SSH channel: nothing is left reading the logs.
    deadline = time.monotonic() + 10
    while _followers(site, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _followers(site, 0)


def _followers(site: Site, index: int) -> list[str]:
    table = site.sh(index, "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null")
    return [line[:80] for line in table.splitlines() if "def _stdout_gone" in line]


def test_logs_since_and_grep_filter_and_never_show_another_apps_requests(site: Site) -> None:
    warp = site.warps[0]
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    assert get(f"{warp.url}?token={old}")[0] == 200
    time.sleep(3)
    assert get(f"{warp.url}?token={new}")[0] == 200
    # Another app's request on the same front, and a line naming no app: never this app's.
    home = "/var/lib/warp-front/logs/access.log"
    stranger = {"ts": time.time(), "request": {"uri": f"/?token={new}-theirs"}, "status": 200, "warp_app": app_id("/srv/x")}
    site.sh(0, f'echo {json.dumps(json.dumps(stranger))} >> {home}; echo \'{{"msg": "{new}-untagged"}}\' >> {home}')
    time.sleep(0.3)
    code, output = warp.run("logs", "--since", "2s", "--grep", "token=")
    assert code == 0, output
    assert new in output and old not in output and "theirs" not in output and "untagged" not in output
    assert all("token=" in line for line in output.splitlines()), output
    code, output = warp.run("logs", "-n", "1000", "--grep", old)
    assert code == 0 and old in output and new not in output, output
    code, output = warp.run("logs", "--since", "yesterday")
    assert code != 0 and "neither a duration nor a time" in output


def test_shell_on_a_host_is_interactive_in_the_servers_environment(site: Site) -> None:
    warp = site.warps[0]
    pid, fd = pty.fork()
    if pid == 0:  # the child: warp on a real terminal
        try:
            os.chdir(warp.project)
            os.execve(warp.argv("shell")[0], warp.argv("shell"), warp.environment())
        finally:
            os._exit(127)
    seen = b""
    try:
        # bash's prompt: the app's own account's, as its server (the test hosts log in as root)
        seen += _read_until(fd, b"$ ", 60)
        os.write(fd, b"echo MARK=${CONSOLE_SECRET}=$WARP_ACTION=$(id -un); tty; exit\n")
        mark = f"MARK={SECRET}=shell={app_account(PATH)}".encode()
        seen += _read_until(fd, mark, 30)
        if b"/dev/pts/" not in seen.split(mark, 1)[-1]:  # tty's line may have come in the same read as MARK's
            seen += _read_until(fd, b"/dev/pts/", 10)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, seen
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.close(fd)


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} did not come: {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 1))
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"the terminal closed before {wanted!r}: {seen[-2000:]!r}"
            seen += chunk
    return seen


def test_two_hosts_prefix_each_line_with_its_host_and_fail_when_one_does(site: Site) -> None:
    labels = [h.host_string for h in site.hosts]
    done = site.both("exec", "--", "python", "-c", "import os; print('secret', os.environ['CONSOLE_SECRET'])")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"[{label}] secret {SECRET}" for label in labels)
    site.sh(1, "touch /tmp/warp-console-fail-here")  # host-network containers share a hostname: a file tells them apart
    failing = "import os, sys; sys.exit(5 if os.path.exists('/tmp/warp-console-fail-here') else 0)"
    done = site.both("exec", "--", "python", "-c", failing)
    assert done.returncode == 1 and f"[{labels[1]}] exit code 5" in done.stderr, done.stdout + done.stderr
    done = site.both("logs", "-n", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for label in labels:
        mine = [line for line in lines if line.startswith(f"[{label}] ")]
        assert len(mine) == 3 and all(re.match(r"\[\S+\] ((web|proxy) +\| )?20\d\d-", line) for line in mine), lines


@pytest.fixture(scope="module")
def systemd_site() -> Iterator[tuple[Any, Warp]]:
    """The project deployed to a host booted with systemd: its server a unit whose output reaches the log through a
    FIFO (see the agent's ``_run_script``), the front a unit too."""
    from .test_deploy_systemd import SystemdHost

    workdir = make_workdir("warp-console-systemd-")
    machine = SystemdHost(ensure_engine(), workdir)
    try:
        project = make_django_project(workdir / "site", "1", server="gunicorn")
        opts = DeploySettings.resolve(
            None, path=PATH, identity=machine.keys.key_filename, known_hosts=machine.known_hosts, wheels=True, drain=1
        )
        assert_ok(deploy([HostTarget(machine.address, "root")], str(project), opts, say=print))
        host = SimpleNamespace(
            host_string=f"root@{machine.address}", key_filename=machine.keys.key_filename, known_hosts=machine.known_hosts
        )
        yield machine, Warp(host, project, PATH, 8080, workdir)
    finally:
        machine.remove()
        drop_workdir(workdir)


def test_logs_follow_on_a_systemd_host_shows_the_units_output_dated(systemd_site: tuple[Any, Warp]) -> None:
    machine, warp = systemd_site
    token = uuid.uuid4().hex
    run = warp.start("logs", "-f", "-n", "3")
    try:
        run.wait_for("web", timeout=60)
        assert get(f"http://{machine.address}:8080/?systemd={token}")[0] == 200
        run.wait_for(f'"GET /?systemd={token} HTTP/1.1" 200', timeout=30)  # the server's, through the unit's FIFO
        run.wait_for(f'"GET {machine.address}:8080/?systemd={token} HTTP/1.1" 200', timeout=30)  # the front's
        run.signal(signal.SIGINT)
        code, output = run.finish(timeout=30)
        assert code == 0, output
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    lines = [line for line in output.splitlines() if token in line]
    assert all(re.match(r"(web  |proxy) \| 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in lines), lines


def test_a_host_that_cannot_be_reached_is_said_and_fails_the_run_while_the_others_run(site: Site) -> None:
    warp = site.warps[0]
    argv = warp.argv("exec", "--host", "root@127.0.0.1:1", "--", "python", "-c", "print('ran')")
    env, stdin = warp.environment(), subprocess.DEVNULL
    done = subprocess.run(argv, cwd=warp.project, env=env, capture_output=True, text=True, timeout=120, stdin=stdin)
    assert done.returncode == 1 and done.stdout == f"[{site.hosts[0].host_string}] ran\n", done.stdout + done.stderr
    assert "[root@127.0.0.1:1] error: cannot reach root@127.0.0.1:1 over SSH" in done.stderr
