"""A normal mod_wsgi start logs no Apache error: the MPM settings warp computes are ones Apache agrees with.

mod_wsgi-express derives the event MPM's MinSpareThreads from --initial-workers when no --minimum-spare-workers
is given: with every worker started up front (--initial-workers 1) that was every thread, so Apache logged
"server is within MinSpareThreads of MaxRequestWorkers, consider raising the MaxRequestWorkers setting" at error
level on each start. The real server, real requests, its real log.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import free_port, get, serving, warp, write

SLOW_WSGI = """
import time

def application(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def directives(conf: str) -> dict[str, int]:
    """The event MPM's numbers in mod_wsgi-express's httpd.conf (its <IfModule mpm_event_module> block)."""
    block = conf.split("<IfModule mpm_event_module>", 1)[1].split("<IfDefine ONE_PROCESS>", 1)[0]
    return {name: int(value) for name, value in re.findall(r"^(\w+) (\d+)$", block, re.MULTILINE)}


@pytest.mark.parametrize("options", [(), ("--processes", "3", "--threads", "5")], ids=["computed", "3x5"])
def test_a_mod_wsgi_start_and_its_requests_log_no_apache_error(project_dir: Path, options: tuple[str, ...]) -> None:
    write(project_dir, {"wsgi.py": SLOW_WSGI})
    warp(project_dir, "build")
    port = free_port()
    dry = warp(project_dir, "start", "--port", str(port), *options, "--dry-run").stdout
    server_root = Path(re.findall(r"--server-root (\S+)", dry)[-1])
    with serving(project_dir, *options, port=port) as site:
        with ThreadPoolExecutor(8) as pool:  # requests at once, some of them slow, as a page's assets come
            answers = list(pool.map(lambda n: get(f"{site.url}/?{0.3 if n % 4 == 0 else 0}"), range(40)))
        assert [a.status for a in answers] == [200] * 40
        time.sleep(2.5)  # Apache's MPM looks at its idle workers once a second: give it a few looks
        output = site.output()
        mpm = directives((server_root / "httpd.conf").read_text())
    assert "MinSpareThreads" not in output and "MaxRequestWorkers" not in output, output
    assert not re.search(r"\[[\w:]*:error\]", output), output  # no error-level line from Apache at all
    # Every worker still started up front and kept (the reason for --initial-workers 1): no spare to trim.
    assert mpm["StartServers"] == mpm["ServerLimit"]
    assert mpm["MaxSpareThreads"] >= mpm["MaxClients"] == mpm["ServerLimit"] * mpm["ThreadsPerChild"]
    # Apache warns when fewer than MinSpareThreads are idle with every process running: one process's worth.
    assert mpm["MinSpareThreads"] == mpm["ThreadsPerChild"] < mpm["MaxClients"]
