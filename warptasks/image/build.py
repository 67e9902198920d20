"""Application and S2I builder images: the same build plan as ``warp build``, run by the engine.

An application image is built in two phases, each a cached layer: the
dependencies (from the dependency files alone), then the code; its runtime
stage then takes what runs, without the compilers or warptasks (see
:mod:`warptasks.image.dockerfile`). Facts about the
base image and about warptasks' own environment in it are read with the probe,
and :func:`warptasks.plan.plan_build` plans the build, as it does locally.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker

from .. import __version__
from ..detect import AppSpec
from ..errors import WarpError
from ..facts import Facts
from ..plan import BuildOptions, Plan, env_paths, plan_build
from ..sourcefiles import GIT
from . import dockerfile as img
from .context import build_context
from .engine import (
    EngineBuild,
    ImageOptions,
    Say,
    engine,
    engine_build,
    ensure_base_image,
    probe_image_data,
    say_line,
    tag_image,
)
from .wheel import warptasks_wheel


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


def git_commit(root: str) -> str | None:
    try:
        argv = [*GIT, "-C", root, "rev-parse", "HEAD"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def git_source(root: str) -> str | None:
    """The URL of the repository's ``origin`` remote, without any credentials in it; None without one."""
    try:
        argv = [*GIT, "-C", root, "remote", "get-url", "origin"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    url = done.stdout.strip()
    if done.returncode != 0 or not url:
        return None
    return public_url(url)


def public_url(url: str) -> str | None:
    """``url`` as an image label may show it: no user, password or token (``HTTPS://u:p@ss@host/r?token=x`` is
    ``https://host/r``); None for a local path (it names a folder of the build machine, nothing anyone can fetch)."""
    scheme, sep, rest = url.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        if scheme.lower() == "file":
            return None
        # The userinfo ends at the authority's LAST "@" (a password may hold one); the query and fragment may hold
        # tokens (?access_token=...), and an image's source needs neither.
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        path = re.split(r"[?#]", rest[len(authority) :], maxsplit=1)[0]
        return f"{scheme.lower()}://{authority.rpartition('@')[2]}{path}"
    first, slash, path = url.partition("/")
    if ":" not in first:
        return None  # a local path, relative or absolute
    return first.rpartition("@")[2] + slash + path  # scp-like [user[:password]@]host:path keeps the host and path


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
    base_id = ensure_base_image(client, base, options.pull, say)
    base_facts = cached_probe(client, base_id, "python3", {}, name=base)
    packages, packages_why = img.system_packages(server, base_facts, base_facts.package_manager)
    runtime = img.runtime_packages(server, base_facts, base_facts.package_manager)
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
        runtime,
        img.server(server).stop_signal,
        img.env_stage(None if builder else spec),
        img.PORT if builder else img.app_port(spec),
    )
    notes = img.plan_notes(build, packages_why, base_why, img.dependency_inputs(spec) if spec and not builder else None)
    if not builder:
        notes.append(
            "runtime stage: {} on the base, the environment, the app; no compiler, no warptasks".format(
                "installs " + " ".join(runtime) if runtime else "nothing installed"
            )
        )
    return build, wheel, notes, base_facts


def image_facts(client: docker.DockerClient, image_id: str, cache: Path | None = None) -> Facts:
    """Facts as ``warp build`` will read them inside the image (warptasks' own Python, uv, the app user)."""
    root, envs = env_paths(img.PROJECT, ".warp", img.ENVS)
    request = {"env_dir": root, "envs_dir": envs, "uv_candidates": [f"{img.WARP_HOME}/bin/uv"]}
    return cached_probe(client, image_id, f"{img.WARP_HOME}/bin/python", request, cache)


