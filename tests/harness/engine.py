"""A Docker engine for the tests: reuse one that answers, else start Debian's dockerd."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from .system import RUN_DIR, STATE_DIR, file_lock, require_command, state_dir

SOCKET = RUN_DIR / "docker.sock"
PIDFILE = RUN_DIR / "dockerd.pid"
LOG = STATE_DIR / "dockerd.log"
# Image imports of a few hundred MB go through the API in one request.
API_TIMEOUT = 600


def _candidates() -> list[str]:
    urls = []
    if os.environ.get("DOCKER_HOST"):
        urls.append(os.environ["DOCKER_HOST"])
    if Path("/var/run/docker.sock").exists():
        urls.append("unix:///var/run/docker.sock")
    urls.append(f"unix://{SOCKET}")
    return urls


def _answering(url: str) -> docker.DockerClient | None:
    if url.startswith("unix://") and not Path(url[len("unix://") :]).exists():
        return None
    if not _quick_ping(url):
        return None
    return docker.DockerClient(base_url=url, timeout=API_TIMEOUT)


def _quick_ping(url: str) -> bool:
    try:
        probe = docker.APIClient(base_url=url, timeout=3, version="auto")
    except docker.errors.DockerException:
        return False
    try:
        return bool(probe.ping())
    except Exception:  # any transport failure means "not this one"
        return False
    finally:
        probe.close()


def _overlay_works(data_root: Path) -> bool:
    """overlay2 needs overlayfs on the data root's filesystem (not on overlay itself, e.g. inside a container)."""
    base = Path(tempfile.mkdtemp(prefix="overlay-check-", dir=data_root.parent))
    try:
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        options = f"lowerdir={base / 'lower'},upperdir={base / 'upper'},workdir={base / 'work'}"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(base / "merged")], capture_output=True, check=False
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(base / "merged")], check=False)
        return True
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _clear_stale_pidfile() -> None:
    """A killed engine leaves its pidfile; dockerd refuses to start if that pid now belongs to anything."""
    try:
        pid = PIDFILE.read_text().strip()
    except OSError:
        return
    try:
        alive = Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        alive = False
    if not alive:
        PIDFILE.unlink(missing_ok=True)


def _start_dockerd(driver: str) -> subprocess.Popen[bytes]:
    dockerd = require_command("dockerd", "docker.io")
    _clear_stale_pidfile()
    data_root = state_dir(STATE_DIR / f"docker-{driver}", 0o710)
    argv = [
        dockerd,
        f"--host=unix://{SOCKET}",
        f"--data-root={data_root}",
        f"--exec-root={state_dir(RUN_DIR / 'exec', 0o700)}",
        f"--pidfile={PIDFILE}",
        f"--storage-driver={driver}",
        # Leave the machine's firewall and forwarding alone: bridge containers
        # get a 172.17.0.x address reachable from here, and no way out.
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ]
    log = open(LOG, "ab")  # noqa: SIM115 - handed to the engine, which outlives this process
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
    log.flush()
    # A session of its own: the engine outlives the test run that started it and
    # is not hit by the terminal's signals; the next run reuses it.
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)


def _wait(process: subprocess.Popen[bytes], deadline: float) -> docker.DockerClient | None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        client = _answering(f"unix://{SOCKET}")
        if client is not None:
            return client
        time.sleep(0.25)
    return None


def _repair_default_bridge(client: docker.DockerClient) -> None:
    """Put back the default bridge if it vanished under a running engine.

    Any dockerd started with --bridge=none deletes docker0 at startup, even while
    another engine uses it; bridge containers then fail to start until it is back.
    """
    try:
        network = client.networks.get("bridge")
    except docker.errors.DockerException:
        return
    name = network.attrs.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    if Path("/sys/class/net", name).exists():
        return
    config = (network.attrs.get("IPAM", {}).get("Config") or [{}])[0]
    subnet = ipaddress.ip_network(config.get("Subnet", "172.17.0.0/16"))
    gateway = config.get("Gateway") or str(next(subnet.hosts()))
    ip = require_command("ip", "iproute2")
    for argv in (
        [ip, "link", "add", "name", name, "type", "bridge"],
        [ip, "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", name],
        [ip, "link", "set", name, "up"],
    ):
        subprocess.run(argv, check=False, capture_output=True)


def ensure_engine(timeout: float = 60) -> docker.DockerClient:
    """A client for an engine that answers, starting the harness's own engine if none does."""
    for url in _candidates():
        client = _answering(url)
        if client is not None:
            if url == f"unix://{SOCKET}":
                _repair_default_bridge(client)
            return client
    state_dir(RUN_DIR)
    state_dir(STATE_DIR)
    with file_lock(RUN_DIR / "engine.lock"):
        client = _answering(f"unix://{SOCKET}")
        if client is not None:
            return client
        deadline = time.monotonic() + timeout
        drivers = ["overlay2", "vfs"] if _overlay_works(STATE_DIR / "docker-overlay2") else ["vfs"]
        for driver in drivers:
            process = _start_dockerd(driver)
            client = _wait(process, deadline)
            if client is not None:
                return client
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
    tail = LOG.read_text(errors="replace")[-3000:] if LOG.exists() else ""
    raise RuntimeError(f"the Docker engine did not answer within {timeout:.0f}s; end of {LOG}:\n{tail}")
