"""Worker counts follow the CPU and memory limits a container really gets.

The probe runs inside containers the engine limits (real cgroups, made by
Docker), and what it reads decides the workers exactly as for ``warp start``.
"""

from __future__ import annotations

import json
import os

import docker
import pytest

from warptasks import servers
from warptasks.facts import Facts
from warptasks.plan.resources import available_resources, worker_capacity
from warptasks.scripts import source

pytestmark = pytest.mark.container
MiB = 1024 * 1024


def _facts_in_container(client: docker.DockerClient, image: str, **limits: object) -> Facts:
    container = client.containers.run(
        image, ["python3", "-c", source("probe.py"), "{}"], network_mode="none", detach=True, **limits
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs().decode()
        output = container.logs(stdout=True, stderr=False).decode()
    finally:
        container.remove(force=True)
    return Facts.parse(json.loads(output.strip().splitlines()[-1]))


def test_a_limited_container_gets_workers_for_its_half_cpu_and_300_mib(docker_client, python_image) -> None:
    facts = _facts_in_container(docker_client, python_image, nano_cpus=500_000_000, mem_limit="300m")
    resources = available_resources(facts)
    assert resources.cpus == 0.5
    assert resources.memory == 300 * MiB
    assert "cgroup CPU quota 0.5" in resources.why and "cgroup memory limit 300 MiB" in resources.why
    capacity = worker_capacity(resources, servers.server("gunicorn"))
    assert capacity.processes == 1


def test_an_unlimited_container_sees_the_machine(docker_client, python_image) -> None:
    resources = available_resources(_facts_in_container(docker_client, python_image))
    assert resources.cpus == len(os.sched_getaffinity(0))
    assert resources.memory is not None and resources.memory > 300 * MiB
    assert "cgroup" not in resources.why
