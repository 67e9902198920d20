"""What goes into an image: the build context's files and the Dockerfile, from a plan.

Pure functions, like :mod:`warptasks.plan`: they read the source tree and
return data. The image runs the same build plan as ``warp build`` does
locally: the plan's steps are written, through
:func:`warptasks.plan.command_line`, into one shell script per phase, and
the Dockerfile runs the dependency phase after copying only the files it
depends on, so a change to application code alone reuses that layer.

An application image is multi-stage. The ``build`` stage has warptasks, the
compilers and headers, and runs both phases; it then renders the start plan
to data (:mod:`warptasks.image.runtime`). The runtime stage starts again from
the base image with only the server's runtime packages, and gets the built
environment (copied from the ``deps`` stage, so a code-only change reuses that
layer; the environments are kept outside the project, in :data:`ENVS`), the
project folder as the build stage left it (the app, its collected static
files and start data: one copy, no staging), and a
standard-library entry point (:mod:`warptasks.scripts.image_start`) that sizes
the workers from the container's limits and execs the server. No warptasks,
no SDKs, no compiler: ``warp`` in the runtime image is that entry point
(``warp start [process type]``).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..detect import AppSpec
from ..errors import ConfigError
from ..facts import Facts
from ..plan import Plan, command_line
from ..plan.environment import start_port
from ..servers import resolve_server, server
from ..sourcefiles import image_files

APP_ROOT = "/opt/app-root"
PROJECT = f"{APP_ROOT}/src"  # where sclorg's S2I images keep the source; kept for familiarity
WARP_HOME = "/opt/warptasks"  # warptasks' own environment inside the image (gives warp, uv, dumb-init)
S2I_SCRIPTS = "/usr/libexec/s2i"
SCRIPTS_URL = f"image://{S2I_SCRIPTS}"
USER_ID = 1001
PORT = 8080
RUNTIME_LIB = f"{WARP_HOME}/lib"  # the runtime stage's entry point and the files it loads by path
START_DATA = f"{PROJECT}/.warp/image-start.json"  # the start plan rendered in the build stage
# The keyed environments, outside the project (the envs_dir setting, as a host's shared/envs): the runtime stage copies
# them from the ``deps`` stage, a layer a code change leaves as it was, and the project from the build stage, as it is.
ENVS = f"{APP_ROOT}/envs"
# Writable in a read-only container (docker run --read-only), as docker's --tmpfs arguments: /tmp and the server's
# runtime folder (StartContext.runtime), where servers write at run time (Apache's config, pid and sockets;
# mod_wsgi-express execs the apachectl it writes there, so that one must allow exec: docker's tmpfs is noexec).
WRITABLE_PATHS = ("/tmp", f"{PROJECT}/.warp/run:exec")
WRITABLE_LABEL = "io.warptasks.writable-paths"
# docker's defaults (30 s apart, 3 failures) are slow to notice a dead app; a check must answer within the timeout.
HEALTHCHECK_OPTIONS = "--interval=10s --timeout=8s --start-period=60s --retries=3"

SERVER_VARIABLE = "INVOKE_WARP_SERVER"  # invoke's environment form of the warp.server setting

# A compiled server needs the Python headers too where the base's Python is the distribution's own (prefix /usr):
# Debian keeps them in python3-dev. Per package manager, as a server's own system packages are.
PYTHON_HEADERS = {"apt-get": ("python3-dev",)}
# ... and, to run, the shared libpython it links to, which a Debian base with python3 alone lacks ({version}: 3.11).
PYTHON_SHARED = {"apt-get": ("libpython{version}",)}

_REFERENCE = re.compile(
    r"^(?:(?P<domain>(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
    r"(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?\Z",  # \Z: "$" would take a name ending in a newline
    re.ASCII,  # the grammar's \w is ASCII: a tag of other letters is refused here, not by the engine after the build
)


@dataclass(frozen=True)
class ImageName:
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def parse_image_name(name: str) -> ImageName:
    """``name`` as repository and tag, or a :class:`ConfigError` saying why it is not a valid reference."""
    match = _REFERENCE.match(name or "")
    # A lone "host:port" is a repository with a tag to the grammar; only a path component may hold no dot or colon.
    if not match or len(match.group(0)) > 255:
        raise ConfigError(
            f"{name!r} is not a valid image name",
            "use lowercase letters, digits and . _ - separators, an optional registry host and an optional :tag "
            "(for example registry.example.com/team/site:1.0)",
        )
    repository = name if match.group("tag") is None else name[: -len(match.group("tag")) - 1]
    return ImageName(repository, match.group("tag") or "latest")


def default_image_name(spec: AppSpec) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", Path(spec.root).name.lower()).strip("-") or "app"
    return f"warp-{base}:latest"


def default_base_image(spec: AppSpec, local_version: str) -> tuple[str, str]:
    """The official Python image matching the project's Python, and why."""
    version = spec.python.version or local_version
    why = spec.python.why if spec.python.version else f"the local Python is {local_version}"
    return f"python:{version}-slim", f"official Python image for Python {version} ({why})"


