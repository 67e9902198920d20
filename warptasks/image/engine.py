"""Talking to a Docker engine, through the Docker SDK for Python: the client, base images, probes, builds.

The engine is found as the ``docker`` CLI finds it (``DOCKER_HOST``, else the
default socket). Facts about an image are read by running warptasks' probe in
a throwaway container of it. A build streams the engine's output and, when a
step fails, names the plan step that failed (each phase script prints a
marker line before each step).

The Docker SDK is imported at the top here: only the image tasks import this
package, and only when they run (see :mod:`warptasks.tasks.image`).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors

from ..errors import ConfigError, StepFailed, WarpError
from ..facts import Facts
from ..run.executor import PROBE, tail
from . import dockerfile as img

Say = Callable[[str], None]


def say_line(text: str) -> None:
    print(text, flush=True)


class EngineError(WarpError):
    """The Docker engine cannot be reached, or refused a request."""


@dataclass(frozen=True)
class ImageOptions:
    tag: str | None = None
    base_image: str | None = None
    network: str | None = None  # "host" where the engine's default bridge has no outbound access
    installer: str = "auto"
    build_env: dict[str, str] = field(default_factory=dict)  # build arguments: not for secrets (see ImageBuild.build_args)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # image path -> content, e.g. a CA bundle for the index
    pull: bool = True  # pull a missing base image
    quiet: bool = False  # do not stream build output (a failing step's output is still shown)
    incremental: bool = False  # --builder: reuse the environment saved by the previous image
    cache: bool = True  # reuse the engine's cached layers
    server: str | None = None  # the server chosen with --server (the image's warp start must use it too)


@dataclass
class EngineBuild:
    """What one engine build did: the image, and which Dockerfile steps came from the cache."""

    image_id: str
    steps: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0


def engine() -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST (or the default socket), checked to answer."""

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default; DOCKER_HOST is not set)"
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(
            f"no Docker engine reachable at {where}: {_reason(exc)}",
            "start the engine (systemctl start docker, or run dockerd), or point DOCKER_HOST at a running one "
            "(for example DOCKER_HOST=unix:///path/to/docker.sock or tcp://host:2376)",
        ) from None
    return client


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def ensure_base_image(client: docker.DockerClient, name: str, pull: bool, say: Say) -> None:

    try:
        client.images.get(name)
        return
    except docker.errors.ImageNotFound:
        pass
    if not pull:
        raise ConfigError(
            f"base image {name} is not in the engine", "pull it first (docker pull), or choose another with --base-image"
        )
    say(f"pulling base image {name}")
    try:
        client.images.pull(name)
    except docker.errors.DockerException as exc:
        raise ConfigError(
            f"base image {name} is not in the engine and could not be pulled: {api_message(exc)}",
            "pull or load it where a registry is reachable (docker pull / docker load), or choose another with --base-image",
        ) from None


def api_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).splitlines()[0][:300]


# Tools beside the probe's facts that decide what the base image needs.
_TOOLS = 'for t in apt-get cc gcc; do command -v "$t" || true; done'


def probe_image(client: docker.DockerClient, image: str, python: str, request: dict[str, Any]) -> Facts:
    """Facts about ``image``, read by warptasks' probe in a throwaway container (no network)."""
    return Facts.parse(probe_image_data(client, image, python, request))


def probe_image_data(client: docker.DockerClient, image: str, python: str, request: dict[str, Any]) -> dict[str, Any]:
    """What :func:`probe_image` parses: the probe's output, with the package manager and the C compiler."""

    script = f'"$1" -c "$2" "$3" && echo && {_TOOLS}'
    try:
        output = client.containers.run(
            image,
            ["-c", script, "sh", python, PROBE, json.dumps(request)],
            entrypoint=["sh"],
            network_mode="none",
            remove=True,
            stdout=True,
            stderr=True,
        )
    except docker.errors.ContainerError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
        if exc.exit_status == 127:
            raise ConfigError(
                f"image {image} has no {python}", "choose a base image with Python 3 (such as python:3.12-slim)"
            ) from None
        raise WarpError(f"could not read facts from image {image}: {tail(stderr, 5)}") from None
    except docker.errors.DockerException as exc:
        raise EngineError(f"could not run a container of {image}: {api_message(exc)}") from None
    lines = output.decode(errors="replace").splitlines()
    facts = json.loads(lines[0])
    tools = {Path(line.strip()).name: line.strip() for line in lines[1:] if line.strip()}
    facts["package_manager"] = "apt-get" if "apt-get" in tools else None
    facts["cc"] = tools.get("cc") or tools.get("gcc")
    return facts


