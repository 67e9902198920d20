"""Planning a build: an AppSpec and facts about the target in, a Plan out.

Nothing here touches the system. The same functions plan a build on this
machine, inside an image and on a remote host; only the facts differ.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import __version__
from ..detect import AppSpec
from ..errors import ConfigError
from ..facts import Facts
from ..servers import BuildContext, resolve_server, server
from .builders import (
    Build,
    dependency_steps,
    hook_steps,
    mark_complete,
    project_steps,
    record_and_switch,
    server_steps,
    static_step,
    support_files,
    uv_certificates,
    venv_steps,
)
from .environment import _join, env_paths, refuse_unsafe_envs, source_env_hooks
from .steps import Plan

# Bump when the layout of an environment changes, so old ones are rebuilt.
ENV_FORMAT = 2

INSTALLERS = ("auto", "uv", "pip")
# The folder a forced rebuild of the live environment builds in, beside it (and back in the key's own the next time).
REBUILD_SUFFIX = "-rebuild"
# The hook whose variables the install, export, collectstatic and build-hook steps see.


@dataclass(frozen=True)
class BuildOptions:
    project: str  # absolute path of the project root where the plan runs
    env_dir: str = ".warp"
    envs_dir: str = ""
    installer: str = "auto"
    force: bool = False
    # Extra variables for the install steps only, e.g. PIP_NO_INDEX/PIP_FIND_LINKS
    # so a host without a package index installs from shipped wheels.
    install_env: Mapping[str, str] = field(default_factory=dict)


def pick_installer(requested: str, facts: Facts) -> tuple[str, str]:
    if requested not in INSTALLERS:
        raise ConfigError(f"unknown installer {requested!r}", f"valid installers: {', '.join(INSTALLERS)}")
    if requested == "uv" and not facts.uv:
        raise ConfigError("installer 'uv' asked for, but uv is not installed on the target", "install uv, or use --installer pip")
    if requested == "pip":
        return "pip", "pip (asked for)"
    if facts.uv:
        return "uv", f"uv ({facts.uv}) is available: much faster than pip"
    return "pip", "uv is not available"


def env_key(spec: AppSpec, facts: Facts, installer: str, server_name: str, tree: str = "") -> str:
    """Names an environment by everything that decides its content.

    ``tree``: the source tree whose project the environment holds (see :func:`project_tree`), when that is not
    implied by where the environment is.
    """
    python = facts.python
    data: dict[str, object] = {
        "format": ENV_FORMAT,
        "warptasks": __version__,
        "python": [python.executable, python.full_version],
        "installer": installer,
        "server": server(server_name).packages,
        "deps": [spec.dependencies.kind, spec.dependencies.digest, list(spec.dependencies.packages)],
        "build_inputs": spec.build_inputs_digest,
    }
    if tree:
        data["tree"] = tree
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"py{python.version}-{digest[:16]}"


def project_tree(spec: AppSpec, project: str, envs: str) -> str:
    """The tree an environment must belong to: ``project`` when the project itself is installed into environments
    kept outside it (a host's ``shared/envs``, a shared ``envs_dir``), else "" (the environment's place says it).

    The project is installed non-editable by the app phase of every build whose source changed, into the environment
    that the dependencies name. Shared with another tree (each release on a host is one), that environment would hold
    whichever tree was built last: a rollback would serve the newer release's package, and a deploy would change the
    live release's code under it before the switch. Keyed by the tree, each has its own; the code is still not part of
    the key (a code change reuses the environment and reinstalls the project into it; an image's dependency layer,
    built inside the project, stays cached).
    """
    if not spec.dependencies.install_project:
        return ""
    inside = envs == project or envs.startswith(project.rstrip("/") + "/")
    return "" if inside else project


def env_folder(facts: Facts, envs: str, key: str, force: bool, changes_live: bool = False) -> str:
    """Where this build's environment is: ``KEY``, or ``KEY-rebuild`` beside it.

    A forced rebuild never builds in the live environment: it builds in the other of the two folders and switches
    last, so a failure leaves the live one serving, and current. ``changes_live``: this build would change what the
    live environment holds though its key is the same (the project installed into it again after a code change):
    it goes to the other folder too, where a complete twin (same key, same dependencies) only gets the project,
    so a failed or interrupted build leaves the live environment's code as it was. Otherwise the live folder of
    this key is reused (either of the two), then a complete one, then ``KEY`` is built.
    """
    names = (key, key + REBUILD_SUFFIX)
    live = next((name for name in names if facts.current == _join(envs, name)), None)
    if force or (changes_live and live):
        return _join(envs, names[1] if live == names[0] else names[0])
    complete = [name for name in (live, *names) if name and name in facts.complete_envs]
    return _join(envs, complete[0] if complete else names[0])


def _decide(spec: AppSpec, facts: Facts, options: BuildOptions) -> Build:
    """The server, installer and environment of this build, and whether anything changed since the last."""
    refuse_unsafe_envs(facts)
    name, server_why = resolve_server(spec)
    chosen = server(name)
    installer, installer_why = pick_installer(options.installer, facts)
    root, envs = env_paths(options.project, options.env_dir, options.envs_dir)
    key = env_key(spec, facts, installer, name, project_tree(spec, _join(options.project), envs))
    state = facts.state
    # The project's install goes into the environment on every code change: never into the live one.
    changes_live = spec.dependencies.install_project and (state is None or state.source != facts.source_digest)
    env = env_folder(facts, envs, key, options.force, changes_live)
    home = _join(options.project, spec.home)
    # Refuses a target the server cannot be built on before any step is planned.
    server_notes = chosen.check_build(BuildContext(spec, facts, home, env)) if chosen.check_build else ()
    env_ready = posixpath.basename(env) in facts.complete_envs and not options.force
    unchanged = (
        env_ready and state is not None and state.env_key == key and state.source == facts.source_digest and facts.current == env
    )
    return Build(
        spec=spec,
        facts=facts,
        options=options,
        server=chosen,
        server_why=server_why,
        server_notes=server_notes,
        installer=installer,
        installer_why=installer_why,
        uv=(facts.uv or "") if installer == "uv" else "",
        key=key,
        env=env,
        root=root,
        home=home,
        reuse=f"environment {key} is complete and its inputs are unchanged" if env_ready else "",
        unchanged=unchanged,
        install_env=_install_env(spec, facts, options, env),
    )


def _install_env(spec: AppSpec, facts: Facts, options: BuildOptions, env: str) -> dict[str, str]:
    """The installs' environment: the environment file's variables (PIP_INDEX_URL and the like, as warpdrive did),
    uv told to use the system trust store unless they say otherwise, the options' variables last."""
    chosen = {**spec.environment, **options.install_env}
    return {**uv_certificates(chosen, facts), **spec.environment, "VIRTUAL_ENV": env, **options.install_env}


