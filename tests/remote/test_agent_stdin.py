"""A deploy's agent calls on a real SSH host show no request in ``ps``: the lock's token travels on stdin.

Another account on the host reads every process's command line (``/proc/*/cmdline``); the token in a
request lets its holder renew, switch and release the deploy lock. A watcher on the host records the agents
it sees while a session takes, checks, renews and waits for the lock; none may show a token.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.test_agent_stdin import agent_step
from warptasks.plan import command_line
from warptasks.remote.hosts import HostTarget
from warptasks.remote.session import LockLost, Session
from warptasks.settings import DeploySettings

pytestmark = pytest.mark.remote

PATH = "/srv/stdin-site"

# Runs on the host until STOP exists: counts the agents it sees, notes every token (from $NEEDLES, never on its
# own command line) found in any process's command line, then writes both to OUT.
WATCH = r"""
import json, os, time
stop, out, needles = "/tmp/watch.stop", "/tmp/watch.json", os.environ["NEEDLES"].split()
agents, found = set(), set()
open("/tmp/watch.ready", "w").close()
while not os.path.exists(stop):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        if "__warp_source__" in text:  # an agent (its source comes on stdin)
            agents.add(pid)
        found.update(n for n in needles if n in text)
    time.sleep(0.002)
with open(out, "w") as handle:
    json.dump({"agents": len(agents), "found": sorted(found)}, handle)
"""


def _watch(host, needles: list[str]):  # type: ignore[no-untyped-def]
    """Start the watcher on ``host``; a function that stops it and answers what it saw."""
    host.exec("rm -f /tmp/watch.stop /tmp/watch.json /tmp/watch.ready")
    host.put_file("/tmp/watch.py", WATCH.encode())
    host.container.exec_run(["python3", "/tmp/watch.py"], detach=True, environment={"NEEDLES": " ".join(needles)})
    deadline = time.monotonic() + 30
    while host.exec("test -e /tmp/watch.ready")[0] != 0:
        assert time.monotonic() < deadline, "the watcher did not start"
        time.sleep(0.1)

    def stop() -> dict:
        host.exec("touch /tmp/watch.stop")
        deadline = time.monotonic() + 30
        while True:
            code, text = host.exec("cat /tmp/watch.json")
            if code == 0:
                return json.loads(text)
            assert time.monotonic() < deadline, "the watcher did not stop"
            time.sleep(0.1)

    return stop


def test_a_deploys_agent_calls_show_no_token_in_any_command_line_on_the_host(ssh_hosts) -> None:  # type: ignore[no-untyped-def]
    (host,) = ssh_hosts(1, index=False)
    settings = DeploySettings.resolve(None, path=PATH, identity=host.key_filename, known_hosts=host.known_hosts)
    target = HostTarget(host.address, host.user, host.port)
    first, second = Session(target, settings), Session(target, settings)
    first.open()
    second.open()
    try:
        tokens = [f"tok-{secrets.token_hex(8)}" for _ in range(2)]
        stop = _watch(host, tokens)
        first.agent("lock", owner="first", token=tokens[0], lease=60)
        first.agent("check", token=tokens[0])
        first.agent("renew", token=tokens[0], lease=60)
        with pytest.raises(LockLost, match="held by first"):
            second.agent("lock", owner="second", token=tokens[1], wait=2)  # alive for 2s: seen for sure
        seen = stop()
        assert seen["agents"] >= 1 and seen["found"] == [], seen
        # What the older form, the request on the command line, showed every account on the host.
        stop = _watch(host, tokens)
        old = agent_step(settings.python, "lock", root=PATH, owner="old", token=tokens[1], wait=1)
        assert first.conn.run(command_line(old), hide=True, warn=True, in_stream=False).exited == 3
        assert stop()["found"] == [tokens[1]]
        first.agent("unlock", token=tokens[0])
    finally:
        first.close()
        second.close()
