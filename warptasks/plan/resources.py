"""How many CPUs and how much memory a server may use, and what that buys.

Pure functions over the :class:`~warptasks.facts.Facts` :mod:`warptasks.scripts.probe`
reads (cgroup v1 and v2 limits, CPU affinity, /proc/meminfo).

Standard library only, and importable by path (no package-relative import at run
time): an application image ships this file beside its entry point
(:mod:`warptasks.scripts.image_start`), which sizes the workers with these same
functions from the container's own limits when it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: at run time any object with the same attributes will do
    from ..facts import Facts
    from ..servers import Server

MiB = 1024 * 1024
# A Django worker process with its imports takes about this much; used to
# keep workers * memory inside a memory limit.
MEMORY_PER_PROCESS = 128 * MiB


@dataclass(frozen=True)
class Resources:
    cpus: float
    memory: int | None
    why: str


def _cpu_max(text: str) -> float | None:
    quota, _, period = text.partition(" ")
    if quota in ("max", "") or not period:
        return None
    return int(quota) / int(period)


def _limit(text: str) -> int | None:
    if text.strip() in ("max", ""):
        return None
    value = int(text)
    # cgroup v1 reports "no limit" as a huge page-rounded number.
    return None if value >= 2**60 else value


def available_resources(facts: Facts) -> Resources:
    """CPUs and memory this process may use, and how that was found."""
    why: list[str] = []
    cpus = float(facts.affinity or facts.cpu_count or 1)
    why.append(f"{cpus:g} CPUs usable ({'affinity' if facts.affinity else 'cpu_count'})")
    cgroup = facts.cgroup
    quotas = [q for q in (_cpu_max(t) for t in cgroup.cpu_max) if q]
    quotas.extend(int(q) / int(p) for q, p in cgroup.cfs if int(q) > 0 and int(p) > 0)
    if quotas and min(quotas) < cpus:
        cpus = min(quotas)
        why.append(f"cgroup CPU quota {cpus:g}")
    memory = facts.memtotal
    limits = [m for m in (_limit(t) for t in (*cgroup.memory_max, *cgroup.limit_in_bytes)) if m]
    if limits and (memory is None or min(limits) < memory):
        memory = min(limits)
        why.append(f"cgroup memory limit {memory // MiB} MiB")
    elif memory:
        why.append(f"{memory // MiB} MiB memory")
    return Resources(cpus=cpus, memory=memory, why=", ".join(why))


@dataclass(frozen=True)
class Capacity:
    processes: int
    threads: int
    why: str


def worker_capacity(resources: Resources, server: Server) -> Capacity:
    """Processes and threads for ``server`` on ``resources``.

    One process per usable CPU (rounded up: a fractional quota still runs one),
    capped so that every process fits in memory; threads cover waiting on I/O
    (databases, upstream calls) without more memory per request. The server's
    :class:`~warptasks.servers.CapacityRule` says how many threads, or that it
    runs one process whose threads grow instead.
    """
    rule = server.capacity
    processes = max(1, math.ceil(resources.cpus))
    why = f"{processes} process(es): one per CPU"
    if resources.memory:
        fit = max(1, resources.memory // MEMORY_PER_PROCESS)
        if fit < processes:
            processes = int(fit)
            why = f"{processes} process(es): memory fits {fit} at {MEMORY_PER_PROCESS // MiB} MiB each"
    if rule.single_process:
        threads = max(rule.threads, rule.threads * processes)
        return Capacity(1, threads, rule.why.format(threads=threads))
    return Capacity(processes, rule.threads, why + "; " + rule.why.format(threads=rule.threads))
