"""Files warptasks writes into an app's environment at build time."""

from importlib.resources import files


def source(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
