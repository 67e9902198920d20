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
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors

from ..errors import ConfigError, StepFailed, WarpError
from ..facts import Facts
from ..run.executor import PROBE, tail
from ..run.progress import Heartbeat, beating, doing, seconds, summary
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
    timings: list[tuple[str, float]] = field(default_factory=list)  # plan steps that ran: name, seconds (as streamed)


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


def ensure_base_image(client: docker.DockerClient, name: str, pull: bool, say: Say) -> str:
    """The id of base image ``name``, pulled first when the engine lacks it (and ``pull``)."""
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        pass
    if not pull:
        raise ConfigError(
            f"base image {name} is not in the engine", "pull it first (docker pull), or choose another with --base-image"
        )
    say(f"pulling base image {name}")
    try:
        return str(client.images.pull(name).id)
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


def probe_image_data(
    client: docker.DockerClient, image: str, python: str, request: dict[str, Any], *, name: str | None = None
) -> dict[str, Any]:
    """What :func:`probe_image` parses: the probe's output, with the package manager and the C compiler.

    ``name``: the image as the user named it, for the errors, when ``image`` is its id (the one the facts are kept
    under: a container of the name could be another image by then).
    """

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
                f"image {name or image} has no {python}", "choose a base image with Python 3 (such as python:3.12-slim)"
            ) from None
        raise WarpError(f"could not read facts from image {name or image}: {tail(stderr, 5)}") from None
    except docker.errors.DockerException as exc:
        raise EngineError(f"could not run a container of {name or image}: {api_message(exc)}") from None
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
# The engine colours the output that RUN steps wrote to stderr: parsed without, shown without but on a terminal.
_COLOUR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXIT = re.compile(r"returned a non-zero code: (\d+)")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]+)")


def colour_shown(stream: Any, environ: Mapping[str, str]) -> bool:
    """Whether escape sequences may reach ``stream``: a terminal, and no ``NO_COLOR`` (https://no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not environ.get("NO_COLOR")


@dataclass
class _Progress:
    """What the build output has said so far: the Dockerfile step, the plan step (its marker line) and that step's output.

    Each plan step that ran is timed from its marker line to the next marker (or Dockerfile step, or the end), as
    the engine streams them: said when it ends, unless ``quiet``, and kept in the result's ``timings``.
    """

    result: EngineBuild
    quiet: bool
    say: Say = say_line
    clock: Callable[[], float] = time.monotonic
    colour: bool = False  # show the engine's escape sequences (a terminal); else they are stripped
    beat: Heartbeat | None = None  # told of output and of each step, for the heartbeat while the engine is silent
    instruction: str = ""
    plan_step: str = ""
    output: list[str] = field(default_factory=list)
    pending: str = ""  # the start of a line whose end has not arrived yet
    timing: tuple[str, str, float] | None = None  # the plan step running: its label, name and start

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self.fail(chunk["error"])
        text = chunk.get("stream") or ""
        if not text:
            if chunk.get("aux", {}).get("ID"):
                self.result.image_id = chunk["aux"]["ID"]
            return
        if self.beat is not None:
            self.beat.output(text)
        shown = len(self.pending)  # the start of the line already shown (as it came)
        *lines, rest = (self.pending + text).split("\n")
        for line in lines:
            # Parsed before it is shown: a step's "done in" comes before the next step's line.
            self._line(_COLOUR.sub("", line))
            self._show(line[shown:] + "\n")
            shown = 0
        self._show(rest[shown:])
        self.pending = rest

    def _show(self, text: str) -> None:
        if text and not self.quiet:
            sys.stdout.write(text if self.colour else _COLOUR.sub("", text))
            sys.stdout.flush()

    def _line(self, line: str) -> None:
        step = _STEP.match(line)
        marker = img.STEP_MARKER.match(line)
        if step:
            self.end_step()
            self.instruction = step.group(3)
            self.result.steps.append(self.instruction)
            self.plan_step, self.output = "", []
            self._begin(f"Dockerfile step {step.group(1)}/{step.group(2)} ({self.instruction[:50]})")
        elif line.strip() == "---> Using cache" and self.instruction:
            self.result.cached.append(self.instruction)
        elif marker:
            self.end_step()
            self.plan_step, self.output = line, []
            label, _, why = line.partition(": ")
            self.timing = (label, marker.group("name"), self.clock())
            self._begin(doing(marker.group("name"), why))
        else:
            self.output.append(line)
        built = _BUILT.match(line)
        if built and not self.result.image_id:
            self.result.image_id = built.group(1)

    def _begin(self, what: str) -> None:
        if self.beat is not None:
            self.beat.begin(what)

    def end_step(self, outcome: str = "done in") -> None:
        """The plan step that was running has ended: say how long it took."""
        if self.timing is None:
            return
        label, name, began = self.timing
        self.timing = None
        took = self.clock() - began
        if outcome == "done in":
            self.result.timings.append((name, took))
        if not self.quiet:
            self.say(f"{label}: {outcome} {seconds(took)}")

    def fail(self, error: str) -> NoReturn:
        self.end_step("failed after")
        build_failure(error, self.instruction, self.plan_step, self.output, self.quiet)


def engine_build(
    client: docker.DockerClient,
    context: io.BytesIO,
    options: ImageOptions,
    say: Say,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> EngineBuild:
    """Build a context with the engine, streaming its output; a failure names the plan step that failed.

    Unless ``options.quiet``: each plan step's elapsed time, a heartbeat while the engine is silent (see
    :mod:`warptasks.run.progress`), and, when plan steps ran, a last line of where the time went.
    """
    started = clock()
    beat = None if options.quiet else Heartbeat("the image build", clock=clock)
    progress = _Progress(EngineBuild(image_id=""), options.quiet, say, clock, colour_shown(sys.stdout, os.environ), beat)
    try:
        with beating(beat, say) if beat is not None else nullcontext():
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
    progress.end_step()
    result = progress.result
    if not result.image_id:
        raise EngineError("the engine finished the build without naming an image", "see the build output above")
    result.seconds = clock() - started
    if result.timings:
        say(summary("built", result.seconds, result.timings))
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
