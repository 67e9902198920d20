"""Dependencies for hosts with no package index: downloaded here, shipped, installed with --no-index.

The wheelhouse holds everything the build's install steps ask for: the app's
dependencies, the server's packages and what building a source package
needs. A server marked ``source_on_host`` in its registry entry (mod_wsgi) is
shipped as source, because it must be compiled on the host against the host's
own Python and Apache.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..detect import AppSpec
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
        args += [str(home)]
    source = chosen.packages if chosen.source_on_host else ()
    args += [p for p in chosen.install_packages(spec.kind) if p not in source]
    return tuple(args), source


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
    steps = [Step("download dependencies", pip + target + args, "", "wheels of the app's dependencies and server for the host")]
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


def offline_install_env(wheels_dir: str) -> dict[str, str]:
    """What makes pip (and uv) install only from the shipped wheelhouse."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels_dir, "UV_NO_INDEX": "1", "UV_FIND_LINKS": wheels_dir}
