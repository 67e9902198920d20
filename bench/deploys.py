"""8. Deploy benchmarks: `warp deploy` (warptasks.remote.deploy) to real SSH hosts.

The hosts are containers made by the project's own test harness, each with its own
address on the engine's bridge network and no outbound access (so the
dependencies are shipped as wheels built on this machine).
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from tests.harness.images import SSH_PACKAGES, base_image
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

from .djangoapp import PROJECT, copy_project, touch_view
from .measure import Section, Target, load, ratio, secs, times
from .proc import BenchError

PATH = "/srv/benchsite"


def run(b: Any) -> Section:
    s = Section("8. Deploy", load_before=load())
    s.intro = (
        "`warp deploy --wheels` of the same Django project to SSH hosts (containers on the engine's bridge network, "
        "each with its own address, no outbound network). 1 host and 3 hosts are each a first deploy to fresh hosts; "
        "the 1-host deploy runs first, so the 3-host one may find this machine's wheel cache warmer. Then a no-op "
        "redeploy and a code-only deploy to the 3 hosts. One run each."
    )
    client = ensure_engine()
    image = base_image(client, (*SSH_PACKAGES, "apache2"))
    hosts = ssh_hosts(client, 4, network="bridge", image=image)
    try:
        project = os.path.join(b.tools.work, "deploy", PROJECT)
        copy_project(os.path.join(b.tools.work, "source"), project)
        opts = DeploySettings.resolve(
            None,
            path=PATH,
            identity=hosts[0].key_filename,
            known_hosts=hosts[0].known_hosts,
            wheels=True,
            health_host="localhost",
        )
        targets = [HostTarget(h.address, h.user, h.port) for h in hosts]

        live: dict[str, float] = {}

        def timed(group: list[Any], label: str) -> float:
            started = time.perf_counter()
            switched: list[float] = []

            def say(line: str) -> None:
                if "current -> " in line:  # a host's front sends new requests to the new release from now on
                    switched.append(time.perf_counter())

            results = deploy(group, project, opts, say=say)
            took = time.perf_counter() - started
            if not all(r.ok for r in results):
                raise BenchError(f"{label} failed: {summary(results)}")
            if len(switched) == len(group):
                live[label] = max(switched) - started
            after = f", live on every host after {live[label]:.1f} s" if label in live else ""
            b.note(f"  deploy {label}: {took:.1f} s{after}")
            return took

        one = timed(targets[:1], "1 host")
        three = timed(targets[1:], "3 hosts")
        noop = timed(targets[1:], "no-op, 3 hosts")
        touch_view(project, 200)
        code = timed(targets[1:], "code-only, 3 hosts")
    finally:
        remove_hosts(hosts)
    code_live = live.get("code-only, 3 hosts", code)
    s.table(
        ["deploy", "time", "live on every host after"],
        [
            ["first deploy, 1 host", secs(one), secs(live.get("1 host", one))],
            ["first deploy, 3 hosts", secs(three), secs(live.get("3 hosts", three))],
            ["no-op redeploy, 3 hosts", secs(noop), "-"],
            ["code-only deploy, 3 hosts", secs(code), secs(code_live)],
        ],
    )
    s.targets.append(Target("a code-only deploy is live within 3 s of the command", code_live <= 3, secs(code_live)))
    target = "3 hosts take at most 1.3x the time of 1"
    s.targets.append(Target(target, three <= 1.3 * one, f"{secs(three)} vs {secs(one)}: {times(ratio(three, one))}"))
    b.why[target] = (
        "The hosts are containers on this same machine: a first deploy compiles mod_wsgi and installs the "
        "environment on every host at once, so 3 hosts share the machine's CPUs where real hosts would each "
        "have their own; the parallel part cannot scale here."
    )
    s.targets.append(Target("no-op redeploy under 3 s", noop < 3, secs(noop)))
    s.load_after = load()
    return s
