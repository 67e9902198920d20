"""Conventions kept from warpdrive and OpenShift's S2I Python builder.

Projects laid out for them work unchanged: action hooks in
``.warpdrive/action_hooks/`` or ``.s2i/action_hooks/`` and environment files
``.warpdrive/environment`` and ``.s2i/environment``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError
from ..scripts import envfile
from .readsource import project_bytes

HOOK_DIRS = (".warpdrive/action_hooks", ".s2i/action_hooks")
ENV_FILES = (".s2i/environment", ".warpdrive/environment")

# When each hook runs. Build hooks run inside ``warp build``; the deploy hook
# just before the server starts; the rest are commands of their own.
# ``build-env`` and ``deploy-env`` are shell files sourced (with ``set -a``)
# before the steps of their phase, as warpdrive did.
HOOKS = {
    "pre-build": "build, before dependencies are installed",
    "build-env": "build, sourced before the installs, the build hook and collectstatic (its variables are exported)",
    "build": "build, after dependencies are installed (and before collectstatic)",
    "deploy-env": "start and the hook commands, sourced first (its variables are exported)",
    "deploy": "start, before the server is started",
    "setup": "warp setup (one-off initialisation)",
    "migrate": "warp migrate (database migrations)",
    "verify": "warp verify (checks after a deploy)",
    "alive": "warp alive (liveness probe)",
    "ready": "warp ready (readiness probe)",
}

# Environment names that select the WSGI server, in the order they are read.
SERVER_SETTINGS = ("WARPDRIVE_SERVER_TYPE", "WARP_SERVER")

# The variables of the environment warp runs in (the shell's exports) that count, over the project's environment
# files: the ones twelve-factor set-ups and platforms export per machine or per shell. Only these: a project's
# structure (APP_MODULE, APP_FILE, APP_HOME...) is the project files' business, and an export left over in a shell
# must not silently change what is served. Only the local tasks (plan, build, start, exec, shell, the hook commands)
# pass the process environment; a deploy, an image and a Kubernetes manifest never do: what they build and serve
# depends on the project and their own settings, not on the shell of the machine they were started from.
PROCESS_SETTINGS = ("DJANGO_SETTINGS_MODULE", "PORT")
# Of those, the ones that decide what a build makes (collectstatic reads the settings); PORT only decides the start.
PROCESS_BUILD_INPUTS = ("DJANGO_SETTINGS_MODULE",)
PROCESS_WHERE = "exported in the environment warp runs in"

DEFAULT_PORT = 8080


def process_settings(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The variables of :data:`PROCESS_SETTINGS` that ``environ`` (the process environment) sets, empty ones left out."""
    if not environ:
        return {}
    return {name: str(environ[name]) for name in PROCESS_SETTINGS if str(environ.get(name) or "").strip()}


class Sourced(dict[str, str]):
    """The environment files' values with the process settings over them, remembering which names came from where
    (for the why of a decision: "DJANGO_SETTINGS_MODULE exported in ..." or "... in the environment file")."""

    def __init__(self, files: Mapping[str, str], process: Mapping[str, str]) -> None:
        super().__init__({**files, **process})
        self.from_process = frozenset(process)

    def where(self, name: str) -> str:
        return PROCESS_WHERE if name in self.from_process else "in the environment file"


def where_set(environment: Mapping[str, str], name: str) -> str:
    """Where ``name`` of ``environment`` was set: the process environment (a :class:`Sourced`) or the environment file."""
    return environment.where(name) if isinstance(environment, Sourced) else "in the environment file"


def _port_number(value: str) -> int | None:
    text = value.strip()
    # ASCII digits only: str.isdigit() is True for "٣٠٠٠" (int() reads it as 3000) and "²" (int() refuses it).
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 65536 else None


def choose_port(
    given: int | None, process: Mapping[str, str], environment: Mapping[str, str], files: Sequence[str] = ()
) -> tuple[int, str]:
    """The port a start listens on, and why. The first that says something wins:

    1. ``given``: ``--port``, or the ``warp.port`` setting (invoke.yaml, ``INVOKE_WARP_PORT``);
    2. ``PORT`` in ``process``, the environment warp runs in (as a platform or the shell sets it);
    3. ``PORT`` in ``environment``, the project's environment file (``.s2i/environment``), as the S2I builder reads it;
    4. :data:`DEFAULT_PORT`, 8080.

    A deploy passes its backend port as ``given`` and an image its own, so neither layer below ever moves them. A
    ``PORT`` that is not a port number is an error naming where it was set, unless a layer above it decides.
    """
    if given is not None:
        return given, "--port, or the warp.port setting"
    layers = (
        (process, f"PORT {PROCESS_WHERE}", "unset PORT, export it as a port number, or pass --port"),
        (
            environment,
            f"PORT in {', '.join(files) or 'the environment file'}",
            "fix PORT in the environment file, or pass --port",
        ),
    )
    for values, where, hint in layers:
        text = str(values.get("PORT") or "")
        if text.strip():
            number = _port_number(text)
            if number is None:
                raise ConfigError(f"PORT={text!r} ({where}) is not a port number (1-65535)", hint)
            return number, where
    return DEFAULT_PORT, f"the default, {DEFAULT_PORT} (no --port, no PORT set)"


def parse_environment(text: str, source: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``export`` and surrounding quotes allowed, no expansion).

    The parser is :func:`warptasks.scripts.envfile.parse`, the one a target runs too, so a file means the same
    to detection, to a build and to the server.
    """
    try:
        return envfile.parse(text, source)
    except envfile.EnvFileError as error:
        raise ConfigError(str(error), "fix or remove that line") from None


def read_environment(root: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """Merged environment files (later ones win) and the files read."""
    merged: dict[str, str] = {}
    read: list[str] = []
    for rel in ENV_FILES:
        path = root / rel
        if path.is_file():
            if not path.resolve().is_relative_to(root.resolve()):
                # A cloned repository's link to ~/.git-credentials or ~/.netrc: a line that is not NAME=VALUE would be
                # shown in the error, and every value would reach the image's environment. Not read, not shown.
                raise ConfigError(
                    f"{rel} is a link to a file outside the project", f"make {rel} a file of the project, or remove it"
                )
            merged.update(parse_environment(project_bytes(path, rel).decode("utf-8", errors="replace"), rel))
            read.append(rel)
    return merged, tuple(read)


def find_hooks(root: Path) -> tuple[dict[str, str], dict[str, bool]]:
    """Hook name -> path relative to ``root``, and which are executable.

    ``.warpdrive`` wins over ``.s2i``; powershift's underscore spellings
    (``pre_build``, ``deploy_env``) are accepted for the same hooks.
    """
    hooks: dict[str, str] = {}
    executable: dict[str, bool] = {}
    for directory in HOOK_DIRS:
        base = root / directory
        if not base.is_dir():
            continue
        for name in HOOKS:
            for spelling in (name, name.replace("-", "_")):
                path = base / spelling
                if name not in hooks and path.is_file():
                    hooks[name] = f"{directory}/{spelling}"
                    executable[name] = os.access(path, os.X_OK)
    return hooks, executable


def read_setting_files(root: Path) -> dict[str, str]:
    """warpdrive's one-value files in ``.warpdrive/`` (``server_type``, ``home``)."""
    values: dict[str, str] = {}
    for name, variable in (("server_type", "WARPDRIVE_SERVER_TYPE"), ("home", "WARPDRIVE_APP_HOME")):
        path = root / ".warpdrive" / name
        if path.is_file():
            text = project_bytes(path, f".warpdrive/{name}").decode("utf-8", errors="replace").strip()
            if text:
                values[variable] = text
    return values