def tag_image(client: docker.DockerClient, image_id: str, name: img.ImageName) -> None:
    try:
        client.api.tag(image_id, name.repository, name.tag, force=True)
    except docker.errors.APIError as exc:
        raise EngineError(f"could not tag the image as {name}: {api_message(exc)}") from None


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # the engine colours the output that RUN steps wrote to stderr
_EXIT = re.compile(r"returned a non-zero code: (\d+)")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]+)")


@dataclass
class _Progress:
    """What the build output has said so far: the Dockerfile step, the plan step (its marker line) and that step's output."""

    result: EngineBuild
    quiet: bool
    instruction: str = ""
    plan_step: str = ""
    output: list[str] = field(default_factory=list)
    pending: str = ""  # the start of a line whose end has not arrived yet

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self.fail(chunk["error"])
        text = chunk.get("stream") or ""
        if not text:
            if chunk.get("aux", {}).get("ID"):
                self.result.image_id = chunk["aux"]["ID"]
            return
        if not self.quiet:
            sys.stdout.write(text)
            sys.stdout.flush()
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(_COLOUR.sub("", line))

    def _line(self, line: str) -> None:
        step = _STEP.match(line)
        marker = img.STEP_MARKER.match(line)
        if step:
            self.instruction = step.group(3)
            self.result.steps.append(self.instruction)
            self.plan_step, self.output = "", []
        elif line.strip() == "---> Using cache" and self.instruction:
            self.result.cached.append(self.instruction)
        elif marker:
            self.plan_step, self.output = line, []
        else:
            self.output.append(line)
        built = _BUILT.match(line)
        if built and not self.result.image_id:
            self.result.image_id = built.group(1)

    def fail(self, error: str) -> NoReturn:
        build_failure(error, self.instruction, self.plan_step, self.output, self.quiet)


def engine_build(client: docker.DockerClient, context: io.BytesIO, options: ImageOptions, say: Say) -> EngineBuild:
    """Build a context with the engine, streaming its output; a failure names the plan step that failed."""
    started = time.monotonic()
    progress = _Progress(EngineBuild(image_id=""), options.quiet)
    try:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            rm=True,
            forcerm=True,
            decode=True,
            pull=False,
            nocache=not options.cache,
            network_mode=options.network,
            buildargs=dict(options.build_env) or None,
        )
        for chunk in stream:
            progress.feed(chunk)
    except docker.errors.BuildError as exc:
        progress.fail(str(exc.msg))
    except docker.errors.APIError as exc:
        raise EngineError(f"the engine refused the build: {api_message(exc)}") from None
    result = progress.result
    if not result.image_id:
        raise EngineError("the engine finished the build without naming an image", "see the build output above")
    result.seconds = time.monotonic() - started
    return result


# What a build step says when it cannot reach the package index (pip, uv, apt-get).
_NO_NETWORK = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|No route to host|"
    r"Failed to establish a new connection|dns error|failed to lookup address|Could not resolve|CERTIFICATE_VERIFY_FAILED|"
    r"certificate verify failed|invalid peer certificate|UnknownIssuer",
    re.IGNORECASE,
)


def build_failure(error: str, instruction: str, plan_step: str, output: list[str], quiet: bool) -> NoReturn:
    """Raise the StepFailed for a failed build: the plan step (or Dockerfile instruction) that failed, and what to do."""
    code = _EXIT.search(error)
    exit_code = int(code.group(1)) if code else 1
    shown = tail("\n".join(line for line in output if line.strip()), 25) if quiet else ""
    hint = "see {} output above; nothing was tagged".format("that step's" if plan_step else "the")
    if _NO_NETWORK.search("\n".join(output)):
        hint += (
            "; the build could not reach the package index: use --network host where the engine's bridge has no "
            "outbound access, --build-env PIP_INDEX_URL=... (and UV_INDEX_URL) for a mirror, --ca-bundle for a proxy's CA"
        )
    if plan_step:
        marker = img.STEP_MARKER.match(plan_step)
        name = marker.group("name") if marker else plan_step
        message = f"image build failed: step '{name}' exited with {exit_code} ({plan_step.split(': ', 1)[-1]})"
    else:
        last = error.strip().splitlines()[-1][:300] if error.strip() else "error"
        message = f"image build failed at '{instruction[:200]}': {last}"
    raise StepFailed(message, hint, output=shown, exit_code=exit_code)