def cached_probe(
    client: docker.DockerClient,
    image_id: str,
    python: str,
    request: dict[str, Any],
    cache: Path | None = None,
    *,
    name: str | None = None,
) -> Facts:
    """Facts read by the probe in a container of ``image_id``, or read before: kept under ``cache``.

    An image never changes under its id, so what the probe read in it is kept under ``cache`` (default: the user's
    cache folder), keyed by the id and the request: a code-only rebuild, whose base and prefix images are the cached
    ones, starts no container to read them again. ``name``: the image as the user named it, for the errors.
    """
    folder = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "warptasks" / "image-facts"
    key = hashlib.sha256(json.dumps([image_id, python, request, __version__], sort_keys=True).encode()).hexdigest()
    path = folder / f"{key}.json"
    try:
        if _own(folder) and _own(path):
            return Facts.parse(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, WarpError):
        pass
    data = probe_image_data(client, image_id, python, request, name=name)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_uid == os.geteuid():
            folder.chmod(0o700)  # made by an earlier version under a umask of 002: this account's alone from now on
        handle, partial = tempfile.mkstemp(dir=folder, suffix=".tmp")  # 0600, a name no one can plant beforehand
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(data))
        Path(partial).replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs the next build a probe
    return Facts.parse(data)


def _own(path: Path) -> bool:
    """Whether ``path`` is this account's and no one else's to write: a cached base image's facts choose the runtime
    stage's packages, and an entry another account could write (a shared XDG_CACHE_HOME) would choose them for it."""
    found = path.lstat()
    return found.st_uid == os.geteuid() and not found.st_mode & 0o022 and not stat.S_ISLNK(found.st_mode)


def build_app_image(
    spec: AppSpec, options: ImageOptions, *, client: docker.DockerClient | None = None, say: Say = say_line
) -> ImageResult:
    """Build the application image: the same plan as ``warp build``, in two cached phases."""
    started = time.monotonic()
    name = img.parse_image_name(options.tag or img.default_image_name(spec))
    client = client or engine()
    build, wheel, notes, _ = _prepare(spec, options, client, say, builder=False)
    files = img.context_files(Path(spec.root), say)
    first, rest = img.split_context(spec, files)
    for note in notes:
        say(note)
    prefix = engine_build(client, build_context(img.prefix_dockerfile(build), build, wheel, options.extra_files), options, say)
    facts = image_facts(client, prefix.image_id)
    plan = plan_build(spec, facts, BuildOptions(project=img.PROJECT, envs_dir=img.ENVS, installer=options.installer))
    image_python = facts.python.version
    if spec.python.version and spec.python.version != image_python:
        notes.append(
            f"warning: {spec.python.why}, but {build.base_image} has Python {image_python}: "
            f"choose a matching --base-image (such as python:{spec.python.version}-slim)"
        )
        say(notes[-1])
    for note in plan.notes:
        say(note)
    build = replace(build, labels=build.labels | img.oci_labels(spec, name, build.labels, git_source(spec.root)))
    dockerfile = img.app_dockerfile(build)
    scripts = {
        "deps.sh": img.phase_script(plan, "deps"),
        "app.sh": img.phase_script(plan, "app"),
        "runtime.sh": img.runtime_script(build),
    }
    context = build_context(dockerfile, build, wheel, options.extra_files, (Path(spec.root), first, rest), scripts)
    result = engine_build(client, context, options, say)
    tag_image(client, result.image_id, name)
    say(f"image {name} built ({len(result.cached)} of {len(result.steps)} Dockerfile steps from the cache)")
    return ImageResult(str(name), result.image_id, plan, dockerfile, notes + list(plan.notes), result, time.monotonic() - started)


def build_builder_image(
    spec: AppSpec | None, options: ImageOptions, *, client: docker.DockerClient | None = None, say: Say = say_line
) -> ImageResult:
    """Build the S2I builder image: warptasks and the server's system needs on the base image, scripts at the label.

    Its ``assemble`` compiles (mod_wsgi, uWSGI), so the builder keeps the compilers and headers, and the images it
    makes are the builder committed (see :mod:`warptasks.image.s2i` for what the S2I flow allows there).
    """
    started = time.monotonic()
    name = img.parse_image_name(options.tag or "warp-builder:latest")
    client = client or engine()
    build, wheel, notes, _ = _prepare(spec, options, client, say, builder=True)
    for note in notes[:2]:
        say(note)
    dockerfile = img.builder_dockerfile(build)
    result = engine_build(client, build_context(dockerfile, build, wheel, options.extra_files), options, say)
    tag_image(client, result.image_id, name)
    say(f"builder image {name} built")
    return ImageResult(str(name), result.image_id, None, dockerfile, notes, result, time.monotonic() - started)
