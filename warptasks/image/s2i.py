"""The S2I way, without the s2i tool: source into a builder container, ``assemble``, commit with ``run``.

``--incremental`` first runs the previous image's ``save-artifacts`` and puts
what it saved (the built environment) where ``assemble`` restores it from, so
unchanged dependencies are not installed again.

What the S2I flow allows for the images it makes: an S2I image is the builder
container, committed after ``assemble``, so it keeps all the builder has (the
compilers and headers ``assemble`` needs for mod_wsgi, warptasks and its SDKs):
``warp s2i`` without ``--builder`` makes the small multi-stage image instead. A
commit can set CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME and WORKDIR,
not STOPSIGNAL or HEALTHCHECK, so those come from the builder image, which is
built before any app, for any server. The s2i tool itself can do better
(``s2i build ... --runtime-image IMAGE --runtime-artifact PATH``): it copies
the named paths from the assembled builder container into the WORKDIR of a
container of a runtime image, runs that image's ``assemble-runtime`` script as
its USER, and commits that one. It rewrites the copies' modes (0755 for folders
and executables, 0644 for the rest), and refuses to combine it with an
incremental build. For warptasks that would take a runtime image with the
same base (the same Python at the same path, as a virtualenv needs),
``/opt/app-root/src`` as the artifact, and an ``assemble-runtime`` that gives
group 0 its write access back; not built yet.
"""

from __future__ import annotations

import io
import sys
import tarfile
import time
from pathlib import Path

import docker
import docker.errors

from ..detect import AppSpec
from ..errors import ConfigError, StepFailed
from ..run.executor import tail
from . import dockerfile as img
from .build import ImageResult, git_commit, git_source
from .context import moved_under, source_tar
from .engine import ImageOptions, Say, engine, say_line, tag_image


def save_artifacts(client: docker.DockerClient, image: str) -> bytes | None:
    """The previous image's saved environment (its save-artifacts output), or None."""
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
            return moved_under(iter([data]), "artifacts") if data else None
        return None
    finally:
        container.remove(force=True)


def s2i_build(
    spec: AppSpec, options: ImageOptions, builder: str, *, client: docker.DockerClient | None = None, say: Say = say_line
) -> ImageResult:
    """Build the app the S2I way, without the s2i tool: source into a builder container, assemble, commit with run."""
    started = time.monotonic()
    name = img.parse_image_name(options.tag or img.default_image_name(spec))
    client = client or engine()
    files = img.context_files(Path(spec.root), say)
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
        container.put_archive("/tmp", source_tar(Path(spec.root), files, "src"))
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
        labels |= img.oci_labels(spec, name, labels, git_source(spec.root))
        changes = [f'CMD ["{img.S2I_SCRIPTS}/run"]', f"USER {img.USER_ID}", *img.server_env_lines(options.server)]
        changes += [f"LABEL {k}={img.label_value(v)}" for k, v in labels.items()]
        committed = container.commit(changes=changes)
    finally:
        container.remove(force=True)
    tag_image(client, committed.id, name)
    say(f"image {name} built from builder {builder}")
    return ImageResult(str(name), committed.id, None, "", [], None, time.monotonic() - started, "".join(output))