def plan_build(spec: AppSpec, facts: Facts, options: BuildOptions) -> Plan:
    """The steps ``warp build`` runs, each with why, skipped ones included."""
    b = _decide(spec, facts, options)
    steps = [
        *hook_steps(b, "pre-build"),
        *venv_steps(b),
        *dependency_steps(b),
        *server_steps(b),
        *support_files(b),
        mark_complete(b),
        *project_steps(b),
        *hook_steps(b, "build"),
        static_step(b),
        *record_and_switch(b),
    ]
    return Plan("build", source_env_hooks(spec, options.project, steps), _notes(b))


def _notes(b: Build) -> tuple[str, ...]:
    spec, python = b.spec, b.facts.python
    notes = [
        f"app: {spec.why}",
        f"server: {b.server.name} ({b.server_why})",
        f"dependencies: {spec.dependencies.why}",
        *([f"project: {spec.dependencies.project_why}"] if spec.dependencies.install_project else []),
        f"python: {python.executable} {python.full_version} ({spec.python.why})",
        f"installer: {b.installer_why}",
        f"environment: {b.env}",
    ]
    notes += b.server_notes
    if spec.dependencies.warning:
        notes.append(spec.dependencies.warning)
    if spec.environment_files:
        notes.append(f"environment files: {', '.join(spec.environment_files)}")
    if spec.process_environment:
        exported = ", ".join(f"{k}={v}" for k, v in sorted(spec.process_environment.items()))
        notes.append(f"exported here: {exported} (over the environment files; warp deploy and warp s2i never read them)")
    return tuple(notes)