def context_files(root: Path, say: Callable[[str], None] = lambda _text: None) -> list[str]:
    """Every file (or symlink) of the project that goes into the image, relative, sorted.

    The exclusion list is the one releases use (:mod:`warptasks.sourcefiles`),
    with ``.dockerignore`` and ``.s2iignore`` on top. ``say`` hears of every file
    that looks like a secret: left out, or copied because an ignore file says so.
    """
    selection = image_files(root)
    for note in selection.withheld:
        say(f"not copied into the image: {note}")
    for note in selection.on_purpose:
        say(f"copying into the image {note}")
    return selection.files


def dependency_inputs(spec: AppSpec) -> tuple[str, ...] | None:
    """The files the dependency phase reads, relative to the root; None when it needs the whole source.

    A project installed as a package (setup.py, pyproject.toml with a build system) is installed by the app phase,
    after its code: the dependency layer still depends on the dependency files alone.
    """
    home = spec.home
    files = [posixpath.normpath(posixpath.join(home, f)) for f in spec.dependencies.files]
    files += list(spec.hooks.values()) + list(spec.environment_files)
    # The python version files decide nothing in an image, but .python-version is cheap and keeps detection identical.
    return tuple(sorted(set(files)))


def split_context(spec: AppSpec, files: list[str]) -> tuple[list[str], list[str]]:
    """(files copied before the dependency phase, files copied after it)."""
    wanted = dependency_inputs(spec)
    if wanted is None:
        return list(files), []
    missing = [f for f in wanted if f not in files]
    if missing:
        raise ConfigError(
            f"the build needs {', '.join(missing)}, but .dockerignore or .s2iignore excludes it",
            "remove the matching pattern from the ignore file",
        )
    first = [f for f in files if f in wanted]
    return first, [f for f in files if f not in wanted]


def system_packages(name: str, facts: Facts, package_manager: str | None) -> tuple[tuple[str, ...], str]:
    """System packages the base image needs for server ``name``, and why (empty when it has what it needs)."""
    chosen = server(name)
    needs = chosen.system
    if needs is None:
        return (), f"{name} needs no system packages"
    if all(getattr(facts, tool) for tool in needs.tools):
        return (), f"the base image has {needs.has}"
    wanted = needs.packages.get(package_manager or "")
    if wanted is None or package_manager is None:
        raise ConfigError(
            f"{name} needs {needs.needs}, which the base image lacks, "
            "and warptasks installs them only on Debian-based images (apt-get)",
            "use a Debian-based base image (such as python:3.12-slim), one that has them already, or --server gunicorn",
        )
    if chosen.compiled and facts.python.prefix == "/usr":
        wanted += PYTHON_HEADERS.get(package_manager, ())
    return wanted, f"the base image lacks {needs.lacks} for {name}: installed with {package_manager}"


def runtime_packages(name: str, facts: Facts, package_manager: str | None) -> tuple[str, ...]:
    """What the runtime stage installs for server ``name``: what the built server loads, never a compiler or headers.

    Nothing when the base has what the build needed (it was built on it: it runs on it), or when the server needs
    nothing beyond Python.
    """
    chosen = server(name)
    needs = chosen.system
    if needs is None or all(getattr(facts, tool) for tool in needs.tools):
        return ()
    wanted = tuple(needs.runtime.get(package_manager or "", ()))
    if chosen.compiled and facts.python.prefix == "/usr":
        wanted += tuple(p.format(version=facts.python.version) for p in PYTHON_SHARED.get(package_manager or "", ()))
    return wanted


