"""Building images with a Docker engine, through the Docker SDK for Python.

The engine is found as the ``docker`` CLI finds it (``DOCKER_HOST``, else the
default socket). Facts about a base image are read by running warptasks'
probe in a throwaway container of it; the build plan is then made by
:func:`warptasks.plan.plan_build`, the same function ``warp build`` uses.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..detect import AppSpec
from ..errors import ConfigError, StepFailed, WarpError
from ..facts import Facts
from ..plan import BuildOptions, Plan, env_paths, plan_build
from ..run.executor import PROBE, tail
from . import dockerfile as img
from .wheel import warptasks_wheel

if TYPE_CHECKING:
    import docker

Say = Callable[[str], None]


def _say(text: str) -> None:
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


@dataclass
class ImageResult:
    name: str
    image_id: str
    plan: Plan | None
    dockerfile: str
    notes: list[str]
    build: EngineBuild | None
    seconds: float
    log: str = ""  # the assemble output of an S2I build


def engine() -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST (or the default socket), checked to answer."""
    import docker
    import docker.errors

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
    import docker.errors

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
            f"base image {name} is not in the engine and could not be pulled: {_api_message(exc)}",
            "pull or load it where a registry is reachable (docker pull / docker load), or choose another with --base-image",
        ) from None


def _api_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).splitlines()[0][:300]


# Tools beside the probe's facts that decide what the base image needs.
_TOOLS = 'for t in apt-get cc gcc; do command -v "$t" || true; done'


def probe_image(client: docker.DockerClient, image: str, python: str, request: dict[str, Any]) -> Facts:
    """Facts about ``image``, read by warptasks' probe in a throwaway container (no network)."""
    import docker.errors

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
        raise EngineError(f"could not run a container of {image}: {_api_message(exc)}") from None
    lines = output.decode(errors="replace").splitlines()
    facts = json.loads(lines[0])
    tools = {Path(line.strip()).name: line.strip() for line in lines[1:] if line.strip()}
    facts["package_manager"] = "apt-get" if "apt-get" in tools else None
    facts["cc"] = tools.get("cc") or tools.get("gcc")
    return Facts.parse(facts)


def _tar_add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    info.uid, info.gid = img.USER_ID, 0
    archive.addfile(info, io.BytesIO(data))


