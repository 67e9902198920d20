"""The step builders of a build: each turns what :func:`~warptasks.plan.build.plan_build` decided into steps.

One function per part of the build (hooks, the virtualenv, each kind of dependency, the server, support
files, static files, the record and the switch), each reading the same :class:`Build`; which steps source
the ``build-env`` hook is a field of the step (``env_hook``), never its name.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .. import __version__
from ..detect import AppSpec
from ..detect.django import DjangoProject
from ..errors import ConfigError
from ..facts import Facts
from ..scripts import ISOLATED, source
from ..scripts import command as script
from ..servers import Server
from .environment import _join, hook_argv, hook_environment, untracked_dirs
from .steps import Step, write_file

if TYPE_CHECKING:
    from .build import BuildOptions

BUILD_ENV = "build-env"

# uv trusts its own bundled roots, not the system's, so a CA the system store trusts (a TLS-inspecting proxy's, a
# private index's) fails with "invalid peer certificate: UnknownIssuer" where pip works. UV_SYSTEM_CERTS is the
# current name, UV_NATIVE_TLS the one uv read before it (a newer uv reading both warns about neither). Variables,
# not a flag: they reach every uv run, `uv venv --seed`'s seed install, `uv sync` and a hook's own uv included.
# SSL_CERT_FILE (--ca-bundle) still wins, as uv documents.
UV_SYSTEM_CERTS = {"UV_SYSTEM_CERTS": "1", "UV_NATIVE_TLS": "1"}


def uv_certificates(env: Mapping[str, str], facts: Facts) -> dict[str, str]:
    """The variables that make uv use the system trust store, unless ``env`` already decides (the app's choice wins)
    or the target has no system CA bundle (uv would then trust nothing; its own roots are better than none)."""
    if any(name in env for name in UV_SYSTEM_CERTS) or facts.system_ca is False:
        return {}
    return dict(UV_SYSTEM_CERTS)


def python_cache(facts: Facts) -> str:
    """A build cache for compiled servers, private to one Python installation.

    A mod_wsgi compiled for one Python and reused from a shared wheel cache
    by another of the same version starts, then fails every request.
    """
    python = facts.python
    key = hashlib.sha256(f"{python.executable}\0{python.full_version}\0{python.prefix}".encode()).hexdigest()[:16]
    return _join(facts.cache_home, "warptasks", f"python-{key}")


@dataclass(frozen=True)
class Build:
    """What every step builder of one build reads: the inputs, and what was decided from them once."""

    spec: AppSpec
    facts: Facts
    options: BuildOptions
    server: Server
    server_why: str
    server_notes: tuple[str, ...]  # the server's warnings about this target (Server.check_build)
    installer: str
    installer_why: str
    uv: str  # uv on the target when it is the installer, else ""
    key: str  # the environment's name, from everything that decides its content
    env: str  # the environment's folder
    root: str  # the project's environment folder (.warp): state, static.json, current
    home: str  # the app's home, where most steps run
    reuse: str  # why the dependency steps are skipped, or "" when the environment is (re)built
    unchanged: bool  # nothing changed since the last build: the app steps are skipped too
    install_env: Mapping[str, str]

    @property
    def unchanged_why(self) -> str:
        return "nothing changed since the last build (same dependencies, Python, server and source)" if self.unchanged else ""

    def install(self, args: tuple[str, ...]) -> tuple[str, ...]:
        if self.installer == "uv":
            return (self.uv, "pip", "install", "--python", f"{self.env}/bin/python", *args)
        # Isolated, as every tool warptasks runs in the project's folder (see scripts.ISOLATED): pip must not import
        # the project's re.py as the build's account (root, on many hosts).
        return (f"{self.env}/bin/python", ISOLATED, "-m", "pip", "install", *args)


def _deps_step(
    b: Build, name: str, argv: tuple[str, ...], why: str, *, env: Mapping[str, str] | None = None, env_hook: str = ""
) -> Step:
    """A step that makes the environment: skipped, with the rest of them, when the environment is reused."""
    return Step(name, argv, b.home, why, env=dict(env or {}), phase="deps", skip=b.reuse, env_hook=env_hook)


def _install_step(b: Build, name: str, argv: tuple[str, ...], why: str, env: Mapping[str, str] | None = None) -> Step:
    """A step that installs into the environment, with the environment file's variables and the build-env hook's."""
    return _deps_step(b, name, argv, why, env=b.install_env if env is None else env, env_hook=BUILD_ENV)


def hook_steps(b: Build, hook: str) -> list[Step]:
    """The pre-build hook (before anything is installed) or the build hook (in the finished environment), if the app has it."""
    if hook not in b.spec.hooks:
        return []
    after = hook == "build"
    step = Step(
        f"hook {hook}",
        hook_argv(b.spec, hook),
        b.options.project,
        f"{hook} action hook",
        env=hook_environment(b.spec, b.options.project, b.env, "build", "build"),
        path=(f"{b.env}/bin",) if after else (),
        phase="app" if after else "deps",
        skip=b.unchanged_why,
        env_hook=BUILD_ENV if after else "",
    )
    return [step]


def venv_steps(b: Build) -> list[Step]:
    python = b.facts.python
    foreign = dict(b.facts.foreign_envs).get(posixpath.basename(b.env))
    if foreign and not b.reuse:
        # In a shared envs folder another account can plant a folder at this build's key: it is never reused (the
        # probe does not count it complete), and neither removed nor built into, as root or not.
        raise ConfigError(
            f"the environment folder {b.env} is not this account's to build in: {foreign}",
            f"remove {b.env} (and check who can write to {posixpath.dirname(b.env)}), then build again",
        )
    create: tuple[str, ...]
    env: dict[str, str] = {}
    if b.installer == "uv":
        create = (b.uv, "venv", "--seed", "--quiet", "--python", python.executable, b.env)
        # The seed packages (pip, setuptools) come from the index: the same trust store as the installs.
        env = {name: value for name, value in b.install_env.items() if name in UV_SYSTEM_CERTS}
    elif b.facts.has_virtualenv:
        # virtualenv is importable by the Python that ran the probe, which may be another venv's.
        # The probe found it as this runs it, isolated: user site and PYTHONPATH count for neither.
        create = (
            python.running or python.executable,
            ISOLATED,
            "-m",
            "virtualenv",
            "--quiet",
            "--python",
            python.executable,
            b.env,
        )
    else:
        create = (python.executable, ISOLATED, "-m", "venv", b.env)
    return [
        _deps_step(b, "clean", ("rm", "-rf", b.env), "remove what a failed build may have left"),
        _deps_step(b, "virtualenv", create, f"a new environment for Python {python.full_version}", env=env),
    ]


def dependency_steps(b: Build) -> list[Step]:
    """The app's dependencies, installed the way their kind asks for (the project itself: :func:`project_steps`)."""
    deps = b.spec.dependencies
    steps: list[Step]
    if deps.kind == "requirements.txt":
        steps = [_install_step(b, "install requirements", b.install(("-r", "requirements.txt")), deps.why)]
    elif deps.kind in ("Pipfile.lock", "poetry.lock"):
        steps = _lock_file_steps(b)
    elif deps.kind == "uv.lock":
        steps = _uv_lock_steps(b)
    elif deps.packages:
        steps = [_install_step(b, "install dependencies", b.install(deps.packages), deps.why)]
    else:
        steps = []
    return steps


def project_steps(b: Build) -> list[Step]:
    """The project itself, when it is a package, installed as the S2I builder does (``pip install .``), after its code.

    Non-editable, the same locally, in an image and on a host: an image's environment must hold the code, not a path
    to a tree that is not there; and so that the environment (reused as long as the dependencies are the same) gets
    the new code, this is an app-phase step, run again whenever the source changed (a no-op build, same tree, skips
    it). With a lock file, ``--no-deps``: the lock stays the one authority over what is installed.
    """
    deps = b.spec.dependencies
    if not deps.install_project:
        return []
    args: tuple[str, ...] = (".",)
    if not deps.project_deps:
        # --no-deps limits a reinstall to the project itself: it is rebuilt from the tree, never taken from a cache.
        args = ("--no-deps", "--reinstall" if b.installer == "uv" else "--force-reinstall", ".")
    return [
        Step(
            "install project",
            b.install(args),
            b.home,
            deps.project_why,
            env=dict(b.install_env),
            phase="app",
            skip=b.unchanged_why,
            env_hook=BUILD_ENV,
        )
    ]


def _lock_file_steps(b: Build) -> list[Step]:
    """Pipfile.lock and poetry.lock: micropipenv turns them into pinned requirements, installed without resolving."""
    deps = b.spec.dependencies
    method = "pipenv" if deps.kind == "Pipfile.lock" else "poetry"
    out = f"{b.env}/warp-requirements.txt"
    export = ("sh", "-c", '"$1" requirements --method "$2" --no-dev > "$3"', "sh", f"{b.env}/bin/micropipenv", method, out)
    return [
        _install_step(b, "install micropipenv", b.install(("micropipenv[toml]",)), f"micropipenv reads {deps.kind}"),
        _deps_step(b, "export lock file", export, f"{deps.kind} as pinned requirements", env_hook=BUILD_ENV),
        _install_step(b, "install lock file", b.install(("--no-deps", "-r", out)), deps.why),
    ]


def _uv_lock_steps(b: Build) -> list[Step]:
    steps = []
    uv = b.uv
    if b.installer != "uv":
        steps.append(_install_step(b, "install uv", b.install(("uv",)), "uv.lock is installed by uv"))
        uv = f"{b.env}/bin/uv"
    # Never the project: this phase sees the lock files alone (an image's dependency layer), the project comes after its
    # code (project_steps).
    sync = (uv, "sync", "--frozen", "--no-dev", "--no-install-project", "--python", f"{b.env}/bin/python")
    env = {"UV_PROJECT_ENVIRONMENT": b.env, **b.install_env}
    steps.append(_install_step(b, "install uv.lock", sync, b.spec.dependencies.why, env=env))
    return steps


def server_steps(b: Build) -> list[Step]:
    """The server's packages; one compiled against Python gets a build cache private to that Python."""
    chosen, env = b.server, b.env
    packages = chosen.install_packages(b.spec.kind)
    if not packages:
        return []
    steps = []
    server_env = dict(b.install_env)
    args: tuple[str, ...] = packages
    if chosen.compiled:
        cache = python_cache(b.facts)
        server_env.update({"UV_CACHE_DIR": cache, "PIP_CACHE_DIR": cache})
    if chosen.compiled and b.installer == "uv":
        # uv revalidates its cache with the index and recompiles whenever
        # the index sends no caching headers; pip's wheel cache, kept per
        # Python, is reused. So pip builds (or finds) the wheel, uv installs it.
        wheelhouse = _join(python_cache(b.facts), "wheels")
        wheel = (
            f"{env}/bin/python",
            ISOLATED,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            wheelhouse,
            *chosen.packages,
        )
        why = f"{chosen.name} compiled once for this Python, then reused from {wheelhouse}"
        steps.append(_install_step(b, "server wheel", wheel, why, env=server_env))
        args = ("--find-links", wheelhouse, *args)
    why = f"{', '.join(packages)} for {chosen.name}" + (
        " (compiled for this Python, cached per Python)" if chosen.compiled else ""
    )
    steps.append(_install_step(b, "install server", b.install(args), why, env=server_env))
    return steps


def support_files(b: Build) -> list[Step]:
    """Files warptasks adds to the environment for the server to read."""
    return [
        write_file(f.step, f"{b.env}/warp/{f.script}", source(f.script), b.home, f.why, phase="deps", skip=b.reuse)
        for f in b.server.files()
    ]


def mark_complete(b: Build) -> Step:
    """The environment's last step: only a complete environment has the marker, and only those are reused."""
    marker = {
        "key": b.key,
        "python": asdict(b.facts.python),
        "installer": b.installer,
        "server": b.server.name,
        "warptasks": __version__,
    }
    why = "marks the environment as complete, so later builds may reuse it"
    return write_file(
        "mark complete", f"{b.env}/warp-env.json", json.dumps(marker, sort_keys=True), b.home, why, phase="deps", skip=b.reuse
    )


# The two folders collectstatic fills when the settings have no STATIC_ROOT, in turn: a build collects into the one the
# live static.json does not name, so the files served stay as they are until the switch (a failed build's too).
STATIC_SLOTS = ("static-a", "static-b")


def static_step(b: Build) -> Step:
    """Where static files are (static.json, read by start): collected by Django, the app's folder, or none.

    Written beside static.json (or that removed), and made static.json by the switch with the record: a build stopped
    before the switch leaves the last good environment served with its own static files settings.
    """
    spec, static_json = b.spec, _join(b.root, "static.json.next")
    if spec.django:
        return _collectstatic(b, spec.django, static_json)
    if spec.static_url and spec.static_dir:
        static = {"static_url": spec.static_url, "static_root": _join(b.home, spec.static_dir)}
        return write_file("static", static_json, json.dumps(static), b.home, spec.static_why, phase="app", skip=b.unchanged_why)
    return Step("static", ("rm", "-f", static_json), b.home, spec.static_why, phase="app", skip=b.unchanged_why)


def static_slot(b: Build) -> str:
    """The folder collectstatic fills when the settings have no STATIC_ROOT: the one of :data:`STATIC_SLOTS` the live
    static.json does not name."""
    live = b.facts.static.root.rstrip("/") if b.facts.static and b.facts.static.root else ""
    first, second = (_join(b.root, name) for name in STATIC_SLOTS)
    return second if live and _join(live) == first else first


def _collectstatic(b: Build, django: DjangoProject, static_json: str) -> Step:
    spec = b.spec
    disabled = spec.environment.get("DISABLE_COLLECTSTATIC", "").strip().lower() not in ("", "0", "false", "no", "off")
    supplied = "" if django.has_static_root else static_slot(b)
    why = "Django: collectstatic" + (f", into {supplied} (settings have no STATIC_ROOT)" if supplied else "")
    if disabled:
        why = "Django: reading STATIC_URL/STATIC_ROOT (collectstatic disabled by DISABLE_COLLECTSTATIC)"
    # Not isolated: it imports the app's settings from its folder (and PYTHONPATH), so it runs the app's code anyway.
    return Step(
        "collectstatic",
        (f"{b.env}/bin/python", "-c", source("django_static.py"), static_json, supplied, "0" if disabled else "1"),
        b.home,
        why,
        env={**spec.environment, "DJANGO_SETTINGS_MODULE": django.settings},
        path=(f"{b.env}/bin",),
        phase="app",
        skip=b.unchanged_why,
        env_hook=BUILD_ENV,
    )


def record_and_switch(b: Build) -> list[Step]:
    """Record what was built, then make it current: the old environment serves until the switch.

    The record is written beside state.json and renamed over it by the switch, with the link, and static.json with
    them (see :func:`static_step`): a build stopped between the two steps (Ctrl-C, a dropped connection) leaves
    state.json and static.json describing the environment still current, which start plans from (its server, its
    static files), not one that never became current.
    """
    state = {"env_key": b.key, "env": b.env, "server": b.server.name, "kind": b.spec.kind, "warptasks": __version__}
    state_file = _join(b.root, "state.json")
    request = {
        "record": state,
        "project": b.options.project,
        "state_file": state_file + ".next",
        "ignore": untracked_dirs(b.options.env_dir),
    }
    python = f"{b.env}/bin/python"
    return [
        Step(
            "record",
            script(python, "probe.py", json.dumps(request)),
            b.home,
            "record what was built, with the tree's fingerprint as the build left it",
            phase="app",
            skip=b.unchanged_why,
        ),
        Step(
            "switch",
            script(
                python,
                "switch.py",
                _join(b.root, "current"),
                b.env,
                state_file + ".next",
                state_file,
                _join(b.root, "static.json.next"),
                _join(b.root, "static.json"),
            ),
            b.home,
            "make the new environment current, atomically (the old one serves until here)",
            phase="app",
            skip="already current" if b.unchanged else "",
        ),
    ]
