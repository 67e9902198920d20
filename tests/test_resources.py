"""CPUs and memory a server may use (from probe facts), and the workers that buys."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cases import facts
from warptasks import servers
from warptasks.facts import Facts
from warptasks.plan.resources import MEMORY_PER_PROCESS, MiB, Resources, available_resources, worker_capacity

GiB = 1024 * MiB
HUGE_V1 = "9223372036854771712"  # cgroup v1's "no limit"


def cgroup(v2: dict[str, list[str]] | None = None, v1: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """The probe's cgroup object: each file's values from the innermost cgroup outwards."""
    return {"v2": v2 or {}, "v1": v1 or {}}


def target(**raw: Any) -> Facts:
    """Facts of a machine about which nothing but ``raw`` (probe keys) is known."""
    return facts(**{"cpu_count": None, "affinity": None, "memtotal": None, **raw})


# probe keys -> (cpus, memory)
RESOURCE_CASES = [
    pytest.param({"cpu_count": 4, "affinity": None, "memtotal": 8 * GiB}, (4.0, 8 * GiB), id="cpu_count"),
    pytest.param({"cpu_count": 8, "affinity": 2, "memtotal": 8 * GiB}, (2.0, 8 * GiB), id="affinity-wins"),
    pytest.param({"cpu_count": None, "affinity": None, "memtotal": None}, (1.0, None), id="nothing-known"),
    pytest.param({"affinity": 4, "cgroup": cgroup({"cpu.max": ["max 100000"]})}, (4.0, None), id="v2-cpu-max-unlimited"),
    pytest.param({"affinity": 4, "cgroup": cgroup({"cpu.max": ["150000 100000"]})}, (1.5, None), id="v2-cpu-quota"),
    pytest.param(
        {"affinity": 4, "cgroup": cgroup({"cpu.max": ["max 100000", "50000 100000"]})}, (0.5, None), id="v2-nested-smallest-quota"
    ),
    pytest.param({"affinity": 2, "cgroup": cgroup({"cpu.max": ["800000 100000"]})}, (2.0, None), id="v2-quota-above-cpus"),
    pytest.param(
        {"affinity": 4, "memtotal": 8 * GiB, "cgroup": cgroup({"memory.max": ["max"]})},
        (4.0, 8 * GiB),
        id="v2-memory-max-unlimited",
    ),
    pytest.param(
        {"affinity": 4, "memtotal": 8 * GiB, "cgroup": cgroup({"memory.max": ["536870912"]})},
        (4.0, 512 * MiB),
        id="v2-memory-max",
    ),
    pytest.param(
        {"affinity": 4, "memtotal": 8 * GiB, "cgroup": cgroup({"memory.max": ["max", str(2 * GiB), str(GiB)]})},
        (4.0, GiB),
        id="v2-nested-smallest-memory",
    ),
    pytest.param(
        {"affinity": 4, "memtotal": GiB, "cgroup": cgroup({"memory.max": [str(4 * GiB)]})}, (4.0, GiB), id="v2-memory-above-ram"
    ),
    pytest.param(
        {"affinity": 4, "memtotal": None, "cgroup": cgroup({"memory.max": [str(GiB)]})},
        (4.0, GiB),
        id="v2-memory-without-meminfo",
    ),
    pytest.param({"affinity": 4, "cgroup": cgroup(v1={"cpu": [["200000", "100000"]]})}, (2.0, None), id="v1-quota"),
    pytest.param({"affinity": 4, "cgroup": cgroup(v1={"cpu": [["-1", "100000"]]})}, (4.0, None), id="v1-no-quota"),
    pytest.param(
        {"affinity": 2, "memtotal": 8 * GiB, "cgroup": cgroup(v1={"limit_in_bytes": [HUGE_V1]})},
        (2.0, 8 * GiB),
        id="v1-huge-limit-is-no-limit",
    ),
    pytest.param(
        {"affinity": 2, "memtotal": 8 * GiB, "cgroup": cgroup(v1={"limit_in_bytes": [str(256 * MiB)]})},
        (2.0, 256 * MiB),
        id="v1-memory-limit",
    ),
    pytest.param(
        {"affinity": 4, "cgroup": cgroup({"cpu.max": ["300000 100000"]}, {"cpu": [["100000", "100000"]]})},
        (1.0, None),
        id="v1-and-v2-smallest",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), RESOURCE_CASES)
def test_available_resources_take_the_tightest_limit(raw: dict[str, Any], expected: tuple[float, int | None]) -> None:
    found = available_resources(target(**raw))
    assert (found.cpus, found.memory) == expected
    assert found.why


@pytest.mark.parametrize(
    ("raw", "phrases"),
    [
        pytest.param({"affinity": 2}, ["2 CPUs usable (affinity)"], id="affinity"),
        pytest.param({"cpu_count": 3}, ["3 CPUs usable (cpu_count)"], id="cpu_count"),
        pytest.param({"affinity": 4, "cgroup": cgroup({"cpu.max": ["150000 100000"]})}, ["cgroup CPU quota 1.5"], id="quota"),
        pytest.param(
            {"affinity": 4, "memtotal": 8 * GiB, "cgroup": cgroup({"memory.max": [str(GiB)]})},
            ["cgroup memory limit 1024 MiB"],
            id="memory-limit",
        ),
        pytest.param({"affinity": 4, "memtotal": 2 * GiB}, ["2048 MiB memory"], id="memory"),
    ],
)
def test_resources_say_where_they_came_from(raw: dict[str, Any], phrases: list[str]) -> None:
    why = available_resources(target(**raw)).why
    for phrase in phrases:
        assert phrase in why


# resources, server -> (processes, threads)
CAPACITY_CASES = [
    pytest.param(Resources(2, 8 * GiB, ""), "mod_wsgi", (2, 2), id="one-process-per-cpu"),
    pytest.param(Resources(1.5, None, ""), "gunicorn", (2, 2), id="fraction-rounds-up"),
    pytest.param(Resources(0.25, None, ""), "uwsgi", (1, 2), id="small-quota-still-one"),
    pytest.param(Resources(16, 512 * MiB, ""), "mod_wsgi", (4, 2), id="memory-caps-processes"),
    pytest.param(Resources(4, 64 * MiB, ""), "gunicorn", (1, 2), id="tiny-memory-still-one"),
    pytest.param(Resources(4, 8 * GiB, ""), "uvicorn", (4, 1), id="uvicorn-one-thread"),
    pytest.param(Resources(1, None, ""), "waitress", (1, 4), id="waitress-one-process-min-4-threads"),
    pytest.param(Resources(3, None, ""), "waitress", (1, 12), id="waitress-4-threads-per-cpu"),
    pytest.param(Resources(8, 256 * MiB, ""), "waitress", (1, 8), id="waitress-threads-follow-memory-cap"),
]


@pytest.mark.parametrize(("resources", "server", "expected"), CAPACITY_CASES)
def test_worker_capacity_per_server(resources: Resources, server: str, expected: tuple[int, int]) -> None:
    capacity = worker_capacity(resources, servers.server(server))
    assert (capacity.processes, capacity.threads) == expected
    assert capacity.why


def test_memory_cap_says_so() -> None:
    capacity = worker_capacity(Resources(16, 4 * MEMORY_PER_PROCESS, ""), servers.server("mod_wsgi"))
    assert capacity.processes == 4
    assert "memory fits 4 at 128 MiB each" in capacity.why
