"""What the probe read on a target, typed: parsed once, read by attribute everywhere after.

:mod:`warptasks.scripts.probe` runs on the target's own Python and prints one
JSON object; :meth:`Facts.parse` turns it into the frozen values below and is
the only code that knows the JSON's keys. A shape it does not expect is a
:class:`BadFacts` at the boundary, not a ``KeyError`` deep inside a planner.

The probe also relays files warptasks wrote on the target (``state.json``,
``static.json``). Those may have been written by another version, so they are
read leniently: a missing key is empty, anything but an object is "none".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import WarpError


class BadFacts(WarpError):
    """The probe's output does not have the shape this warptasks reads."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"unexpected facts from the target: {message}",
            "the probe shipped with this warptasks printed something else; please report it as a bug",
        )


@dataclass(frozen=True)
class PythonFacts:
    """The Python installation a build's environment is made from."""

    executable: str  # the base installation, symlinks resolved (never a virtualenv's)
    version: str  # "3.11"
    full_version: str  # "3.11.2"
    prefix: str
    others_can_read: bool  # whether an unprivileged account (Apache's workers) can read it
    running: str  # the interpreter that ran the probe, which may be a virtualenv's


@dataclass(frozen=True)
class CgroupLimits:
    """Raw limit files of the probe's cgroup and each ancestor, innermost first: a limit anywhere above applies."""

    cpu_max: tuple[str, ...] = ()  # v2 cpu.max: "max 100000" or "150000 100000"
    memory_max: tuple[str, ...] = ()  # v2 memory.max: "max" or bytes
    cfs: tuple[tuple[str, str], ...] = ()  # v1 (cpu.cfs_quota_us, cpu.cfs_period_us); quota -1: none
    limit_in_bytes: tuple[str, ...] = ()  # v1 memory.limit_in_bytes; "no limit" is a huge number


@dataclass(frozen=True)
class BuildState:
    """``state.json``: what the last completed build made current."""

    env_key: str = ""
    env: str = ""
    server: str = ""
    kind: str = ""
    source: str = ""  # the source tree's fingerprint as that build left it


@dataclass(frozen=True)
class StaticFiles:
    """``static.json``: the URL static files are served at, and the folder they are in."""

    url: str = ""
    root: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything a plan needs to know about the machine it will run on."""

    python: PythonFacts
    has_virtualenv: bool
    uv: str | None
    apxs: str | None
    euid: int | None  # None where the OS has no user ids
    home: str
    worker_accounts: tuple[tuple[str, str], ...]  # unprivileged (user, primary group) that exist
    cache_home: str
    cpu_count: int | None
    affinity: int | None  # CPUs this process may run on
    memtotal: int | None  # bytes
    cgroup: CgroupLimits
    state: BuildState | None  # None: nothing was built
    current: str | None  # the environment ``current`` points at
    complete_envs: tuple[str, ...]  # keys of environments whose build completed
    static: StaticFiles | None
    source_digest: str | None  # None unless the probe was asked to fingerprint the tree
    # Read beside the probe only in an image's base (see warptasks.image.engine.probe_image).
    cc: str | None = None
    package_manager: str | None = None
    # Whether the system has a CA store uv can load (None: not known, as from an older probe): uv told to use
    # an empty one fails every request ("No CA certificates were loaded from the system").
    system_ca: bool | None = None
    # Folders of the envs folder a build may not use, with why (another account's, a link, writable by others).
    foreign_envs: tuple[tuple[str, str], ...] = ()
    # The envs folder itself, when another account may write to it or owns it: (problem, fix); None: it is safe.
    unsafe_envs: tuple[str, str] | None = None

    @classmethod
    def parse(cls, data: object) -> Facts:
        """The facts in the probe's JSON output (already decoded); :class:`BadFacts` if its shape is wrong."""
        top = _object(data, "the output")
        return cls(
            python=_python(_object(_key(top, "python"), "python")),
            has_virtualenv=_bool(top, "has_virtualenv"),
            uv=_optional_str(top, "uv"),
            apxs=_optional_str(top, "apxs"),
            euid=_optional_int(top, "euid"),
            home=_str(top, "home"),
            worker_accounts=tuple(_pair(item, "worker_accounts") for item in _list(top, "worker_accounts")),
            cache_home=_str(top, "cache_home"),
            cpu_count=_optional_int(top, "cpu_count"),
            affinity=_optional_int(top, "affinity"),
            memtotal=_optional_int(top, "memtotal"),
            cgroup=_cgroup(_object(_key(top, "cgroup"), "cgroup")),
            state=_state(_key(top, "state")),
            current=_optional_str(top, "current"),
            complete_envs=tuple(_text(item, "complete_envs") for item in _list(top, "complete_envs")),
            static=_static(_key(top, "static")),
            source_digest=_optional_str(top, "source_digest"),
            cc=_optional_str(top, "cc") if "cc" in top else None,
            package_manager=_optional_str(top, "package_manager") if "package_manager" in top else None,
            system_ca=_bool(top, "system_ca") if "system_ca" in top else None,
            foreign_envs=tuple(_pair(item, "foreign_envs") for item in _list(top, "foreign_envs"))
            if "foreign_envs" in top
            else (),
            unsafe_envs=_pair(top["unsafe_envs"], "unsafe_envs") if top.get("unsafe_envs") is not None else None,
        )


