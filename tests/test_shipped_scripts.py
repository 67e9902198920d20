"""What is shipped to a target must run there: one argv string each, and the oldest Python a host may have."""

from __future__ import annotations

import ast
from importlib.resources import files

import pytest

# Linux refuses a single argument longer than this (MAX_ARG_STRLEN): a script
# sent as ``python3 -c SOURCE`` beyond it would fail on every host with E2BIG.
MAX_ARG_STRLEN = 32 * 4096
SHIPPED = sorted(p.name for p in files("warptasks.scripts").iterdir() if p.name.endswith(".py") and p.name != "__init__.py")


# The agent and the front's script travel on stdin (see warptasks.remote.session.BOOT), not as an argument.
ON_STDIN = ("agent.py", "front.py")


@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in ON_STDIN])
def test_each_shipped_script_fits_in_one_command_line_argument(name: str) -> None:
    size = len(files("warptasks.scripts").joinpath(name).read_bytes())
    assert size < MAX_ARG_STRLEN * 0.9, f"{name} is {size} bytes: too close to the {MAX_ARG_STRLEN}-byte argv limit"


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_script_parses_as_python_3_6(name: str) -> None:
    ast.parse(files("warptasks.scripts").joinpath(name).read_text(encoding="utf-8"), filename=name, feature_version=(3, 6))
