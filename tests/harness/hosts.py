"""SSH test hosts: containers from the SSH image, each a separate machine reachable with a key."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from .images import CA_BUNDLE, index_access, ssh_image
from .system import RUN_DIR, require_command, state_dir

LABEL = "warptasks-tests"
SESSION_LABEL = "warptasks-tests.session"
BRIDGE_SSH_PORT = 22
READY_TIMEOUT = 30.0

# Runs as the container's main process (under tini, which reaps what deploys leave behind).
# Host keys are made on first start only, so a restarted host keeps its identity.
_START_SCRIPT = r"""
set -e
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
if [ ! -e /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
exec /usr/sbin/sshd -D -e -p "$SSH_PORT" -o ListenAddress="$SSH_LISTEN" \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PermitRootLogin=prohibit-password \
    -o PasswordAuthentication=no -o UseDNS=no
"""


@dataclass(frozen=True)
class SessionKeys:
    """The client key pair and known_hosts file of one test process."""

    directory: Path
    key_filename: str
    public_key: str
    known_hosts: str


_keys: SessionKeys | None = None
_names = itertools.count(1)


def session_keys() -> SessionKeys:
    """One ed25519 key pair per test process, removed when it exits."""
    global _keys
    if _keys is None:
        require_command("ssh-keygen", "openssh-client")
        _remove_stale_key_dirs()
        directory = state_dir(RUN_DIR / f"ssh-{os.getpid()}", 0o700)
        key = directory / "id_ed25519"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "warptasks-tests", "-f", str(key)], check=True)
        known_hosts = directory / "known_hosts"
        known_hosts.touch(mode=0o600)
        _keys = SessionKeys(directory, str(key), (directory / "id_ed25519.pub").read_text().strip(), str(known_hosts))
        atexit.register(shutil.rmtree, directory, True)
    return _keys


def _remove_stale_key_dirs() -> None:
    """Key folders of test runs that were killed before their exit handlers ran."""
    for directory in RUN_DIR.glob("ssh-*"):
        pid = directory.name[len("ssh-") :]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Host:
    """One SSH test host (a container): where to reach it and how to break it."""

    name: str
    address: str
    port: int
    container: Container
    network: str
    key_filename: str
    known_hosts: str
    user: str = "root"
    host_keys: list[str] = field(default_factory=list)

    @property
    def host_string(self) -> str:
        """`user@address:port`, as fabric's `-H` takes it."""
        return f"{self.user}@{self.address}:{self.port}"

    def connection(self, **kwargs: Any) -> Any:
        """A fabric Connection with key auth whose host key is checked against `known_hosts` (unknown = refused)."""
        import fabric
        import paramiko

        connect_kwargs = {"key_filename": self.key_filename, "look_for_keys": False, "allow_agent": False}
        connect_kwargs.update(kwargs.pop("connect_kwargs", {}))
        kwargs.setdefault("connect_timeout", 15)
        conn = fabric.Connection(self.address, user=self.user, port=self.port, connect_kwargs=connect_kwargs, **kwargs)
        # fabric accepts any host key out of the box; a deploy test must not.
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client.load_host_keys(self.known_hosts)
        return conn

    def exec(self, command: str | list[str], user: str = "root") -> tuple[int, str]:
        """Run a command inside the host without SSH; returns (exit code, stdout+stderr)."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
        code, output = self.container.exec_run(argv, user=user)
        return code, output.decode(errors="replace")

    def put_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo(os.path.basename(path))
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            archive.addfile(info, io.BytesIO(content))
        self.exec(["mkdir", "-p", os.path.dirname(path) or "/"])
        self.container.put_archive(os.path.dirname(path) or "/", buffer.getvalue())

    def pause(self) -> None:
        """Freeze every process of the host: connections hang until unpause()."""
        self.container.pause()

    def unpause(self) -> None:
        self.container.unpause()

    def stop(self) -> None:
        """Power the host off: nothing answers at its address (connection refused or unreachable)."""
        self.container.stop(timeout=2)

    def start(self) -> None:
        """Power it back on, with the same filesystem, host key and port."""
        self.container.start()
        self.container.reload()
        if self.network == "bridge":
            self.address = _bridge_address(self.container)
        _wait_for_sshd(self)

    def remove(self) -> None:
        try:
            self.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bridge_address(container: Container) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"]
    address = str(networks.get("bridge", {}).get("IPAddress", ""))
    if not address:
        raise RuntimeError(f"container {container.name} has no bridge address")
    return address


def _keyscan(host: Host) -> list[str]:
    # Without -q: this OpenSSH's ssh-keyscan -q prints nothing at all.
    result = subprocess.run(
        ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(host.port), host.address],
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


def _wait_for_sshd(host: Host) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        host.container.reload()
        if host.container.status not in ("created", "running"):
            logs = host.container.logs(tail=20).decode(errors="replace")
            raise RuntimeError(f"SSH host {host.name} stopped ({host.container.status}):\n{logs}")
        lines = _keyscan(host)
        if lines:
            _remember_host_keys(host, lines)
            return
        time.sleep(0.2)
    raise RuntimeError(f"sshd of {host.name} did not answer at {host.address}:{host.port} within {READY_TIMEOUT:.0f}s")


def _remember_host_keys(host: Host, lines: list[str]) -> None:
    known = Path(host.known_hosts)
    marker = f"[{host.address}]:{host.port}" if host.port != 22 else host.address
    kept = [line for line in known.read_text().splitlines() if line.split(" ", 1)[0] != marker]
    known.write_text("\n".join([*kept, *lines]) + "\n")
    host.host_keys = lines


def _run_host(client: docker.DockerClient, image: str, network: str, index: bool) -> Host:
    keys = session_keys()
    name = f"warp-test-{os.getpid()}-{next(_names)}"
    port = _free_port() if network == "host" else BRIDGE_SSH_PORT
    environment = {
        "AUTHORIZED_KEY": keys.public_key,
        "SSH_PORT": str(port),
        "SSH_LISTEN": "127.0.0.1" if network == "host" else "0.0.0.0",
    }
    options: dict[str, Any] = {"hostname": name}
    if network == "host":
        options["network_mode"] = "host"
    elif network == "bridge":
        # No name server a bridge host could reach: it must not even try to
        # resolve outside names (traffic would go nowhere but is still traffic).
        options.update(network_mode="bridge", dns=["127.0.0.1"])
    else:
        raise ValueError(f"network must be 'host' or 'bridge', not {network!r}")
    access = index_access() if index and network == "host" else None
    if access is not None:
        options["volumes"] = access.volumes
    container = client.containers.run(
        image,
        ["/bin/sh", "-c", _START_SCRIPT],
        name=name,
        detach=True,
        init=True,
        environment=environment,
        labels={LABEL: "ssh-host", SESSION_LABEL: str(os.getpid())},
        **options,
    )
    container.reload()
    address = "127.0.0.1" if network == "host" else _bridge_address(container)
    host = Host(name, address, port, container, network, keys.key_filename, keys.known_hosts)
    try:
        _wait_for_sshd(host)
        if access is not None:
            # SSH logins don't see the container's environment: give pip (and uv) its settings as files.
            host.put_file("/etc/pip.conf", access.pip_conf().encode())
            host.put_file("/etc/environment", "".join(f"{k}={v}\n" for k, v in access.environment.items()).encode())
    except Exception:
        host.remove()
        raise
    return host


def ssh_hosts(
    client: docker.DockerClient, count: int, network: str = "host", image: str | None = None, index: bool = True
) -> list[Host]:
    """Start `count` SSH hosts. network="host": sshd on its own port of 127.0.0.1, can reach the package
    index (index=True gives it this machine's CA bundle and pip settings). network="bridge": sshd on port 22
    of its own 172.17.0.x address, no outbound network at all."""
    image = image or ssh_image(client)
    hosts: list[Host] = []
    try:
        for _ in range(count):
            for attempt in range(3):
                try:
                    hosts.append(_run_host(client, image, network, index))
                    break
                except RuntimeError:
                    # A host-network port can be taken between choosing and binding it: try another.
                    if attempt == 2 or network != "host":
                        raise
    except Exception:
        remove_hosts(hosts)
        raise
    return hosts


def remove_hosts(hosts: list[Host]) -> None:
    for host in hosts:
        host.remove()


def remove_stale_hosts(client: docker.DockerClient) -> None:
    """Remove SSH hosts left by test processes that are gone (a killed run)."""
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner = container.labels.get(SESSION_LABEL, "")
        if owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists():
            try:
                container.remove(force=True, v=True)
            except docker.errors.APIError:
                pass


__all__ = ["CA_BUNDLE", "Host", "SessionKeys", "remove_hosts", "remove_stale_hosts", "session_keys", "ssh_hosts"]
