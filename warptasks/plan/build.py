"""Planning a build: an AppSpec and facts about the target in, a Plan out.

Nothing here touches the system. The same functions plan a build on this
machine, inside an image and on a remote host; only the facts differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__
from ..detect import AppSpec
from ..errors import ConfigError
from ..facts import Facts
from ..scripts import source
from .environment import _join, env_paths, hook_argv, hook_environment, untracked_dirs, with_env_hook
from .start import require_apache_safe, resolve_server
from .steps import Plan, Step, write_file

# Bump when the layout of an environment changes, so old ones are rebuilt.
ENV_FORMAT = 2

SERVER_PACKAGES = {
    "mod_wsgi": ("mod_wsgi",),
    "gunicorn": ("gunicorn", "servestatic"),
    "waitress": ("waitress", "servestatic"),
    "uwsgi": ("uwsgi",),
    "uvicorn": ("uvicorn", "servestatic"),
    "shell": (),
}
# Servers that embed Python: a build for one Python installation must never be
# reused for another of the same version, so their build cache is per Python.
COMPILED_AGAINST_PYTHON = ("mod_wsgi", "uwsgi")
# Servers that load the app through warp_app.py rather than natively.
USES_WARP_APP = ("gunicorn", "waitress", "uwsgi", "uvicorn")
INSTALLERS = ("auto", "uv", "pip")


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


def env_key(spec: AppSpec, facts: Facts, installer: str, server: str) -> str:
    """Names an environment by everything that decides its content."""
    python = facts.python
    data = {
        "format": ENV_FORMAT,
        "warptasks": __version__,
        "python": [python.executable, python.full_version],
        "installer": installer,
        "server": SERVER_PACKAGES[server],
        "deps": [spec.dependencies.kind, spec.dependencies.digest, list(spec.dependencies.packages)],
        "build_inputs": spec.build_inputs_digest,
    }
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return f"py{python.version}-{digest[:16]}"


def _python_cache(facts: Facts) -> str:
    """A build cache for compiled servers, private to one Python installation.

    A mod_wsgi compiled for one Python and reused from a shared wheel cache
    by another of the same version starts, then fails every request.
    """
    python = facts.python
    key = hashlib.sha256(f"{python.executable}\0{python.full_version}\0{python.prefix}".encode()).hexdigest()[:16]
    return _join(facts.cache_home, "warptasks", f"python-{key}")


def _install(installer: str, facts: Facts, env: str, args: tuple[str, ...]) -> tuple[str, ...]:
    if installer == "uv":
        return (str(facts.uv), "pip", "install", "--python", f"{env}/bin/python", *args)
    return (f"{env}/bin/python", "-m", "pip", "install", *args)


def plan_build(spec: AppSpec, facts: Facts, options: BuildOptions) -> Plan:
    """The steps ``warp build`` runs, each with why, skipped ones included."""
    server, server_why = resolve_server(spec)
    installer, installer_why = pick_installer(options.installer, facts)
    root, envs = env_paths(options.project, options.env_dir, options.envs_dir)
    home = _join(options.project, spec.home)
    key = env_key(spec, facts, installer, server)
    env = _join(envs, key)
    state = facts.state
    env_ready = key in facts.complete_envs and not options.force
    unchanged = (
        env_ready and state is not None and state.env_key == key and state.source == facts.source_digest and facts.current == env
    )
    hook_env = hook_environment(spec, options.project, env, "build", "build")
    path = (f"{env}/bin",)
    steps: list[Step] = []
    notes = [
        f"app: {spec.why}",
        f"server: {server} ({server_why})",
        f"dependencies: {spec.dependencies.why}",
        f"python: {facts.python.executable} {facts.python.full_version} ({spec.python.why})",
        f"installer: {installer_why}",
        f"environment: {env}",
    ]
    if facts.euid == 0 and server == "mod_wsgi" and not facts.python.others_can_read:
        notes.append(
            f"warning: {facts.python.executable} is not readable by other accounts, but as root Apache runs its "
            "workers as one: start will fail. Build with a system Python (--python /usr/bin/python3)"
        )
    if spec.environment_files:
        notes.append(f"environment files: {', '.join(spec.environment_files)}")

    def add(name: str, argv: tuple[str, ...], why: str, *, phase: str, skip: str = "", cwd: str = home, **kw: Any) -> None:
        steps.append(Step(name, argv, cwd, why, phase=phase, skip=skip, **kw))

    unchanged_why = "nothing changed since the last build (same dependencies, Python, server and source)"
    if "pre-build" in spec.hooks:
        add(
            "hook pre-build",
            hook_argv(spec, "pre-build"),
            "pre-build action hook",
            phase="deps",
            skip=unchanged_why if unchanged else "",
            cwd=options.project,
            env=hook_env,
        )

    reuse = f"environment {key} is complete and its inputs are unchanged" if env_ready else ""
    add("clean", ("rm", "-rf", env), "remove what a failed build may have left", phase="deps", skip=reuse)
    create: tuple[str, ...]
    if installer == "uv":
        create = (str(facts.uv), "venv", "--seed", "--quiet", "--python", facts.python.executable, env)
    elif facts.has_virtualenv:
        # virtualenv is importable by the Python that ran the probe, which may be another venv's.
        runner = facts.python.running or facts.python.executable
        create = (runner, "-m", "virtualenv", "--quiet", "--python", facts.python.executable, env)
    else:
        create = (facts.python.executable, "-m", "venv", env)
    add("virtualenv", create, f"a new environment for Python {facts.python.full_version}", phase="deps", skip=reuse)

    deps = spec.dependencies
    # The environment file is exported for the installs too (PIP_INDEX_URL and the like), as warpdrive did.
    install_env = {**spec.environment, "VIRTUAL_ENV": env, **options.install_env}
    if deps.kind == "requirements.txt":
        add(
            "install requirements",
            _install(installer, facts, env, ("-r", "requirements.txt")),
            deps.why,
            phase="deps",
            skip=reuse,
            env=install_env,
        )
    elif deps.kind in ("Pipfile.lock", "poetry.lock"):
        method = "pipenv" if deps.kind == "Pipfile.lock" else "poetry"
        add(
            "install micropipenv",
            _install(installer, facts, env, ("micropipenv[toml]",)),
            f"micropipenv reads {deps.kind}",
            phase="deps",
            skip=reuse,
            env=install_env,
        )
        out = f"{env}/warp-requirements.txt"
        add(
            "export lock file",
            ("sh", "-c", '"$1" requirements --method "$2" --no-dev > "$3"', "sh", f"{env}/bin/micropipenv", method, out),
            f"{deps.kind} as pinned requirements",
            phase="deps",
            skip=reuse,
        )
        add(
            "install lock file",
            _install(installer, facts, env, ("--no-deps", "-r", out)),
            deps.why,
            phase="deps",
            skip=reuse,
            env=install_env,
        )
    elif deps.kind == "uv.lock":
        uv = str(facts.uv)
        if installer != "uv":
            add(
                "install uv",
                _install(installer, facts, env, ("uv",)),
                "uv.lock is installed by uv",
                phase="deps",
                skip=reuse,
                env=install_env,
            )
            uv = f"{env}/bin/uv"
        add(
            "install uv.lock",
            (uv, "sync", "--frozen", "--no-dev", "--python", f"{env}/bin/python"),
            deps.why,
            phase="deps",
            skip=reuse,
            env={"UV_PROJECT_ENVIRONMENT": env, **install_env},
        )
    elif deps.packages:
        add(
            "install dependencies",
            _install(installer, facts, env, deps.packages),
            deps.why,
            phase="deps",
            skip=reuse,
            env=install_env,
        )
    if deps.install_project and deps.kind != "uv.lock":
        add(
            "install project",
            _install(installer, facts, env, ("-e", ".")),
            "the project itself is a package",
            phase="deps",
            skip=reuse,
            env=install_env,
        )

    packages = SERVER_PACKAGES[server]
    if spec.kind == "paste" and server != "mod_wsgi":
        packages = packages + ("PasteDeploy",)
    if packages:
        server_env = dict(install_env)
        args: tuple[str, ...] = packages
        if server in COMPILED_AGAINST_PYTHON:
            cache = _python_cache(facts)
            server_env.update({"UV_CACHE_DIR": cache, "PIP_CACHE_DIR": cache})
        if server == "mod_wsgi":
            require_apache_safe(home, env)
            if not facts.apxs:
                raise ConfigError(
                    "mod_wsgi needs Apache's apxs tool to compile, and it is not installed on the target",
                    "install Apache's development package (Debian/Ubuntu: apt-get install apache2-dev; "
                    "Fedora/RHEL: dnf install httpd-devel), or choose another server with --server gunicorn",
                )
        if server in COMPILED_AGAINST_PYTHON and installer == "uv":
            # uv revalidates its cache with the index and recompiles whenever
            # the index sends no caching headers; pip's wheel cache, kept per
            # Python, is reused. So pip builds (or finds) the wheel, uv installs it.
            wheelhouse = _join(_python_cache(facts), "wheels")
            add(
                "server wheel",
                (f"{env}/bin/python", "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheelhouse, server),
                f"{server} compiled once for this Python, then reused from {wheelhouse}",
                phase="deps",
                skip=reuse,
                env=server_env,
            )
            args = ("--find-links", wheelhouse, *args)
        add(
            "install server",
            _install(installer, facts, env, args),
            f"{', '.join(packages)} for {server}"
            + (" (compiled for this Python, cached per Python)" if server in COMPILED_AGAINST_PYTHON else ""),
            phase="deps",
            skip=reuse,
            env=server_env,
        )
    if server in USES_WARP_APP:
        steps.append(
            write_file(
                "support",
                f"{env}/warp/warp_app.py",
                source("warp_app.py"),
                home,
                "warp_app.py loads the app and serves static files",
                phase="deps",
                skip=reuse,
            )
        )
    if server == "gunicorn":
        steps.append(
            write_file(
                "gunicorn config",
                f"{env}/warp/gunicorn_conf.py",
                source("gunicorn_conf.py"),
                home,
                "gunicorn settings warptasks adds (the app's APP_CONFIG is read after)",
                phase="deps",
                skip=reuse,
            )
        )
    marker = {"key": key, "python": asdict(facts.python), "installer": installer, "server": server, "warptasks": __version__}
    steps.append(
        write_file(
            "mark complete",
            f"{env}/warp-env.json",
            json.dumps(marker, sort_keys=True),
            home,
            "marks the environment as complete, so later builds may reuse it",
            phase="deps",
            skip=reuse,
        )
    )

    if "build" in spec.hooks:
        add(
            "hook build",
            hook_argv(spec, "build"),
            "build action hook",
            phase="app",
            skip=unchanged_why if unchanged else "",
            cwd=options.project,
            env=hook_env,
            path=path,
        )

    static_json = _join(root, "static.json")
    if spec.django:
        disabled = spec.environment.get("DISABLE_COLLECTSTATIC", "").strip().lower() not in ("", "0", "false", "no", "off")
        supplied = "" if spec.django.has_static_root else _join(root, "static")
        why = "Django: collectstatic" + (f", into {supplied} (settings have no STATIC_ROOT)" if supplied else "")
        if disabled:
            why = "Django: reading STATIC_URL/STATIC_ROOT (collectstatic disabled by DISABLE_COLLECTSTATIC)"
        env_vars = dict(spec.environment)
        env_vars["DJANGO_SETTINGS_MODULE"] = spec.django.settings
        add(
            "collectstatic",
            (f"{env}/bin/python", "-c", source("django_static.py"), static_json, supplied, "0" if disabled else "1"),
            why,
            phase="app",
            skip=unchanged_why if unchanged else "",
            env=env_vars,
            path=path,
        )
    elif spec.static_url and spec.static_dir:
        static = {"static_url": spec.static_url, "static_root": _join(home, spec.static_dir)}
        steps.append(
            write_file(
                "static",
                static_json,
                json.dumps(static),
                home,
                spec.static_why,
                phase="app",
                skip=unchanged_why if unchanged else "",
            )
        )
    else:
        steps.append(
            Step("static", ("rm", "-f", static_json), home, spec.static_why, phase="app", skip=unchanged_why if unchanged else "")
        )

    new_state = {"env_key": key, "env": env, "server": server, "kind": spec.kind, "warptasks": __version__}
    request = {
        "record": new_state,
        "project": options.project,
        "state_file": _join(root, "state.json"),
        "ignore": untracked_dirs(options.env_dir),
    }
    add(
        "record",
        (f"{env}/bin/python", "-c", source("probe.py"), json.dumps(request)),
        "record what was built, with the tree's fingerprint as the build left it",
        phase="app",
        skip=unchanged_why if unchanged else "",
    )
    add(
        "switch",
        (f"{env}/bin/python", "-c", source("switch.py"), _join(root, "current"), env),
        "make the new environment current, atomically (the old one serves until here)",
        phase="app",
        skip="already current" if unchanged else "",
    )
    sourced = ("install", "server wheel", "hook build", "collectstatic", "export")
    steps = [with_env_hook(spec, "build-env", options.project, s) if s.name.startswith(sourced) else s for s in steps]
    return Plan("build", tuple(steps), tuple(notes))
