"""Local Debian base images: debootstrap from the machine's own apt mirror, never a registry pull."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from .system import CACHE_DIR, STATE_DIR, file_lock, require_command, state_dir

# Bump when the way a root filesystem is made changes, so cached tars are rebuilt.
RECIPE = "3"
REPOSITORY = "warptasks-test/debian"
PYTHON_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# What a deploy target needs: sshd, rsync for uploads, and what compiles mod_wsgi.
SSH_PACKAGES = ("openssh-server", "rsync", "python3-dev", "apache2-dev", "build-essential", "curl", "procps")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]


def host_suite() -> str:
    """The Debian release of this machine, so images run the same Python as the host."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return "bookworm"
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.MULTILINE)
    return match.group(1) if match else "bookworm"


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 `URIs:` first, then sources.list)."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in source.read_text(errors="replace").split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            enabled = re.search(r"^Enabled:\s*no", stanza, re.MULTILINE | re.IGNORECASE) is None
            if uris and suites and enabled and host_suite() in suites.group(1).split():
                return uris.group(1).rstrip("/")
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and not parts[1].startswith("["):
                if parts[2] == host_suite():
                    return parts[1].rstrip("/")
    return DEFAULT_MIRROR


def image_key(packages: Iterable[str]) -> str:
    wanted = sorted(set(PYTHON_PACKAGES) | set(packages))
    digest = hashlib.sha256("\n".join([RECIPE, host_suite(), *wanted]).encode()).hexdigest()
    return digest[:12]


def _run(argv: list[str], **kwargs: object) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        output = result.stdout[-2000:] + result.stderr[-2000:]
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({result.returncode}):\n{output}")


def _debootstrap(rootfs: Path) -> None:
    require_command("debootstrap", "debootstrap")
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PYTHON_PACKAGES)}",
            host_suite(),
            str(rootfs),
            apt_mirror(),
        ]
    )


def _chroot_install(rootfs: Path, packages: list[str]) -> None:
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    # Services must not start inside the chroot while their packages install.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # The packed tree has an empty /dev (the engine provides one); maintainer scripts need /dev/null and /proc.
    _run(["mount", "--bind", "/dev", str(rootfs / "dev")])
    _run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])
    try:
        _run(["chroot", str(rootfs), "apt-get", "update", "-q"])
        _run(["chroot", str(rootfs), "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages])
    finally:
        _unmount(rootfs)
        policy.unlink()


def _unmount(rootfs: Path) -> None:
    for mount in ("proc", "dev"):
        if os.path.ismount(rootfs / mount):
            subprocess.run(["umount", "-l", str(rootfs / mount)], check=False, capture_output=True)


def _remove_tree(rootfs: Path) -> None:
    """Remove a build tree, but never through a mount: a bound /dev would be the machine's own."""
    _unmount(rootfs)
    prefix = str(rootfs) + "/"
    with open("/proc/self/mounts") as mounts:
        still = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    if still:
        raise RuntimeError(f"not removing {rootfs}: still mounted: {', '.join(still)}")
    shutil.rmtree(rootfs, ignore_errors=True)


def _tidy(rootfs: Path) -> None:
    """Drop what makes images big or hosts alike: package caches, lists, and SSH host keys."""
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=False, capture_output=True)
    for pattern in ("var/lib/apt/lists/*_Packages", "var/lib/apt/lists/*_InRelease", "etc/ssh/ssh_host_*"):
        for path in rootfs.glob(pattern):
            path.unlink()
    (rootfs / "etc/resolv.conf").write_text("")
    (rootfs / "etc/hostname").write_text("localhost\n")


def _pack(rootfs: Path, tarball: Path) -> None:
    partial = tarball.with_suffix(".partial")
    # The engine mounts its own /proc, /sys and /dev into every container.
    skip = ["--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*"]
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), *skip, "-cf", str(partial), "."])
    partial.rename(tarball)


def _unpack(tarball: Path, rootfs: Path) -> None:
    rootfs.mkdir(mode=0o755)
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-xf", str(tarball)])


def rootfs_tarball(extra_packages: Iterable[str] = ()) -> Path:
    """A cached tar of a Debian root filesystem with these packages, built if missing."""
    extra = sorted(set(extra_packages) - set(PYTHON_PACKAGES))
    key = image_key(extra)
    tarball = state_dir(CACHE_DIR) / f"{host_suite()}-{key}.tar"
    with file_lock(CACHE_DIR / f"{key}.lock"):
        if tarball.exists():
            return tarball
        # Build beside the cache (same filesystem, not /tmp) and never leave a half-made tree.
        rootfs = STATE_DIR / f"rootfs-{key}-{os.getpid()}"
        if rootfs.exists():
            _remove_tree(rootfs)
        try:
            if extra:
                _unpack(rootfs_tarball(), rootfs)
                _chroot_install(rootfs, extra)
            else:
                _debootstrap(rootfs)
            _tidy(rootfs)
            _pack(rootfs, tarball)
        finally:
            _remove_tree(rootfs)
    return tarball


