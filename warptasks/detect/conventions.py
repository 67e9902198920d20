"""Conventions kept from warpdrive and OpenShift's S2I Python builder.

Projects laid out for them work unchanged: action hooks in
``.warpdrive/action_hooks/`` or ``.s2i/action_hooks/`` and environment files
``.warpdrive/environment`` and ``.s2i/environment``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..scripts import envfile

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
            merged.update(parse_environment(path.read_text(encoding="utf-8", errors="replace"), rel))
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
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                values[variable] = text
    return values