def _key(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise BadFacts(f"{key!r} is missing")
    return data[key]


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadFacts(f"{where} should be an object, not {value!r}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadFacts(f"{where} should be text, not {value!r}")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    return _text(_key(data, key), key)


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = _key(data, key)
    return None if value is None else _text(value, key)


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = _key(data, key)
    if not isinstance(value, bool):
        raise BadFacts(f"{key} should be true or false, not {value!r}")
    return value


def _optional_int(data: Mapping[str, Any], key: str) -> int | None:
    value = _key(data, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadFacts(f"{key} should be a whole number, not {value!r}")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = _key(data, key)
    if not isinstance(value, list):
        raise BadFacts(f"{key} should be a list, not {value!r}")
    return value


def _pair(value: object, where: str) -> tuple[str, str]:
    if not isinstance(value, list) or len(value) != 2:
        raise BadFacts(f"{where} should hold pairs, not {value!r}")
    return _text(value[0], where), _text(value[1], where)


def _python(data: Mapping[str, Any]) -> PythonFacts:
    return PythonFacts(
        executable=_str(data, "executable"),
        version=_str(data, "version"),
        full_version=_str(data, "full_version"),
        prefix=_str(data, "prefix"),
        others_can_read=_bool(data, "others_can_read"),
        running=_str(data, "running"),
    )


def _texts(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise BadFacts(f"{where} should be a list, not {value!r}")
    return tuple(_text(item, where) for item in value)


def _cgroup(data: Mapping[str, Any]) -> CgroupLimits:
    # The probe only adds a file's key when it found that file, so every key may be absent.
    v2 = _object(data.get("v2", {}), "cgroup v2")
    v1 = _object(data.get("v1", {}), "cgroup v1")
    cfs = v1.get("cpu", [])
    if not isinstance(cfs, list):
        raise BadFacts(f"cgroup v1 cpu should be a list, not {cfs!r}")
    return CgroupLimits(
        cpu_max=_texts(v2, "cpu.max", "cgroup cpu.max"),
        memory_max=_texts(v2, "memory.max", "cgroup memory.max"),
        cfs=tuple(_pair(item, "cgroup v1 cpu") for item in cfs),
        limit_in_bytes=_texts(v1, "limit_in_bytes", "cgroup limit_in_bytes"),
    )


def _field(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _state(value: object) -> BuildState | None:
    if not isinstance(value, dict) or not value:
        return None
    return BuildState(**{key: _field(value, key) for key in ("env_key", "env", "server", "kind", "source")})


def _static(value: object) -> StaticFiles | None:
    if not isinstance(value, dict):
        return None
    return StaticFiles(url=_field(value, "static_url"), root=_field(value, "static_root"))
