"""Naming and pushing images: the extra tags (``--tag``, the git commit) and ``--push`` to a registry.

Credentials are the Docker SDK's business, read as the ``docker`` CLI reads them: the config file in
``DOCKER_CONFIG`` (else ``~/.docker/config.json``), its ``auths`` entries, and its ``credsStore`` /
``credHelpers`` (the SDK runs ``docker-credential-<helper>``). warptasks never reads, prints or logs them:
it hands the SDK a registry name and reports what the engine answered.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import docker
import docker.errors

from ..errors import ConfigError, WarpError
from ..sourcefiles import GIT, image_files
from .dockerfile import ImageName, parse_image_name

Say = Callable[[str], None]
DOCKER_HUB = "docker.io"


class PushFailed(WarpError):
    """The engine could not push an image to its registry."""


@dataclass(frozen=True)
class CommitTag:
    """The tag naming the git commit an image was built from, or why there is none."""

    tag: str | None
    why: str


def registry_of(name: ImageName) -> str:
    """The registry a repository lives in, as the engine reads it: a first component with a dot, a colon or
    ``localhost`` is a host, anything else is Docker Hub."""
    first, sep, _ = name.repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def commit_tag(root: str) -> CommitTag:
    """The short commit of the project's git checkout, when its tracked files are as committed."""
    try:
        head = _git(root, "rev-parse", "--short=12", "HEAD")
        if head is None or not re.fullmatch(r"[0-9a-f]{7,64}", head):
            return CommitTag(None, "not tagged with a git commit: the project is not a git checkout with commits")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return CommitTag(None, "not tagged with a git commit: git could not be run")
    if changes:
        # A tag that names a commit promises exactly that commit's code.
        return CommitTag(None, f"not tagged with commit {head}: tracked files have uncommitted changes")
    # ... and nothing else: the image gets the folder's files (less .dockerignore), untracked and git-ignored ones too.
    tracked = _git(root, "ls-files", "-z")
    extra = [rel for rel in image_files(root).files if rel not in set((tracked or "").split("\0"))]
    if tracked is None or extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return CommitTag(
            None,
            f"not tagged with commit {head}: the image gets files the commit does not have ({shown}); "
            "commit them, or leave them out with .dockerignore",
        )
    return CommitTag(head, f"also tagged {head}: the git commit it was built from")


