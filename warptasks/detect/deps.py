"""Which files say what an app depends on, and which Python it wants.

Pure functions of a source tree: they read files and return data.
"""

from __future__ import annotations

import hashlib
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError

# Most exact first: a lock file pins everything, requirements.txt may pin,
# pyproject.toml and setup.py only state ranges.
DEPENDENCY_KINDS = ("uv.lock", "poetry.lock", "Pipfile.lock", "requirements.txt", "pyproject.toml", "setup.py", "none")

# pip also takes the short options glued to their value: -rbase.txt.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_INCLUDE = re.compile(r"^\s*(-r|-c|--requirement|--constraint)(?:(?<=[rc])\s*=?\s*|\s*=\s*|\s+)(\S+)")


@dataclass(frozen=True)
class Dependencies:
    """How to install an app's dependencies.

    ``files`` are every file whose content decides the result (includes
    followed), relative to the project root; a change to any of them means a
    new environment. ``packages`` is set only for a pyproject.toml without a
    build system, whose ``[project].dependencies`` are installed directly.
    """

    kind: str
    files: tuple[str, ...]
    why: str
    packages: tuple[str, ...] = ()
    install_project: bool = False
    digest: str = ""


def digest_files(root: Path, files: tuple[str, ...]) -> str:
    """One hash of the named files' names and contents."""
    sha = hashlib.sha256()
    for rel in files:
        path = root / rel
        sha.update(rel.encode() + b"\0")
        sha.update(path.read_bytes() if path.is_file() else b"<missing>")
        sha.update(b"\0")
    return sha.hexdigest()


def requirement_includes(root: Path, name: str) -> tuple[str, ...]:
    """``name`` and every file it pulls in with -r/-c, in reading order."""
    seen: list[str] = []

    def visit(rel: str, parent: str | None) -> None:
        if rel in seen:
            return
        path = root / rel
        if not path.is_file():
            where = f" (included from {parent})" if parent else ""
            raise ConfigError(
                f"requirements file {rel!r}{where} does not exist",
                "fix the -r/-c line or add the file",
            )
        seen.append(rel)
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _INCLUDE.match(line)
            if match and _URL.match(match.group(2)):
                # pip could fetch it, but an environment is keyed by the content of its inputs:
                # a file that can change on a server without the project changing would be reused stale.
                raise ConfigError(
                    f"{rel} includes {match.group(2)!r} from the network ({line.strip()})",
                    "download that file into the project and include it by its path (-r requirements/base.txt), "
                    "so every build installs exactly what the project says",
                )
            if match:
                child = (Path(rel).parent / match.group(2)).as_posix()
                visit(_normal(child), rel)

    visit(name, None)
    return tuple(seen)


def _normal(rel: str) -> str:
    parts: list[str] = []
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _pyproject(root: Path) -> dict:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"pyproject.toml is not UTF-8 text (byte {exc.start}: {exc.reason})", "save the file as UTF-8, as TOML requires"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"pyproject.toml is not valid TOML: {exc}", "fix the file, or remove it") from None


def detect_dependencies(root: Path, environment: dict[str, str] | None = None) -> Dependencies:
    """Pick the dependency source for the project at ``root``."""
    found = _dependencies(root, environment)
    return replace(found, digest=digest_files(root, found.files))


def _dependencies(root: Path, environment: dict[str, str] | None) -> Dependencies:
    files: tuple[str, ...]
    environment = environment or {}
    setup_py = (root / "setup.py").is_file() or (root / "setup.cfg").is_file()
    with_setup = setup_py and not _truthy(environment.get("DISABLE_SETUP_PY_PROCESSING"))
    if (root / "uv.lock").is_file():
        return Dependencies(
            "uv.lock", ("uv.lock", "pyproject.toml"), "uv.lock pins every package (installed with uv sync --frozen)"
        )
    # OpenShift's S2I Python builder reads lock files only when one of these is set; here they are always read.
    flag = next((n for n in ("ENABLE_PIPENV", "ENABLE_MICROPIPENV") if _truthy(environment.get(n))), None)
    said = f" ({flag} in the environment file, S2I convention)" if flag else ""
    if (root / "poetry.lock").is_file():
        files = ("poetry.lock", "pyproject.toml") if (root / "pyproject.toml").is_file() else ("poetry.lock",)
        return Dependencies("poetry.lock", files, "poetry.lock pins every package (installed with micropipenv)" + said)
    if (root / "Pipfile.lock").is_file():
        why = "Pipfile.lock pins every package (installed with micropipenv)" + said
        return Dependencies("Pipfile.lock", ("Pipfile.lock",), why)
    if flag == "ENABLE_PIPENV" and (root / "Pipfile").is_file():
        raise ConfigError(
            "ENABLE_PIPENV is set and there is a Pipfile, but no Pipfile.lock",
            "lock it (pipenv lock) and add Pipfile.lock to the project: warptasks installs Pipfiles only from their lock",
        )
    if (root / "requirements.txt").is_file():
        files = requirement_includes(root, "requirements.txt")
        why = "requirements.txt" + (f" (with {', '.join(files[1:])})" if len(files) > 1 else "")
        if with_setup:
            files = files + tuple(n for n in ("setup.py", "setup.cfg") if (root / n).is_file())
            why += ", then the project itself (setup.py)"
        return Dependencies("requirements.txt", files, why, install_project=with_setup)
    if (root / "pyproject.toml").is_file():
        data = _pyproject(root)
        if "build-system" in data or with_setup:
            # setuptools reads setup.py/setup.cfg too: they decide the result as much as pyproject.toml.
            files = ("pyproject.toml", *(n for n in ("setup.py", "setup.cfg") if (root / n).is_file()))
            return Dependencies(
                "pyproject.toml",
                files,
                "pyproject.toml with a build system: the project is installed (editable)",
                install_project=True,
            )
        packages = tuple(str(p) for p in data.get("project", {}).get("dependencies", []))
        return Dependencies(
            "pyproject.toml",
            ("pyproject.toml",),
            "pyproject.toml without a build system: its [project].dependencies are installed",
            packages=packages,
        )
    if with_setup:
        files = tuple(n for n in ("setup.py", "setup.cfg") if (root / n).is_file())
        return Dependencies("setup.py", files, "setup.py: the project is installed (editable)", install_project=True)
    return Dependencies(
        "none", (), "no requirements.txt, pyproject.toml, Pipfile.lock, poetry.lock or uv.lock: nothing to install but the server"
    )


@dataclass(frozen=True)
class PythonRequest:
    version: str | None
    why: str


def detect_python(root: Path, environment: dict[str, str] | None = None) -> PythonRequest:
    """The Python version the project asks for, if any (``X.Y``)."""
    version_file = root / ".python-version"
    if version_file.is_file():
        for line in version_file.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                return PythonRequest(_major_minor(line, ".python-version"), f".python-version asks for {line}")
    runtime = root / "runtime.txt"
    if runtime.is_file():
        text = runtime.read_text(encoding="utf-8", errors="replace").strip()
        return PythonRequest(_major_minor(text.removeprefix("python-"), "runtime.txt"), f"runtime.txt asks for {text}")
    return PythonRequest(None, "no .python-version or runtime.txt: the Python running warptasks")


def _major_minor(text: str, source: str) -> str:
    match = re.match(r"^(?:cpython-|python)?(\d+)\.(\d+)", text.strip())
    if not match:
        raise ConfigError(f"{source} says {text!r}, which is not a Python version", "write a version such as 3.12")
    return f"{match.group(1)}.{match.group(2)}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")