def _tar_dir(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, 0o775, 0, img.USER_ID, 0
    archive.addfile(info)


def _tar_tree(archive: tarfile.TarFile, root: Path, files: Iterable[str], prefix: str) -> None:
    """Project files under ``prefix``, with fixed times and owners (so the layer cache depends on content only).

    Everything is made group-writable: the app may run under any uid in group 0.
    """
    seen_dirs: set[str] = set()
    for rel in files:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in seen_dirs:
                seen_dirs.add(directory)
                _tar_dir(archive, f"{prefix}/{directory}")
        path = root / rel
        if path.is_symlink():
            info = tarfile.TarInfo(f"{prefix}/{rel}")
            info.type, info.linkname, info.mtime, info.uid, info.gid = tarfile.SYMTYPE, os.readlink(path), 0, img.USER_ID, 0
            archive.addfile(info)
            continue
        mode = os.stat(path).st_mode
        _tar_add(archive, f"{prefix}/{rel}", path.read_bytes(), 0o775 if mode & 0o111 else 0o664)


def _s2i_scripts() -> dict[str, bytes]:
    folder = package_files("warptasks.scripts").joinpath("s2i")
    return {name: folder.joinpath(name).read_bytes() for name in ("assemble", "run", "save-artifacts", "usage")}


def _prefix_context(archive: tarfile.TarFile, build: img.ImageBuild, wheel: bytes, extra_files: dict[str, bytes]) -> None:
    _tar_add(archive, f"warp/{build.wheel}", wheel)
    for name, data in _s2i_scripts().items():
        _tar_add(archive, f"warp/s2i/{name}", data, 0o755)
    _tar_dir(archive, "warp/files")
    for path, data in sorted(extra_files.items()):
        _tar_add(archive, "warp/files/" + path.lstrip("/"), data)


def _context(
    dockerfile: str,
    build: img.ImageBuild,
    wheel: bytes,
    extra_files: dict[str, bytes],
    tree: tuple[Path, list[str], list[str]] | None = None,
    scripts: dict[str, str] | None = None,
) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _tar_add(archive, "Dockerfile", dockerfile.encode())
        _prefix_context(archive, build, wheel, extra_files)
        for name, text in (scripts or {}).items():
            _tar_add(archive, f"warp/build/{name}", text.encode())
        if tree:
            root, first, rest = tree
            _tar_dir(archive, "deps")
            _tar_dir(archive, "src")
            _tar_tree(archive, root, first, "deps")
            _tar_tree(archive, root, rest, "src")
    buffer.seek(0)
    return buffer


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # the engine colours the output that RUN steps wrote to stderr
_EXIT = re.compile(r"returned a non-zero code: (\d+)")


def engine_build(client: docker.DockerClient, context: io.BytesIO, options: ImageOptions, say: Say) -> EngineBuild:
    """Build a context with the engine, streaming its output; a failure names the plan step that failed."""
    import docker.errors

    started = time.monotonic()
    result = EngineBuild(image_id="")
    instruction = ""
    plan_step = ""
    step_output: list[str] = []
    pending = ""
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
            if "error" in chunk:
                _fail(chunk["error"], instruction, plan_step, step_output, options.quiet)
            text = chunk.get("stream") or ""
            if not text:
                if chunk.get("aux", {}).get("ID"):
                    result.image_id = chunk["aux"]["ID"]
                continue
            if not options.quiet:
                sys.stdout.write(text)
                sys.stdout.flush()
            pending += text
            *lines, pending = pending.split("\n")
            for line in lines:
                line = _COLOUR.sub("", line)
                step = _STEP.match(line)
                marker = img.STEP_MARKER.match(line)
                if step:
                    instruction = step.group(3)
                    result.steps.append(instruction)
                    plan_step, step_output = "", []
                elif line.strip() == "---> Using cache" and instruction:
                    result.cached.append(instruction)
                elif marker:
                    plan_step, step_output = line, []
                else:
                    step_output.append(line)
                built = re.match(r"^Successfully built ([0-9a-f]+)", line)
                if built and not result.image_id:
                    result.image_id = built.group(1)
    except docker.errors.BuildError as exc:
        _fail(str(exc.msg), instruction, plan_step, step_output, options.quiet)
    except docker.errors.APIError as exc:
        raise EngineError(f"the engine refused the build: {_api_message(exc)}") from None
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


def _fail(error: str, instruction: str, plan_step: str, output: list[str], quiet: bool) -> None:
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


def git_commit(root: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def _local_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _prepare(
    spec: AppSpec | None, options: ImageOptions, client: docker.DockerClient, say: Say, *, builder: bool
) -> tuple[img.ImageBuild, bytes, list[str], Facts]:
    """The shared prefix: base image facts, system packages, warptasks; built and probed."""
    # A builder serves any app, so it gets what the default server (mod_wsgi) needs.
    server = img.server_of(spec) if spec and not builder else "mod_wsgi"
    if options.base_image:
        base, base_why = options.base_image, "--base-image"
    elif spec:
        base, base_why = img.default_base_image(spec, _local_version())
    else:
        base, base_why = f"python:{_local_version()}-slim", f"official Python image for the local Python {_local_version()}"
    ensure_base_image(client, base, options.pull, say)
    base_facts = probe_image(client, base, "python3", {})
    packages, packages_why = img.system_packages(server, base_facts, base_facts.package_manager)
    wheel_name, wheel = warptasks_wheel()
    build = img.ImageBuild(
        base,
        packages,
        base_facts.python.executable,
        wheel_name,
        img.image_labels(spec, server, git_commit(spec.root) if spec else None, builder=builder),
        builder,
        tuple(sorted(options.build_env)),
        tuple(sorted(options.extra_files)),
        None if builder else options.server,
    )
    notes = img.plan_notes(build, packages_why, base_why, img.dependency_inputs(spec) if spec and not builder else None)
    return build, wheel, notes, base_facts


def image_facts(client: docker.DockerClient, image_id: str) -> Facts:
    """Facts as ``warp build`` will read them inside the image (warptasks' own Python, uv, the app user)."""
    root, envs = env_paths(img.PROJECT, ".warp", "")
    return probe_image(
        client,
        image_id,
        f"{img.WARP_HOME}/bin/python",
        {"env_dir": root, "envs_dir": envs, "uv_candidates": [f"{img.WARP_HOME}/bin/uv"]},
    )


def build_app_image(
    spec: AppSpec, options: ImageOptions, *, client: docker.DockerClient | None = None, say: Say = _say
) -> ImageResult:
    """Build the application image: the same plan as ``warp build``, in two cached phases."""
    started = time.monotonic()
    name = img.parse_image_name(options.tag or img.default_image_name(spec))
    client = client or engine()
    build, wheel, notes, _ = _prepare(spec, options, client, say, builder=False)
    files = img.context_files(Path(spec.root))
    first, rest = img.split_context(spec, files)
    for note in notes:
        say(note)
    prefix = engine_build(client, _context(img.prefix_dockerfile(build), build, wheel, options.extra_files), options, say)
    facts = image_facts(client, prefix.image_id)
    plan = plan_build(spec, facts, BuildOptions(project=img.PROJECT, installer=options.installer))
    image_python = facts.python.version
    if spec.python.version and spec.python.version != image_python:
        notes.append(
            f"warning: {spec.python.why}, but {build.base_image} has Python {image_python}: "
            f"choose a matching --base-image (such as python:{spec.python.version}-slim)"
        )
        say(notes[-1])
    for note in plan.notes:
        say(note)
    dockerfile = img.app_dockerfile(build)
    scripts = {"deps.sh": img.phase_script(plan, "deps"), "app.sh": img.phase_script(plan, "app")}
    context = _context(dockerfile, build, wheel, options.extra_files, (Path(spec.root), first, rest), scripts)
    result = engine_build(client, context, options, say)
    _tag(client, result.image_id, name)
    say(f"image {name} built ({len(result.cached)} of {len(result.steps)} Dockerfile steps from the cache)")
    return ImageResult(str(name), result.image_id, plan, dockerfile, notes + list(plan.notes), result, time.monotonic() - started)


def build_builder_image(
    spec: AppSpec | None, options: ImageOptions, *, client: docker.DockerClient | None = None, say: Say = _say
) -> ImageResult:
    """Build the S2I builder image: warptasks and the server's system needs on the base image, scripts at the label."""
    started = time.monotonic()
    name = img.parse_image_name(options.tag or "warp-builder:latest")
    client = client or engine()
    build, wheel, notes, _ = _prepare(spec, options, client, say, builder=True)
    for note in notes[:2]:
        say(note)
    dockerfile = img.builder_dockerfile(build)
    result = engine_build(client, _context(dockerfile, build, wheel, options.extra_files), options, say)
    _tag(client, result.image_id, name)
    say(f"builder image {name} built")
    return ImageResult(str(name), result.image_id, None, dockerfile, notes, result, time.monotonic() - started)


def _tag(client: docker.DockerClient, image_id: str, name: img.ImageName) -> None:
    import docker.errors

    try:
        client.api.tag(image_id, name.repository, name.tag, force=True)
    except docker.errors.APIError as exc:
        raise EngineError(f"could not tag the image as {name}: {_api_message(exc)}") from None


def _source_tar(root: Path, files: list[str], prefix: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _tar_dir(archive, prefix)
        _tar_tree(archive, root, files, prefix)
    return buffer.getvalue()


def _rename_tar(stream: Iterator[bytes], prefix: str) -> bytes:
    """A tar from ``save-artifacts`` with every member moved under ``prefix``."""
    source = tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r|*")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _tar_dir(archive, prefix)
        for member in source:
            data = source.extractfile(member) if member.isfile() else None
            member.name = f"{prefix}/{member.name.removeprefix('./')}".rstrip("/")
            if member.islnk():
                member.linkname = f"{prefix}/{member.linkname.removeprefix('./')}"
            archive.addfile(member, data)
    return buffer.getvalue()


def save_artifacts(client: docker.DockerClient, image: str) -> bytes | None:
    """The previous image's saved environment (its save-artifacts output), or None."""
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    # Through a file, not the container's log: logs are line-oriented text and would mangle a tar.
    saved = "/tmp/warp-artifacts.tar"
    container = client.containers.create(image, ["sh", "-c", f"{img.S2I_SCRIPTS}/save-artifacts > {saved}"], network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=300)
        if status.get("StatusCode") != 0:
            return None
        stream, _ = container.get_archive(saved)
        outer = tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r|*")
        for member in outer:
            handle = outer.extractfile(member)
            data = handle.read() if handle else b""
            return _rename_tar(iter([data]), "artifacts") if data else None
        return None
    finally:
        container.remove(force=True)


def s2i_build(
    spec: AppSpec, options: ImageOptions, builder: str, *, client: docker.DockerClient | None = None, say: Say = _say
) -> ImageResult:
    """Build the app the S2I way, without the s2i tool: source into a builder container, assemble, commit with run."""
    import docker.errors

    started = time.monotonic()
    name = img.parse_image_name(options.tag or img.default_image_name(spec))
    client = client or engine()
    files = img.context_files(Path(spec.root))
    artifacts = save_artifacts(client, str(name)) if options.incremental else None
    chosen = {img.SERVER_VARIABLE: options.server} if options.server else {}
    env_args = [f"{k}={v}" for k, v in sorted((options.build_env | chosen).items())]
    # The build environment goes on the command line, not into the container's config: a commit keeps the config.
    command = ["env", *env_args, f"{img.S2I_SCRIPTS}/assemble"]
    try:
        container = client.containers.create(builder, command, network_mode=options.network, user=str(img.USER_ID))
    except docker.errors.ImageNotFound:
        raise ConfigError(f"builder image {builder} is not in the engine", "build it first with warp builder") from None
    try:
        container.put_archive("/tmp", _source_tar(Path(spec.root), files, "src"))
        if artifacts:
            say("restoring artifacts saved by the previous image")
            container.put_archive("/tmp", artifacts)
        container.start()
        output: list[str] = []
        for chunk in container.logs(stream=True, follow=True):
            text = chunk.decode(errors="replace")
            output.append(text)
            if not options.quiet:
                sys.stdout.write(text)
                sys.stdout.flush()
        status = container.wait(timeout=3600).get("StatusCode", 1)
        if status != 0:
            raise StepFailed(
                f"assemble failed (exit {status}) in builder {builder}",
                "see its output above; nothing was tagged",
                output=tail("".join(output), 25) if options.quiet else "",
                exit_code=status,
            )
        labels = img.image_labels(spec, img.server_of(spec), git_commit(spec.root), builder=False)
        changes = [f'CMD ["{img.S2I_SCRIPTS}/run"]', f"USER {img.USER_ID}", *img.server_env_lines(options.server)]
        changes += [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
        committed = container.commit(changes=changes)
    finally:
        container.remove(force=True)
    _tag(client, committed.id, name)
    say(f"image {name} built from builder {builder}")
    return ImageResult(str(name), committed.id, None, "", [], None, time.monotonic() - started, "".join(output))