def phase_script(plan: Plan, phase: str) -> str:
    """A POSIX shell script running the plan's steps of ``phase``, each announced as ``warp build`` does.

    Steps run in subshells so one step's ``cd`` and variables never leak into
    the next; ``umask 002`` keeps what they write group-writable, so the app
    also runs under an arbitrary uid in group 0 (OpenShift).
    """
    steps = plan.phase(phase).runnable
    lines = ["set -e", "umask 002"]
    for number, step in enumerate(steps, 1):
        lines.append(f"echo {shlex.quote(f'[{phase} {number}/{len(steps)}] {step.name}: {step.why}')}")
        lines.append(f"( {command_line(step)} )")
    return "\n".join(lines) + "\n"


STEP_MARKER = re.compile(r"^\[(?P<phase>deps|app|runtime) (?P<number>\d+)/(?P<count>\d+)\] (?P<name>[^:]+): ")


@dataclass(frozen=True)
class ImageBuild:
    """What an application or builder image is made of, before any engine is touched."""

    base_image: str
    system_packages: tuple[str, ...]
    python: str  # the base image's Python, which makes warptasks' own environment
    wheel: str  # file name of the warptasks wheel in the context
    labels: dict[str, str]
    builder: bool = False
    # Variables the build steps see (package index, proxy): not in the running container's environment, but,
    # like any Docker build argument, readable in the image's history, so never a secret.
    build_args: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()  # paths of files added before anything is installed (a CA bundle)
    server: str | None = None  # a server chosen with --server, which warp start in the image must be told too
    runtime_packages: tuple[str, ...] = ()  # what the runtime stage installs (see runtime_packages)
    stop_signal: str = "SIGTERM"  # the server's graceful stop (Server.stop_signal): docker stop sends it
    # The stage the runtime copies the environment from: "build" when the app phase installs the project into it
    # (see env_stage), else "deps", whose layer a change to the code alone leaves as it was.
    env_stage: str = "deps"
    port: int = PORT  # the app's port unless the container sets PORT (app_port); a builder's EXPOSE is 8080


def env_stage(spec: AppSpec | None) -> str:
    """Where the runtime stage's environment comes from: the ``build`` stage when the project itself is installed
    (by the app phase, after the code: the ``deps`` stage's environment lacks it), else the ``deps`` stage.

    The dependency install stays cached in the ``deps`` stage either way; a code change costs the copy, not the install.
    """
    return "build" if spec is not None and spec.dependencies.install_project else "deps"


def app_port(spec: AppSpec | None) -> int:
    """The port an app image serves on unless the container sets ``PORT``: the project's ``PORT`` (its environment
    file, as the S2I builder reads it), else 8080 (see :func:`warptasks.image.runtime.image_port`)."""
    return PORT if spec is None else app_port_why(spec)[0]


def app_port_why(spec: AppSpec) -> tuple[int, str]:
    """:func:`app_port` and why. Only the project's files count, never the process environment of the machine that
    builds the image (or writes its Kubernetes manifests, which run on this port by default)."""
    return start_port(replace(spec, process_environment={}), None)


def image_labels(spec: AppSpec | None, server: str, commit: str | None, *, builder: bool) -> dict[str, str]:
    if builder or spec is None:
        labels = {
            "io.k8s.description": "Builds Python web apps with warptasks: the same build and server as warp build and warp start",
            "io.k8s.display-name": "warptasks Python builder",
            "io.openshift.tags": "builder,python,warptasks",
        }
    else:
        name = Path(spec.root).name
        labels = {
            "io.k8s.description": f"{name}: {spec.why}; served by {server} (warptasks)",
            "io.k8s.display-name": name,
        }
    labels.update(
        {
            "io.openshift.s2i.scripts-url": SCRIPTS_URL,
            "io.openshift.expose-services": f"{PORT if builder else app_port(spec)}:http",
            "io.openshift.s2i.destination": "/tmp",
        }
    )
    if commit:
        labels.update({"io.openshift.build.commit.id": commit, "org.opencontainers.image.revision": commit})
    return labels


