"""The standalone ``warp`` command: the warp collection as an invoke Program."""

from __future__ import annotations

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(name="warp", binary="warp", version=__version__, namespace=ns)


def main() -> None:
    program.run()