def base_image(client: docker.DockerClient, extra_packages: Iterable[str] = ()) -> str:
    """Tag of a local Debian image with Python (plus extra Debian packages); made once, then reused."""
    extra = tuple(extra_packages)
    tag = f"{REPOSITORY}:{image_key(set(extra) - set(PYTHON_PACKAGES))}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    tarball = rootfs_tarball(extra)
    with file_lock(CACHE_DIR / "import.lock"):
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            repository, name = tag.split(":")
            client.api.import_image_from_file(str(tarball), repository=repository, tag=name, changes=IMAGE_CHANGES)
    return tag


def python_image(client: docker.DockerClient) -> str:
    return base_image(client)


def ssh_image(client: docker.DockerClient) -> str:
    return base_image(client, SSH_PACKAGES)


# Pip settings that only name a network location; anything naming a local
# file of this machine (find-links, constraint, cache-dir...) means nothing in a container.
_PIP_NETWORK_KEYS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "default-timeout", "retries")


@dataclass(frozen=True)
class IndexAccess:
    """What a container needs to reach the package index the way this machine does."""

    environment: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    host_files: dict[str, str] = field(default_factory=dict)

    @property
    def volumes(self) -> dict[str, dict[str, str]]:
        """docker SDK `volumes=` mapping: host files mounted read-only at their container paths."""
        return {host: {"bind": inside, "mode": "ro"} for inside, host in self.host_files.items()}

    def pip_conf(self) -> str:
        """A global pip.conf carrying the same settings, for shells that don't get this environment (SSH logins)."""
        lines = ["[global]"]
        for name, value in sorted(self.environment.items()):
            if name.startswith("PIP_"):
                lines.append(f"{name[4:].lower().replace('_', '-')} = {value}")
        return "\n".join(lines) + "\n"

    def write_context(self, build_dir: Path) -> None:
        """Put the files into a Docker build context, under `index-access/`."""
        for inside, content in self.files.items():
            target = build_dir / "index-access" / inside.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    def dockerfile_lines(self) -> list[str]:
        """COPY/ENV lines matching write_context(), for a Dockerfile stage that runs pip."""
        lines = [f"COPY index-access{inside} {inside}" for inside in self.files]
        lines += [f"ENV {name}={value}" for name, value in sorted(self.environment.items())]
        return lines


def _pip_config_files() -> list[Path]:
    home = Path(os.environ.get("HOME", "/root"))
    paths = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"), home / ".pip/pip.conf", home / ".config/pip/pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        paths.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return [p for p in paths if p.is_file()]


def _pip_settings() -> dict[str, str]:
    """Network-related pip settings, in pip's own order: config files, later ones win, then PIP_* variables."""
    settings: dict[str, str] = {}
    for path in _pip_config_files():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except configparser.Error:
            continue
        for section in ("global", "install", "download"):
            if parser.has_section(section):
                for key in _PIP_NETWORK_KEYS:
                    if parser.has_option(section, key):
                        settings[key] = " ".join(parser.get(section, key).split())
    for key in _PIP_NETWORK_KEYS:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value
    for key in ("index-url", "extra-index-url"):
        # A file:// index is a folder of this machine, not something a container can reach.
        if key in settings:
            urls = [url for url in settings[key].split() if not url.startswith("file:")]
            if urls:
                settings[key] = " ".join(urls)
            else:
                del settings[key]
    return settings


def host_ca_bundle() -> Path | None:
    named = [os.environ.get(name) for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")]
    for candidate in (*named, CA_BUNDLE):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def index_access() -> IndexAccess:
    """This machine's CA bundle and pip/uv/proxy settings, as a container should get them."""
    environment: dict[str, str] = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    files: dict[str, bytes] = {}
    host_files: dict[str, str] = {}
    bundle = host_ca_bundle()
    if bundle is not None:
        # The index may be reached through a proxy whose CA only this machine's bundle holds.
        files[CA_BUNDLE] = bundle.read_bytes()
        host_files[CA_BUNDLE] = str(bundle)
        environment.update(PIP_CERT=CA_BUNDLE, SSL_CERT_FILE=CA_BUNDLE, REQUESTS_CA_BUNDLE=CA_BUNDLE)
    for key, value in _pip_settings().items():
        environment["PIP_" + key.upper().replace("-", "_")] = value
    if "PIP_INDEX_URL" in environment:
        environment["UV_DEFAULT_INDEX"] = environment["PIP_INDEX_URL"]
    if "PIP_EXTRA_INDEX_URL" in environment:
        environment["UV_INDEX"] = environment["PIP_EXTRA_INDEX_URL"]
    timeout = environment.get("PIP_DEFAULT_TIMEOUT") or environment.get("PIP_TIMEOUT")
    if timeout:
        environment["UV_HTTP_TIMEOUT"] = timeout
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if os.environ.get(name):
            environment[name] = os.environ[name]
    return IndexAccess(environment=environment, files=files, host_files=host_files)