# The runtime stage's packages come without their manuals and translations (copyright files stay), and apt's caches
# (tens of MB of package lists and .bin caches on a base without the docker-clean configuration) leave with the step.
_SLIM_DPKG = (
    "printf 'path-exclude=/usr/share/doc/*\\npath-include=/usr/share/doc/*/copyright\\npath-exclude=/usr/share/man/*\\n"
    "path-exclude=/usr/share/locale/*\\npath-exclude=/usr/share/info/*\\n' > /etc/dpkg/dpkg.cfg.d/warp-runtime && "
)


def _packages_line(packages: tuple[str, ...], *, slim: bool = False) -> str:
    return (
        "RUN "
        + (_SLIM_DPKG if slim else "")
        + "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        # Quoted: libpython{version} takes the version from the base image's probed facts.
        + " ".join(shlex.quote(package) for package in packages)
        + " && rm -rf /var/lib/apt/lists/*"
        + (" /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log" if slim else "")
    )


def _user_line() -> str:
    return (
        f"RUN mkdir -p {PROJECT} && (getent passwd {USER_ID} >/dev/null || "
        f"echo 'default:x:{USER_ID}:0:app user:{PROJECT}:/bin/sh' >> /etc/passwd) && "
        f"chown -R {USER_ID}:0 {APP_ROOT} && chmod -R g+rwX {APP_ROOT}"
    )


def oci_labels(spec: AppSpec, name: ImageName, labels: dict[str, str], source: str | None) -> dict[str, str]:
    """OCI's annotations next to OpenShift's: title, version, revision, source, created; and the writable paths.

    ``version`` is the image's tag unless that is ``latest``, then the commit. ``created`` changes every build: it is
    a label, after every layer, so it never costs a cached layer.
    """
    revision = labels.get("org.opencontainers.image.revision")
    oci = {
        "org.opencontainers.image.title": Path(spec.root).name,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        WRITABLE_LABEL: " ".join(WRITABLE_PATHS),
    }
    version = name.tag if name.tag != "latest" else revision
    if version:
        oci["org.opencontainers.image.version"] = version
    if source:
        oci["org.opencontainers.image.source"] = source
    return oci


def prefix_dockerfile(build: ImageBuild, stage: str = "") -> str:
    """The part shared by application and builder images: base, system packages, warptasks, the user, S2I scripts."""
    lines = [f"FROM {build.base_image}" + (f" AS {stage}" if stage else ""), *(f"ARG {name}" for name in build.build_args)]
    lines.append("USER root")
    if build.extra_files:
        lines.append("COPY warp/files/ /")
    if build.system_packages:
        lines.append(_packages_line(build.system_packages))
    lines += [
        f"ENV APP_ROOT={APP_ROOT} HOME={PROJECT} PATH=$PATH:{WARP_HOME}/bin PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 "
        "UV_NO_CACHE=1 LANG=C.UTF-8",
        f"COPY warp/{build.wheel} /tmp/warp-wheel/{build.wheel}",
        # warptasks gets its own environment, so the app's never sees it; dumb-init becomes PID 1.
        f"RUN {shlex.quote(build.python)} -m venv {WARP_HOME} && {WARP_HOME}/bin/python -m pip install --no-cache-dir "
        f"/tmp/warp-wheel/{build.wheel} dumb-init && rm -rf /tmp/warp-wheel",
        _user_line(),
        f"COPY warp/s2i/ {S2I_SCRIPTS}/",
        f"RUN chmod 755 {S2I_SCRIPTS}/*",
        f"WORKDIR {PROJECT}",
        f"USER {USER_ID}",
        f"EXPOSE {build.port}",
        f'ENTRYPOINT ["{WARP_HOME}/bin/dumb-init", "--"]',
    ]
    return "\n".join(lines) + "\n"


