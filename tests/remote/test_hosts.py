"""SSH test hosts from the harness: separate machines, checked host keys, and ways to break them."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path

import paramiko
import pytest

pytestmark = pytest.mark.remote


def _run(host, command: str) -> str:
    with host.connection() as conn:
        return conn.run(command, hide=True, in_stream=False).stdout.strip()


def test_two_hosts_are_separate_machines(ssh_hosts) -> None:
    first, second = ssh_hosts(2)
    assert first.port != second.port
    assert _run(first, "hostname") != _run(second, "hostname")
    _run(first, "echo first > /root/marker")
    assert _run(first, "cat /root/marker") == "first"
    assert _run(second, "test -e /root/marker && echo there || echo absent") == "absent"


def test_each_host_has_its_own_host_key(ssh_hosts) -> None:
    first, second = ssh_hosts(2)
    assert first.host_keys and second.host_keys
    assert first.host_keys[0].split()[-1] != second.host_keys[0].split()[-1]


def test_a_host_missing_from_known_hosts_is_refused(ssh_hosts, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    stranger = dataclasses.replace(host, known_hosts=str(empty))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _run(stranger, "true")


def test_a_bridge_host_has_its_own_address_and_no_outbound_network(ssh_hosts, docker_client) -> None:
    (host,) = ssh_hosts(1, network="bridge")
    subnet = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"]
    assert ipaddress.ip_address(host.address) in ipaddress.ip_network(subnet)
    assert host.port == 22
    assert _run(host, "hostname") == host.name
    # Only name resolution is tried: no packet is sent to any address outside this machine.
    code, output = host.exec("getent hosts pypi.org")
    assert code != 0, output
    code, output = host.exec(["python3", "-c", "import socket; socket.getaddrinfo('pypi.org', 443)"])
    assert code != 0 and "gaierror" in output


def test_a_host_network_host_installs_from_the_package_index_over_ssh(ssh_hosts) -> None:
    (host,) = ssh_hosts(1, network="host")
    # An SSH login, not the container's environment: the host's own pip settings must carry the CA bundle.
    output = _run(host, "python3 -m pip download --no-deps --no-cache-dir -d /tmp/wheels six 2>&1")
    assert "Saved /tmp/wheels/six-" in output


def test_a_paused_host_times_out_then_recovers(ssh_hosts) -> None:
    (host,) = ssh_hosts(1)
    host.pause()
    try:
        conn = host.connection(connect_timeout=3, connect_kwargs={"banner_timeout": 3, "auth_timeout": 3})
        with pytest.raises((socket.timeout, paramiko.SSHException, EOFError)):
            conn.open()
        conn.close()
    finally:
        host.unpause()
    assert _run(host, "echo back") == "back"


def test_a_stopped_host_refuses_connections_and_comes_back_with_the_same_key(ssh_hosts) -> None:
    (host,) = ssh_hosts(1)
    keys = list(host.host_keys)
    host.stop()
    with pytest.raises((OSError, paramiko.SSHException)):
        host.connection(connect_timeout=3).open()
    host.start()
    assert host.host_keys == keys
    assert _run(host, "echo up") == "up"
