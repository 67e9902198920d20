"""A host without systemd: warptasks' own supervisor starts the server again after a crash, and deploys still switch
without a failed request (the warp command, as users run it, against one real sshd host with no systemd).

Each test runs with gunicorn and with Apache/mod_wsgi (the default): ``kill -9`` of gunicorn's master, or of
Apache's parent process, leaves their workers behind, still holding the port, which the supervisor has to clear
before the new server can bind it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts

from .deploy_helpers import Load, get, make_django_project, release_served, set_version
from .test_deploy import deploy_image, free_port_run
from .warp_runs import Warp

pytestmark = pytest.mark.remote

PATH = "/srv/supervised"


SERVERS = {"gunicorn": "gunicorn", "mod_wsgi": "apache2"}  # the server type, and what its processes are called


@pytest.fixture(scope="module", params=sorted(SERVERS))
def warp(request: pytest.FixtureRequest) -> Iterator[Warp]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = Path(tempfile.mkdtemp(prefix="warp-supervisor-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    try:
        project = make_django_project(workdir / "site", "1", server=request.param)
        site = Warp(host, project, PATH, free_port_run(), workdir, {"INVOKE_WARP_DEPLOY_DRAIN": "1"})
        site.ok("deploy")
        yield site
    finally:
        remove_hosts([host])
        shutil.rmtree(workdir, ignore_errors=True)


def live(state: dict[str, Any]) -> dict[str, Any]:
    return dict(next(r for r in state["releases"] if r["id"] == state["current"]))


def processes(warp: Warp) -> dict[int, tuple[int, str, int]]:
    """The host's processes: {pid: (session, command line, parent)}."""
    script = (
        "import json, os\n"
        "found = {}\n"
        "for n in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        stat = open('/proc/%s/stat' % n).read().rsplit(')', 1)[1].split()\n"
        "        cmd = open('/proc/%s/cmdline' % n, 'rb').read().replace(b'\\0', b' ').decode()\n"
        "    except (OSError, ValueError, IndexError):\n"
        "        continue\n"
        "    if stat[0] != 'Z':\n"
        "        found[n] = [int(stat[3]), cmd, int(stat[1])]\n"
        "print(json.dumps(found))\n"
    )
    code, output = warp.host.exec(["python3", "-c", script])
    assert code == 0, output
    return {int(pid): (sid, cmd, ppid) for pid, (sid, cmd, ppid) in json.loads(output.strip().splitlines()[-1]).items()}


def server_main(warp: Warp, supervisor: int) -> int:
    """The server's main process: the first of its name in the supervisor's session (a shell may run it)."""
    name = SERVERS[warp.project.joinpath(".warpdrive", "server_type").read_text().strip()]
    found = processes(warp)
    mine = {p for p, (sid, cmd, _) in found.items() if sid == supervisor and name in cmd}
    (main,) = [p for p in mine if found[p][2] not in mine]
    return main


def test_the_server_is_supervised_by_warptasks_own_supervisor_without_systemd(warp: Warp) -> None:
    assert warp.host.exec("test -d /run/systemd/system")[0] != 0  # really no systemd on this host
    state = warp.status()
    assert state["supervised"] is True and state["supervisor"] == "warp", state
    assert "warptasks' own supervisor" in state["supervision"] and "systemd does not run on this host" in state["supervision"]
    shown = warp.ok("status")
    assert "supervised by warptasks' own supervisor: started again when it crashes, but not at boot" in shown, shown
    assert "not supervised" not in shown


def test_kill_9_of_the_servers_main_process_and_it_serves_again_within_seconds(warp: Warp) -> None:
    before = live(warp.status())
    supervisor, child = before["pid"], before["server_pid"]
    assert supervisor and child and child != supervisor, before
    main = server_main(warp, supervisor)  # the supervisor's child, or a process the shell it runs started
    name = SERVERS[warp.project.joinpath(".warpdrive", "server_type").read_text().strip()]
    code, output = warp.host.exec(["kill", "-9", str(main)])
    assert code == 0, output
    begin = time.monotonic()
    while True:
        try:
            status, body = get(warp.url, timeout=2)
        except OSError:
            status, body = 0, ""
        after = live(warp.status()) if status == 200 else {}
        if status == 200 and after.get("restarts") == 1 and after.get("server_pid") not in (None, child):
            break
        assert time.monotonic() - begin < 20, f"not serving again within 20s: {status} {body[:200]} {after}"
        time.sleep(0.2)
    print(f"served again {time.monotonic() - begin:.1f}s after the kill")
    assert time.monotonic() - begin < 10
    assert after["pid"] == supervisor and body.startswith("release 1")
    # The killed server's workers were cleared: every process of the server runs under the new one.
    now = processes(warp)
    assert main not in now and all(sid == supervisor for sid, cmd, _ in now.values() if name in cmd), now
    assert server_main(warp, supervisor) != main
    code, log = warp.host.exec(f"cat {PATH}/shared/logs/{warp.status()['current']}.log")
    # The supervisor's child is the server, or the shell running it, which then ends as its server did.
    how = "was killed by SIGKILL" if child == main else "exited with code 137"
    assert f"[warp supervisor] the server (pid {child}) {how} after" in log, log[-3000:]
    assert f"[warp supervisor] the server started again: pid {after['server_pid']} (restart 1)" in log, log[-3000:]
    shown = warp.ok("status")
    assert f"app process pid {after['server_pid']} (restarts so far: 1)" in shown, shown


def test_a_deploy_after_the_restart_switches_with_no_failed_request_and_the_old_server_is_gone(warp: Warp) -> None:
    old = live(warp.status())
    set_version(warp.project, "2")
    with Load([warp.url], max_requests=5000, max_seconds=300) as load:
        deadline = time.monotonic() + 30
        while load.ok < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        warp.ok("deploy")
        settle = time.monotonic() + 30
        while "2" not in load.seen and time.monotonic() < settle:
            time.sleep(0.1)
        time.sleep(1)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20 and {"1", "2"} <= load.seen
    assert release_served(warp.url) == "2"
    state = warp.status()
    new = live(state)
    assert new["id"] != old["id"] and new["restarts"] == 0 and state["supervisor"] == "warp", state
    retired = next(r for r in state["releases"] if r["id"] == old["id"])
    assert retired["status"] == "retired" and retired["pid"] is None, retired
    # Neither the old supervisor nor anything of its session (the server, its workers) runs any more.
    now = processes(warp)
    assert old["pid"] not in now and not [p for p, (sid, _, _) in now.items() if sid == old["pid"]], now
    code, log = warp.host.exec(f"cat {PATH}/shared/logs/{old['id']}.log")
    # Stopped with the server's own graceful signal (gunicorn: SIGTERM, Apache: SIGWINCH), and not started again.
    assert f"[warp supervisor] {old['stop_signal']}: stopping the server" in log, log[-3000:]
    assert log.rstrip().endswith("[warp supervisor] stopped") and "not started again" in log, log[-3000:]
