"""Files warptasks writes into an app's environment at build time."""

from importlib.resources import files


def source(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def probe_source() -> str:
    """The source of :mod:`warptasks.probe`, to run with a target's Python."""
    return files("warptasks").joinpath("probe.py").read_text(encoding="utf-8")
