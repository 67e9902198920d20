"""Sections for features that may not exist yet in this checkout: images
(``warptasks.image.engine``) and remote deploy (``warptasks.remote.deploy``). Each runs
only when its module and what it needs are present, and otherwise says why not."""

from __future__ import annotations

import importlib.util
from typing import Any

from .measure import Section

SECTIONS = ("image", "deploy")


def _missing(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"{module} is not in this checkout"


def run(name: str, b: Any) -> tuple[Section | None, str]:
    try:
        return _run(name, b)
    except Exception as error:  # noqa: BLE001 - another helper's module may be mid-change: report, do not stop
        return None, f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def _run(name: str, b: Any) -> tuple[Section | None, str]:
    if name == "image":
        why = _missing("warptasks.image.engine")
        if why:
            return None, why
        from . import images

        return images.run(b)
    why = _missing("warptasks.remote.deploy")
    if why:
        return None, why
    from . import deploys

    return deploys.run(b)
