"""warp deploy and rollback when things go wrong, run as users run them (the warp command) against one real host.

A deploy interrupted with Ctrl-C or SIGTERM cleans up; a killed one's lock
lapses; two deploys never run side by side; the health check says what it
accepts; a rollback checks its target as its deploy did and, failing,
changes nothing; ``--to`` takes only a release of the host; a request in
flight during the switch completes.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts

from .deploy_helpers import make_django_project, release_served, set_version
from .test_deploy import deploy_image, free_port_run
from .warp_runs import Warp

pytestmark = pytest.mark.remote

PATH = "/srv/fault-site"
_versions = count(2)


@pytest.fixture(scope="module")
def warp() -> Iterator[Warp]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = Path(tempfile.mkdtemp(prefix="warp-faults-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    try:
        project = make_django_project(workdir / "site", "1", server="gunicorn")
        env = {"INVOKE_WARP_DEPLOY_DRAIN": "0"}
        env["INVOKE_WARP_DEPLOY_HEALTH_TIMEOUT"] = "30"
        site = Warp(host, project, PATH, free_port_run(), workdir, env)
        site.ok("deploy")
        yield site
    finally:
        remove_hosts([host])
        shutil.rmtree(workdir, ignore_errors=True)


def next_version(warp: Warp) -> str:
    version = f"v{next(_versions)}"
    set_version(warp.project, version)
    return version


def locked(warp: Warp) -> bool:
    return warp.host.exec(f"test -d {PATH}/.warp-deploy.lock")[0] == 0


# -- item 9: an interrupted deploy cleans up ---------------------------------------


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_during_the_health_check_cleans_up_and_the_next_deploy_goes_through(
    warp: Warp, sent: signal.Signals
) -> None:
    served = release_served(warp.url)
    live = warp.status()["current"]
    wsgi = warp.project / "mysite" / "wsgi.py"
    original = wsgi.read_text()
    next_version(warp)
    wsgi.write_text("import time\ntime.sleep(15)  # a slow start: the health check waits\n" + original)
    try:
        run = warp.start("deploy")
        run.wait_for("; checking /")
        time.sleep(1.5)
        run.signal(sent)
        code, text = run.finish(timeout=120)
    finally:
        wsgi.write_text(original)
    assert code != 0 and f"interrupted by {sent.name}" in text and "cleaning up" in text, text[-3000:]
    state = warp.status()
    interrupted = next(r for r in state["releases"] if r["id"] == run.release_id())
    assert state["current"] == live and interrupted["status"] == "failed" and interrupted["pid"] is None, state
    assert not locked(warp)
    assert release_served(warp.url) == served
    version = next_version(warp)
    warp.ok("deploy")
    assert release_served(warp.url) == version