def app_dockerfile(build: ImageBuild) -> str:
    """The build stages (prefix, dependency phase, app phase), then the runtime stage.

    Stages ``deps`` and ``build``: the dependency phase on the dependency files alone, then the code, the app phase and
    the start data (``warp/build/runtime.sh``, see :func:`runtime_script`). The runtime stage: see
    :func:`runtime_dockerfile`.
    """
    lines = [
        prefix_dockerfile(build, "deps").rstrip("\n"),
        f"COPY --chown={USER_ID}:0 deps/ {PROJECT}/",
        f"COPY warp/build/deps.sh {WARP_HOME}/build/deps.sh",
        # The project's environment folder (.warp: state, static.json, current), which warp build's lock makes locally.
        f"RUN umask 002 && mkdir -p {PROJECT}/.warp && sh {WARP_HOME}/build/deps.sh",
        "",
        *bytecode_stage(build),
        f"FROM {'bytecode' if build.env_stage == 'deps' else 'deps'} AS build",
        # Everything but the code before the code: after a code-only change these steps come from the cache (an ENV
        # is a container created and committed when it does not).
        *server_env_lines(build.server),
        f"COPY warp/build/app.sh warp/build/runtime.sh {WARP_HOME}/build/",
        f"COPY --chown={USER_ID}:0 src/ {PROJECT}/",
        # One RUN: each costs a container start and a commit, and the code-only rebuild is what developers wait for.
        f"RUN sh {WARP_HOME}/build/app.sh && sh {WARP_HOME}/build/runtime.sh",
        "",
        runtime_dockerfile(build).rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


def bytecode_stage(build: ImageBuild) -> list[str]:
    """The ``bytecode`` stage: the environments compiled, for the build stage alone.

    An installer that writes no bytecode (uv) left every import of the app phase (collectstatic's Django) compiling its
    modules again on each build, a second of a code-only rebuild. Compiled in a stage of their own, after the
    dependency phase: the build stage starts from it and a code change reuses it, while the runtime stage copies
    the environments from ``deps``, as the dependency phase left them (its size unchanged). Not when the runtime
    takes the environments from the build stage (a project installed into them): the bytecode would ship too.
    A file that does not compile only stays uncompiled: it is a speed-up, the build does not depend on it.
    """
    if build.env_stage != "deps":
        return []
    return ["FROM deps AS bytecode", f"RUN {shlex.quote(build.python)} -m compileall -qq -j 0 {ENVS} || true", ""]


def runtime_script(build: ImageBuild) -> str:
    """The build stage's last step: the start plan as data; then what the runtime stage must not get is removed.

    The runtime stage copies the project folder as this step leaves it; the environments are not in it (:data:`ENVS`,
    copied from the ``deps`` stage), and the run-time folder and caches the build may have written leave here.
    """
    render = shlex.join([f"{WARP_HOME}/bin/python", "-m", "warptasks.image.runtime", PROJECT, START_DATA, ENVS])
    return (
        "set -e\numask 002\n"
        "echo '[runtime 1/1] start data: the start plan as data, for the runtime stage'\n"
        f"{render}\n"
        f"rm -rf {PROJECT}/.warp/run {PROJECT}/.cache\n"
    )


def runtime_dockerfile(build: ImageBuild) -> str:
    """The runtime stage: the base, the server's runtime packages, the environment, the app, the entry point.

    Layers change from the least often to the most: packages, entry point, environment (from the ``deps`` stage),
    then the app. The server's graceful stop signal is docker's stop signal; dumb-init (PID 1) passes it to the
    server, which the entry point execs.
    """
    # ENV first: a first step the build stage never has. Steps the two chains shared (USER root) would make
    # them one chain in the engine's cache, and after a --no-cache build the runtime's copy of them, the newest, would
    # be the parent the build stage's next step is looked up under, and not found: one full rebuild.
    # No ARG: every RUN after an ARG records its value in the image's history (docker history), and this stage's
    # history is the pushed image's: a --build-env PIP_INDEX_URL=https://user:token@... would ship with it. Its one
    # network step, apt-get, needs only a proxy, and docker's predefined proxy ARGs (http_proxy, HTTPS_PROXY...)
    # reach every RUN undeclared and are left out of the history.
    lines = [
        f"FROM {build.base_image}",
        f"ENV APP_ROOT={APP_ROOT} HOME={PROJECT} PATH={WARP_HOME}/bin:$PATH PYTHONUNBUFFERED=1 LANG=C.UTF-8",
        "USER root",
    ]
    if build.runtime_packages:
        # Without the build's extra files (--ca-bundle): apt-get reads its own trust store, never SSL_CERT_FILE's
        # file, and a COPY is a layer for good: the build's CA would stay in the image that is pushed.
        lines.append(_packages_line(build.runtime_packages, slim=True))
    lines += [
        f"COPY --from=deps {WARP_HOME}/bin/dumb-init {WARP_HOME}/bin/dumb-init",
        f"COPY warp/runtime/warp {WARP_HOME}/bin/warp",
        f"COPY warp/runtime/lib/ {RUNTIME_LIB}/",
        f"COPY warp/s2i/run {S2I_SCRIPTS}/run",
        _user_line(),
        # Settings before the copies: each is a step the engine re-runs when a step before it changed.
        f"WORKDIR {PROJECT}",
        f"USER {USER_ID}",
        f"EXPOSE {build.port}",
        f"STOPSIGNAL {build.stop_signal}",
        f"HEALTHCHECK {HEALTHCHECK_OPTIONS} CMD " + json.dumps(health_command(build)),
        f'ENTRYPOINT ["{WARP_HOME}/bin/dumb-init", "--"]',
        f'CMD ["{S2I_SCRIPTS}/run"]',
        f"COPY --from={build.env_stage} --chown={USER_ID}:0 {ENVS}/ {ENVS}/",
        f"COPY --from=build --chown={USER_ID}:0 {PROJECT}/ {PROJECT}/",
        _labels_line(build.labels),
    ]
    return "\n".join(lines) + "\n"


def health_command(build: ImageBuild) -> list[str]:
    """The HEALTHCHECK: the app's ready (else alive) hook, else an HTTP GET of the port, by the entry point."""
    return [build.python, "-I", f"{RUNTIME_LIB}/image_start.py", "health"]


def warp_command(build: ImageBuild) -> str:
    """``warp`` in the runtime image: the entry point, run by the base's Python (the one the environment was made with)."""
    return f'#!/bin/sh\nexec {shlex.quote(build.python)} -I {RUNTIME_LIB}/image_start.py "$@"\n'


def server_env_lines(server: str | None) -> list[str]:
    """The server chosen at build time, as the invoke setting ``warp start`` reads (``--server`` is not in the image)."""
    return [f"ENV {SERVER_VARIABLE}={server}"] if server else []


def builder_dockerfile(build: ImageBuild) -> str:
    return prefix_dockerfile(build) + _labels_line(build.labels) + "\n" + f'CMD ["{S2I_SCRIPTS}/usage"]\n'


def _labels_line(labels: dict[str, str]) -> str:
    # Last, so build metadata such as the commit never invalidates a cached layer.
    return "LABEL " + " ".join(f"{name}={label_value(value)}" for name, value in sorted(labels.items()))


def label_value(value: str) -> str:
    """``value`` quoted for a LABEL instruction (a Dockerfile's or a commit's change), kept literal.

    The engine expands ``$NAME`` and ``${NAME}`` in a LABEL, even quoted, from the stage's ARGs and ENV: a folder
    name or a remote URL holding ``${PIP_INDEX_URL}`` would put a --build-env value (a token) in the label. Inside
    double quotes ``\\$`` is a literal ``$``.
    """
    return json.dumps(value).replace("$", "\\$")


def plan_notes(build: ImageBuild, packages_why: str, base_why: str, deps_inputs: tuple[str, ...] | None) -> list[str]:
    notes = [f"base image: {build.base_image} ({base_why})", f"system packages: {packages_why}"]
    if deps_inputs is None:
        notes.append("dependency layer: depends on all of the source")
    else:
        notes.append(f"dependency layer: depends only on {', '.join(deps_inputs) or 'nothing from the project'}")
    if build.env_stage == "build":
        notes.append("the project itself is installed after its code: the runtime stage takes the environment from there")
    notes.append(f"runs as uid {USER_ID} (group 0), PID 1 is dumb-init, serves on port {build.port} (unless PORT is set)")
    return notes


def server_of(spec: AppSpec) -> str:
    return resolve_server(spec)[0]