def _git(root: str, *args: str) -> str | None:
    done = subprocess.run([*GIT, "-C", root, *args], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def image_names(tags: Iterable[str], default: str, commit: str | None) -> list[ImageName]:
    """Every name the image gets: each ``--tag`` (else the default), then ``<repository>:<commit>`` for each
    repository among them. The first is the image's main name."""
    names: list[ImageName] = []
    for text in list(tags) or [default]:
        name = parse_image_name(text)
        if name not in names:
            names.append(name)
    if commit:
        for repository in dict.fromkeys(name.repository for name in list(names)):
            extra = ImageName(repository, commit)
            if extra not in names:
                names.append(extra)
    return names


def check_pushable(names: list[ImageName]) -> None:
    """Refuse, before building, a push of a name that says no registry (it would go to Docker Hub's library)."""
    for name in names:
        if "/" not in name.repository:
            raise ConfigError(
                f"--push needs a name in a registry, and {name} names none (it would go to Docker Hub's library/)",
                "give the registry in the name: --tag registry.example.com/team/app:1.0 (or user/app:1.0 for Docker Hub)",
            )


def push_images(client: docker.DockerClient, names: list[ImageName], say: Say) -> list[str]:
    """Push each name (already tagged in the engine); the digests pushed. The first failure stops and raises."""
    digests: list[str] = []
    try:
        for name in names:
            say(f"pushing {name} to {registry_of(name)}")
            digests.append(push_image(client, name))
            say(f"pushed {name}" + (f" ({digests[-1]})" if digests[-1] else ""))
    except PushFailed:  # the engine said the registry refused this name: it holds what it had
        say(push_outcome(names, len(digests)))
        raise
    except BaseException:  # Ctrl-C, the engine's connection lost: the name being pushed may have landed already
        say(push_outcome(names, len(digests), interrupted=True))
        raise
    return digests


def push_outcome(names: list[ImageName], pushed: int, *, interrupted: bool = False) -> str:
    """What a push that stopped part way left: the names pushed, and those not (whose registry tag is as it was).

    ``interrupted``: stopped while the engine pushed ``names[pushed]``, which the registry may or may not have taken
    (its manifest is the push's last request): that name is neither pushed nor not pushed, but said to be unknown.
    """
    done = ", ".join(str(name) for name in names[:pushed]) or "nothing"
    unknown = names[pushed : pushed + 1] if interrupted else []
    left = ", ".join(str(name) for name in names[pushed + len(unknown) :])
    text = f"push stopped: pushed {done}"
    if unknown:
        text += f"; {unknown[0]} was being pushed and may or may not have reached the registry (push it again)"
    if left:
        text += f"; not pushed: {left} (the registry keeps what those names had before)"
    return text


def push_image(client: docker.DockerClient, name: ImageName) -> str:
    """Push one tag with the SDK (credentials from the Docker config); its digest, or :class:`PushFailed`."""
    digest = ""
    try:
        # No auth_config: the SDK finds the registry's credentials in the Docker config, helpers included.
        stream = client.images.push(name.repository, tag=name.tag, stream=True, decode=True)
        for chunk in stream:
            error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
            if error:
                raise push_failure(name, str(error))
            digest = (chunk.get("aux") or {}).get("Digest") or digest
    except docker.errors.APIError as exc:
        raise push_failure(name, str(exc.explanation or exc)) from None
    except docker.errors.DockerException as exc:
        # The SDK's own failures before the request: a credential helper that is missing or fails, say.
        raise push_failure(name, str(exc)) from None
    return digest


# What the engine says (Docker 20.10 to 28) -> what is wrong and what to do; {registry} is filled in.
_CAUSES: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(r"server gave HTTP response to HTTPS client", re.I),
        "the registry speaks plain HTTP and the engine only allows HTTPS for it",
        'serve the registry with TLS, or list it in the engine\'s /etc/docker/daemon.json as "insecure-registries": '
        '["{registry}"] and restart dockerd (127.0.0.0/8 is allowed by default)',
    ),
    (
        re.compile(r"x509|certificate signed by unknown authority|certificate is not valid|tls: ", re.I),
        "the engine does not trust the registry's TLS certificate",
        "put the registry's CA certificate in /etc/docker/certs.d/{registry}/ca.crt on the engine's machine "
        '(or list it in daemon.json "insecure-registries")',
    ),
    (
        re.compile(r"unauthorized|authentication required|no basic auth credentials|denied|forbidden|401|403", re.I),
        "the registry refused the credentials (or none were found for it)",
        "log in first (docker login {registry}); warptasks uses the Docker config in DOCKER_CONFIG or ~/.docker, "
        "with its credential helpers",
    ),
    (
        re.compile(r"credentials|docker-credential", re.I),
        "the Docker config's credential helper failed",
        "check the credsStore/credHelpers entries of the Docker config (DOCKER_CONFIG or ~/.docker/config.json) "
        "and that their docker-credential-* programs are installed",
    ),
    (
        re.compile(
            r"connection refused|no such host|dial tcp|i/o timeout|network is unreachable|no route to host|"
            r"Temporary failure in name resolution|EOF",
            re.I,
        ),
        "the engine could not reach the registry",
        "check the registry's address and port in the name, that it runs, and that the engine's machine can reach it",
    ),
]


def push_failure(name: ImageName, error: str) -> PushFailed:
    """A :class:`PushFailed` naming the cause the engine's error points to, and what to do about it."""
    registry = registry_of(name)
    detail = " ".join(error.split())[:300]
    for pattern, cause, hint in _CAUSES:
        if pattern.search(error):
            return PushFailed(f"could not push {name}: {cause} ({detail})", hint.format(registry=registry))
    return PushFailed(f"could not push {name} to {registry}: {detail}", "see the engine's message")


def tag_all(client: docker.DockerClient, image_id: str, names: list[ImageName]) -> None:
    for name in names:
        try:
            client.api.tag(image_id, name.repository, name.tag, force=True)
        except docker.errors.APIError as exc:
            raise WarpError(f"could not tag the image as {name}: {exc.explanation or exc}") from None
