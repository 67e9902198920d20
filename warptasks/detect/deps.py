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
from .readsource import read_bytes

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
    new environment. ``packages`` are installed directly: a pyproject.toml's
    ``[project].dependencies`` when it is the dependency source.

    ``install_project``: the project is a package (setup.py/setup.cfg, or a
    pyproject.toml with a ``[build-system]``), installed as the S2I builder does
    (``pip install .``), after its code: non-editable, in the build's app phase,
    so it is reinstalled whenever the source changed. ``project_deps``: its
    own dependencies are resolved then too; never with a lock file, which stays
    the one authority (``--no-deps``). ``warning``: what ``warp plan`` should say.
    """

    kind: str
    files: tuple[str, ...]
    why: str
    packages: tuple[str, ...] = ()
    install_project: bool = False
    digest: str = ""
    project_why: str = ""
    project_deps: bool = True
    warning: str = ""
    # "src" when the installed project's code is under src/ (a src layout): warp start --reload serves it from there.
    src_dir: str = ""


def digest_files(root: Path, files: tuple[str, ...]) -> str:
    """One hash of the named files' names and contents."""
    sha = hashlib.sha256()
    for rel in files:
        path = root / rel
        sha.update(rel.encode() + b"\0")
        sha.update(_bytes(path, rel) if path.is_file() else b"<missing>")
        sha.update(b"\0")
    return sha.hexdigest()


def _bytes(path: Path, rel: str) -> bytes:
    """A dependency file's bytes, read without blocking (see :mod:`.readsource`); a clear error when it cannot be."""
    try:
        return read_bytes(path, limit=None)
    except OSError as error:
        raise ConfigError(f"{rel} cannot be read: {error.strerror}", f"make {rel} a plain file of the project") from None


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
        for line in _bytes(path, rel).decode("utf-8", errors="replace").splitlines():
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
        return tomllib.loads(_bytes(root / "pyproject.toml", "pyproject.toml").decode("utf-8"))
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


LOCK_KINDS = ("uv.lock", "poetry.lock", "Pipfile.lock")


def _dependencies(root: Path, environment: dict[str, str] | None) -> Dependencies:
    environment = environment or {}
    found = _dependency_source(root, environment)
    project, why = _project(root, environment)
    if project:
        locked = found.kind in LOCK_KINDS
        how = "without its dependencies: the lock pins them" if locked else "with what it needs beyond the above"
        files = found.files
        if not locked:
            # Its own dependencies (setup.py's install_requires...) go into the environment too: they decide its content.
            files += tuple(n for n in ("pyproject.toml", "setup.py", "setup.cfg") if (root / n).is_file() and n not in files)
        return replace(
            found,
            files=files,
            install_project=True,
            project_deps=not locked,
            project_why=f"a package ({why}): installed after its code, not editable (pip install .), {how}",
            src_dir="src" if _has_modules(root / "src") else "",
        )
    return replace(found, warning=_src_layout_warning(root, environment))


def _project(root: Path, environment: dict[str, str]) -> tuple[bool, str]:
    """Whether the project is a package the build installs, and why: the S2I builder's two rules."""
    if not _truthy(environment.get("DISABLE_SETUP_PY_PROCESSING")):
        found = [n for n in ("setup.py", "setup.cfg") if (root / n).is_file()]
        if found:
            return True, found[0]
    if (root / "pyproject.toml").is_file() and not _truthy(environment.get("DISABLE_PYPROJECT_TOML_PROCESSING")):
        if "build-system" in _pyproject(root):
            return True, "pyproject.toml has a [build-system]"
    return False, ""


def _has_modules(folder: Path) -> bool:
    """Whether ``folder`` holds a Python module or package (a src layout's src/)."""
    try:
        return folder.is_dir() and any(p.suffix == ".py" or (p / "__init__.py").is_file() for p in folder.iterdir())
    except OSError:
        return False


def _src_layout_warning(root: Path, environment: dict[str, str]) -> str:
    """A src/ layout that nothing installs: its modules are not importable (only the app's folder is on the path)."""
    src = root / "src"
    if not (root / "pyproject.toml").is_file() or not src.is_dir():
        return ""
    # Told where the code is: a home or a path of its own, a script run by its path, a module named from the root.
    if any(environment.get(n) for n in ("APP_HOME", "WARPDRIVE_APP_HOME", "PYTHONPATH", "APP_FILE")):
        return ""
    if environment.get("APP_MODULE", "").startswith("src."):
        return ""
    if not any(p.suffix == ".py" or (p / "__init__.py").is_file() for p in src.iterdir()):
        return ""
    why = (
        "DISABLE_PYPROJECT_TOML_PROCESSING is set"
        if _truthy(environment.get("DISABLE_PYPROJECT_TOML_PROCESSING"))
        else ("pyproject.toml has no [build-system]")
    )
    return (
        f"warning: src/ layout, but the project is not installed ({why}): the modules under src/ will not be "
        "importable; add a [build-system] to pyproject.toml (the project is then installed after its dependencies), "
        "or set APP_HOME=src or PYTHONPATH=src in .s2i/environment"
    )


def _dependency_source(root: Path, environment: dict[str, str]) -> Dependencies:
    """Where the dependencies come from (the project itself aside)."""
    files: tuple[str, ...]
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
        return Dependencies("requirements.txt", files, why)
    if (root / "pyproject.toml").is_file():
        data = _pyproject(root)
        project = data.get("project") or {}
        packages = tuple(str(p) for p in project.get("dependencies", []))
        if "build-system" in data:
            why = "pyproject.toml's [project].dependencies"
            if "dependencies" in project.get("dynamic", []):
                why = "pyproject.toml (its dependencies are dynamic: installed with the project)"
            elif any("@" in p and ("file:" in p or "${" in p) for p in packages):
                # A path into the tree (PDM's file:///${PROJECT_ROOT}/...) only the build backend resolves, after the code.
                packages = ()
                why = "pyproject.toml (its dependencies name paths in the project: installed with the project)"
        else:
            why = "pyproject.toml without a build system: its [project].dependencies are installed"
        return Dependencies("pyproject.toml", ("pyproject.toml",), why, packages=packages)
    setup = tuple(n for n in ("setup.py", "setup.cfg") if (root / n).is_file())
    if setup and not _truthy(environment.get("DISABLE_SETUP_PY_PROCESSING")):
        return Dependencies("setup.py", setup, f"{setup[0]} (installed with the project)")
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
        for line in _bytes(version_file, ".python-version").decode("utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                return PythonRequest(_major_minor(line, ".python-version"), f".python-version asks for {line}")
    runtime = root / "runtime.txt"
    if runtime.is_file():
        text = _bytes(runtime, "runtime.txt").decode("utf-8", errors="replace").strip()
        return PythonRequest(_major_minor(text.removeprefix("python-"), "runtime.txt"), f"runtime.txt asks for {text}")
    return PythonRequest(None, "no .python-version or runtime.txt: the Python running warptasks")


def _major_minor(text: str, source: str) -> str:
    match = re.match(r"^(?:cpython-|python)?(\d+)\.(\d+)", text.strip())
    if not match:
        raise ConfigError(f"{source} says {text!r}, which is not a Python version", "write a version such as 3.12")
    return f"{match.group(1)}.{match.group(2)}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")
