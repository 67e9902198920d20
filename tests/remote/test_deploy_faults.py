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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts

from .deploy_helpers import get, make_django_project, release_served, set_version
from .test_deploy import deploy_image, free_port_run
from .warp_runs import Warp, sigkill, statuses

pytestmark = pytest.mark.remote

PATH = "/srv/fault-site"
LEASE = 6
_versions = count(2)


@pytest.fixture(scope="module")
def warp() -> Iterator[Warp]:
    client = ensure_engine()
    (host,) = ssh_hosts(client, 1, network="host", image=deploy_image(client))
    workdir = Path(tempfile.mkdtemp(prefix="warp-faults-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    try:
        project = make_django_project(workdir / "site", "1", server="gunicorn")
        # A short lease, so a killed deploy's lock lapses within the next deploy's lock wait (10s).
        env = {"INVOKE_WARP_DEPLOY_LOCK_LEASE": str(LEASE), "INVOKE_WARP_DEPLOY_DRAIN": "0"}
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


# -- item 10: the lock is a lease, renewed while the deploy runs ------------------------


def test_a_killed_deploys_lock_lapses_and_the_next_deploy_takes_it_over(warp: Warp) -> None:
    next_version(warp)
    killed = warp.start("deploy")
    killed.wait_for("] [1/")  # building: the lock is held
    sigkill(killed)
    assert locked(warp)
    version = next_version(warp)
    text = warp.ok("deploy")  # no --break-lock: the lease lapses within the lock wait
    assert "took over the lapsed lock of" in text, text[-3000:]
    assert release_served(warp.url) == version


def test_two_deploys_at_once_never_run_side_by_side(warp: Warp) -> None:
    version = next_version(warp)
    first = warp.start("deploy", pause_at="build")
    first.wait_paused()
    time.sleep(2.5 * LEASE)  # longer than its lease: it holds only because it is renewed
    code, text = warp.run("deploy", env={"INVOKE_WARP_DEPLOY_LOCK_WAIT": "2"})
    assert code != 0 and "lock held by" in text and "pid" in text, text[-3000:]
    first.go()
    code, text = first.finish()
    assert code == 0, text[-3000:]
    assert release_served(warp.url) == version


def test_a_deploy_that_lost_its_lock_fails_cleanly_and_leaves_the_new_holder_alone(warp: Warp) -> None:
    live, served = warp.status()["current"], release_served(warp.url)
    next_version(warp)
    run = warp.start("deploy", pause_at="build")
    run.wait_paused()
    # Another deploy has the lock now (as after a lease that lapsed while this one was cut off).
    holder = '{"owner": "someone else", "token": "theirs", "since": "now"}'
    code, output = warp.host.exec(f"echo '{holder}' > {PATH}/.warp-deploy.lock/owner.json")
    assert code == 0, output
    time.sleep(LEASE / 3 + 1)
    run.go()
    code, text = run.finish()
    try:
        assert code != 0 and "no longer this deploy's" in text, text[-3000:]
        assert warp.host.exec(f"cat {PATH}/.warp-deploy.lock/owner.json")[1].count("someone else") == 1
        state = warp.status()
        assert state["current"] == live and statuses(state)[run.release_id()] == "failed"
        assert release_served(warp.url) == served
    finally:
        warp.host.exec(f"rm -rf {PATH}/.warp-deploy.lock")


# -- item 13: what the health check accepts --------------------------------------------


@contextmanager
def _with_settings(warp: Warp, text: str) -> Iterator[None]:
    """The project's settings ending with ``text`` for a while."""
    settings = warp.project / "mysite" / "settings.py"
    original = settings.read_text()
    settings.write_text(original + "\n" + text + "\n")
    try:
        yield
    finally:
        settings.write_text(original)


def test_without_health_a_project_whose_root_is_404_deploys(warp: Warp) -> None:
    # django-admin startproject with DEBUG off answers 404 at /: loaded and answering is enough.
    next_version(warp)
    urls = warp.project / "mysite" / "urls.py"
    original = urls.read_text()
    urls.write_text(original.replace("path('', views.home), ", ""))
    try:
        warp.ok("deploy")
        assert get(warp.url)[0] == 404
    finally:
        urls.write_text(original)


def test_a_redirect_to_https_is_an_answer_not_followed(warp: Warp) -> None:
    next_version(warp)
    with _with_settings(warp, "SECURE_SSL_REDIRECT = True"):
        warp.ok("deploy")
        warp.ok("deploy", "--health", "/admin/login/", "--force")


def test_a_health_path_that_is_404_fails_at_once_naming_the_option(warp: Warp) -> None:
    live = warp.status()["current"]
    next_version(warp)
    begin = time.monotonic()
    code, text = warp.run("deploy", "--health", "/no-such-page/", env={"INVOKE_WARP_DEPLOY_HEALTH_TIMEOUT": "300"})
    assert code != 0 and "HTTP 404" in text and "--health" in text, text[-3000:]
    assert time.monotonic() - begin < 120  # not the 300s timeout
    assert warp.status()["current"] == live


# -- item 14: a request in flight during the switch completes -----------------------------


def test_a_request_in_flight_when_the_old_gunicorn_stops_completes(warp: Warp) -> None:
    next_version(warp)
    warp.ok("deploy")  # a live release that serves its pages (the ones above answer 404 or redirect at /)
    old = release_served(warp.url)
    version = next_version(warp)
    run = warp.start("deploy", pause_at="switch")
    run.wait_paused()
    answers: list[tuple[int, str]] = []
    slow = threading.Thread(target=lambda: answers.append(get(warp.url + "slow/?seconds=3", timeout=30)))
    slow.start()
    time.sleep(0.5)  # the request is in the old server before the switch
    run.go()
    code, text = run.finish()
    slow.join(timeout=30)
    assert code == 0, text[-3000:]
    assert answers == [(200, f"release {old} slow\n")], (answers, text[-2000:])
    assert "SIGTERM" in text and "old server of" in text
    assert release_served(warp.url) == version


# -- item 17 and item 8: rollback -----------------------------------------------------


def test_a_rollback_checks_its_target_as_its_deploy_did(warp: Warp) -> None:
    # Three releases whose / answers 500 (the home page needs a table not there yet), deployed with a health path
    # that works (/admin/login/). A rollback given no --health must check that path, not /.
    views = warp.project / "mysite" / "views.py"
    ids = []
    for _ in range(3):
        next_version(warp)
        views.write_text(views.read_text() + "\n\ndef home(request):\n    raise RuntimeError('no table yet')\n")
        run = warp.start("deploy", "--health", "/admin/login/")
        code, text = run.finish()
        assert code == 0, text[-3000:]
        ids.append(run.release_id())
    next_version(warp)  # the page works again for the tests that follow
    text = warp.ok("rollback")
    assert f"-> {ids[1]}" in text, text[-3000:]
    state = warp.status()
    assert state["current"] == ids[1] and statuses(state)[ids[2]] == "rolled-back"
    assert get(warp.url + "admin/login/")[0] == 200


def test_a_failed_rollback_changes_nothing_and_a_later_one_finds_the_same_target(warp: Warp) -> None:
    before = warp.status()
    code, text = warp.run("rollback", "--health", "/no-such-page/")
    assert code != 0 and "HTTP 404" in text and "--health" in text, text[-3000:]
    target = text.split("rolling back ", 1)[1].split(" -> ", 1)[1].split()[0]
    after = warp.status()
    assert after["current"] == before["current"] and statuses(after) == statuses(before)
    assert not locked(warp)
    text = warp.ok("rollback")
    assert f"-> {target}" in text and warp.status()["current"] == target


def test_rollback_to_takes_only_a_release_of_the_host(warp: Warp) -> None:
    listing = warp.host.exec(f"ls -a {PATH} {PATH}/releases /srv")[1]
    current = warp.status()["current"]
    code, text = warp.run("rollback", "--to", "../../x")
    assert code != 0 and "not a release id" in text, text[-2000:]
    code, text = warp.run("rollback", "--to", "20990101T000000000Z")
    assert code != 0 and "there is no release 20990101T000000000Z" in text, text[-2000:]
    code, text = warp.run("rollback", "--to", current)
    assert code != 0 and "live already" in text, text[-2000:]
    assert warp.host.exec(f"ls -a {PATH} {PATH}/releases /srv")[1] == listing
    assert warp.status()["current"] == current and not locked(warp)
