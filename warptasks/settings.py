"""Every setting of the warp tasks, in one table, and the one rule that decides each value.

A setting is a field of :class:`Settings` (``warp:``: the project, its build
and its server) or of :class:`DeploySettings` (``warp: deploy:``: the hosts and
how a release reaches them). The field is the table row: its name is the key
in invoke's configuration and the task option, its default is the default,
and its metadata holds what it means and how a value is checked.

The rule, in :func:`_layered`: a task option that was given beats invoke's
configuration, which beats the default. "Given" means not None (and, for the
hosts, not empty): an option left out, or a ``null`` in ``invoke.yaml``, says
nothing. invoke's configuration is itself layered, in invoke's order (the same
for ``inv warp.*`` and the standalone ``warp``, see :mod:`warptasks.cli`): a
runtime file (``-f``) over ``INVOKE_WARP_*`` environment variables over the
project's ``invoke.yaml`` over ``~/.invoke.yaml`` over ``/etc/invoke.yaml``
over a collection's ``configure``. In all:

    option > -f file > INVOKE_WARP_* > project invoke.yaml > ~/.invoke.yaml > /etc/invoke.yaml > default

A few defaults are decided later, from the project and the environment warp
runs in, when no layer sets them: ``port`` (None here) is ``PORT`` exported
where warp runs, else ``PORT`` in the project's environment file, else 8080
(:func:`warptasks.detect.conventions.choose_port`; a deploy and an image use
their own ports, never these).

Values are checked as they are read, so a mistake in ``invoke.yaml`` or an
environment variable is a :class:`~warptasks.errors.ConfigError` naming the
key, not a traceback from deep inside a build or on a host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, TypeVar

from .detect.app import PROCESS_TYPE
from .errors import ConfigError
from .remote.hosts import HostTarget, parse_hosts, parse_names
from .servers import choices_help

Check = Callable[[str, Any], Any]
T = TypeVar("T", "Settings", "DeploySettings")


def _as_is(key: str, value: Any) -> Any:
    return value


def _text(key: str, value: Any) -> Any:
    """A string setting; None stays None (the default decides later, e.g. the local Python)."""
    return None if value is None else str(value)


def _flag(key: str, value: Any) -> bool:
    return bool(value)


# Where a bad value comes from when it reaches a check: a task's whole-number options are checked as they are
# parsed (warptasks.tasks.flags), so what is left is the configuration.
WHERE = "in the warp: configuration (invoke.yaml, a --config file or an INVOKE_WARP_* variable)"


def _integer(key: str, value: Any, *, low: int, high: int | None = None, hint: str = "") -> int:
    """A whole number within bounds; "8080" from an environment variable is one, 80.5 and True are not."""
    number: int | None = None
    if not isinstance(value, bool):
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, float) and number != value:
            number = None
    span = f"{low} to {high}" if high is not None else f"at least {low}"
    if number is None:
        example = max(low, 1)
        raise ConfigError(f"{key} {value!r} is not a number", hint or f"set {key} to a whole number such as {example} {WHERE}")
    if number < low or (high is not None and number > high):
        raise ConfigError(f"{key} {number} is out of range: it must be {span}", hint or f"set {key} to a number {span} {WHERE}")
    return number


def _port(key: str, value: Any) -> int:
    return _integer(key, value, low=1, high=65535, hint=f"set {key} to a port from 1 to 65535, e.g. 8080, {WHERE}")


def _count(key: str, value: Any) -> int | None:
    """Processes, threads, clients: left out (None or empty), it is computed; 0 is a mistake, not "compute it"."""
    if value in (None, ""):
        return None
    return _integer(key, value, low=1, hint=f"set {key} to a whole number of at least 1 {WHERE}, or leave it out to compute it")


def process_counts(key: str, value: Any) -> tuple[int | None, dict[str, int]]:
    """``processes`` read as (the web server's worker processes, {process type: how many}).

    A bare number, or ``web=N``, is the web server's, as it always was; ``TYPE=N`` sets how many of a Procfile's
    process type run on each host (0: none; left out: 1). Taken as a number, a ``TYPE=N`` text (commas between
    several, as an ``INVOKE_WARP_DEPLOY_PROCESSES`` variable gives them), a list of those (``--processes``
    repeated) or a mapping (``processes: {worker: 2}`` in invoke.yaml).
    """
    if value in (None, ""):
        return None, {}
    items: list[tuple[str, Any]] = []
    if isinstance(value, Mapping) or (hasattr(value, "items") and not isinstance(value, (str, bytes))):
        items = [(str(k), v) for k, v in value.items()]
    else:
        for part in value if isinstance(value, (list, tuple)) else [value]:
            for word in str(part).split(",") if isinstance(part, str) else [part]:
                word = word.strip() if isinstance(word, str) else word
                if isinstance(word, str) and "=" in word:
                    name, _, number = word.partition("=")
                    items.append((name.strip(), number.strip()))
                elif word not in (None, ""):
                    items.append(("", word))  # a bare number: the web server's
    web: int | None = None
    types: dict[str, int] = {}
    hint = f"write {key} as a whole number (the web server's worker processes), or TYPE=N for a Procfile process type"
    hint += f", in warp deploy --{key} or {WHERE}"
    for name, number in items:
        if name in ("", "web"):
            web = _integer(f"{key} {name}".strip(), number, low=1, hint=hint)
        elif not PROCESS_TYPE.match(name):
            raise ConfigError(f"{key}: {name!r} is not a process type name", hint)
        else:
            types[name] = _integer(f"{key} {name}", number, low=0, hint=hint)
    return web, types


def _web_processes(key: str, value: Any) -> int | None:
    """``processes`` for a local start: the web server's part of it."""
    return process_counts(key, value)[0]


def _type_counts(key: str, value: Any) -> dict[str, int]:
    return process_counts(key, value)[1]


def _stop_timeouts(key: str, value: Any) -> dict[str, float | int]:
    """Seconds each process type gets to stop after SIGTERM before SIGKILL: ``{worker: 60}``, or a number for all
    (kept as ``"*"``); left out, 30."""
    if value in (None, ""):
        return {}
    if not isinstance(value, Mapping) and not hasattr(value, "items"):
        items: list[tuple[str, Any]] = []
        for part in value if isinstance(value, (list, tuple)) else str(value).split(","):
            name, _, number = str(part).rpartition("=")
            items.append((name.strip() or "*", number.strip()))
    else:
        items = [(str(k), v) for k, v in value.items()]
    timeouts: dict[str, float | int] = {}
    for name, number in items:
        if name != "*" and not PROCESS_TYPE.match(name):
            raise ConfigError(f"{key}: {name!r} is not a process type name", f"write {key} as TYPE=SECONDS, e.g. worker=60")
        timeouts[name] = _seconds(f"{key} {name}", number)
    return timeouts


def _whole(key: str, value: Any) -> int:
    return _integer(key, value, low=0)


def _seconds(key: str, value: Any) -> float | int:
    """A duration in seconds; whole numbers stay ints (they travel as JSON to the host)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number >= 0:
        raise ConfigError(f"{key} {value!r} is not a number of seconds", f"set {key} to a number such as 10 {WHERE}")
    return int(number) if number == int(number) else number


def _upload(key: str, value: Any) -> str:
    if value not in ("auto", "rsync", "sftp"):
        raise ConfigError(f"unknown upload method {value!r}", "use auto, rsync or sftp")
    return str(value)


def _proxy(key: str, value: Any) -> str:
    if value not in ("caddy", "none"):
        raise ConfigError(
            f"unknown proxy {value!r}", "use caddy (warptasks runs the front), or none (you point your own at the backend)"
        )
    return str(value)


def _names(key: str, value: Any) -> tuple[str, ...]:
    return parse_names(value)


def _prefix(key: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    return "/" + str(value).strip("/")


def _optional_port(key: str, value: Any) -> int | None:
    return None if value in (None, "") else _port(key, value)


def _deploy_path(key: str, value: Any) -> str:
    if not str(value).startswith("/"):
        raise ConfigError(f"deploy path {value!r} is not absolute", "set an absolute path, e.g. --path /srv/myapp")
    return str(value)


def _hosts(key: str, value: Any) -> tuple[HostTarget, ...]:
    return tuple(parse_hosts(value))


def setting(default: Any, meaning: str, check: Check = _as_is, *, shared: bool = False) -> Any:
    """One row of the table. ``shared``: a deploy setting read from ``warp:`` too, as for a local build."""
    return field(default=default, metadata={"meaning": meaning, "check": check, "shared": shared})


def meaning(cls: type, key: str) -> str:
    """What ``key`` of a settings class means, for help texts."""
    return str(next(f for f in fields(cls) if f.name == key).metadata["meaning"])


@dataclass(frozen=True)
class Settings:
    """``warp:`` in invoke's configuration: the project, its build and its server."""

    project: str = setting(".", "the project folder", _text)
    env_dir: str = setting(".warp", "where environments live, relative to the project", _text)
    envs_dir: str = setting("", "where the keyed environments are kept (may be shared); empty: <env_dir>/envs", _text)
    installer: str = setting("auto", "auto (uv when available, else pip), uv or pip", _text)
    python: str | None = setting(None, "the Python to build with: an executable or a version such as 3.12", _text)
    server: str | None = setting(None, choices_help(), _text)
    host: str = setting("127.0.0.1", "the address to listen on", _text)
    port: int | None = setting(
        None, "the port to listen on (default: PORT in the environment, else in the environment file, else 8080)", _optional_port
    )
    processes: int | None = setting(None, "worker processes (default: computed from CPUs and memory)", _web_processes)
    threads: int | None = setting(None, "threads per process (default: computed)", _count)
    max_clients: int | None = setting(None, "mod_wsgi-express's Apache capacity (default: at least 400)", _count)
    user: str | None = setting(None, "as root: the account the server runs as (mod_wsgi: Apache's workers)", _text)
    group: str | None = setting(None, "as root: the group the server runs as (mod_wsgi: Apache's workers)", _text)

    @classmethod
    def resolve(cls, config: Any, **given: Any) -> Settings:
        """Task options over ``warp:`` in ``config`` (an invoke Config, a dict, or None) over the defaults."""
        return _layered(cls, _section(config, "warp"), given)


@dataclass(frozen=True)
class DeploySettings:
    """``warp: deploy:``: which hosts, where on them, and how a release gets there and goes live.

    The build and server settings a deploy shares with a local build (``shared``)
    are read from ``warp:``; ``warp: deploy:`` may set them for deploys alone.
    """

    hosts: tuple[HostTarget, ...] = setting((), "host, user@host:port, or {host:, port:, listen:}; a list", _hosts)
    path: str = setting("/srv/app", "the deploy folder on the hosts", _deploy_path)
    port: int = setting(8080, "the public port of a site without HTTPS (with --domain and TLS: 443)", _port)
    listen: str = setting("", "the address the front listens on (default: every address of the host)", _text)
    proxy: str = setting("caddy", "caddy (one front per host, run by warptasks) or none (your own proxy)", _proxy)
    domains: tuple[str, ...] = setting((), "host names the app answers to (HTTPS for them over ACME); a list", _names)
    tls: bool = setting(True, "HTTPS for the domains (off: plain HTTP on the public port, routed by host name)", _flag)
    acme_ca: str | None = setting(None, "the ACME directory URL (default: Let's Encrypt)", _text)
    acme_email: str | None = setting(None, "the e-mail address given to the ACME CA (expiry notices)", _text)
    tls_cert: str | None = setting(None, "a local certificate file (PEM, with its chain) for the domains, instead of ACME", _text)
    tls_key: str | None = setting(None, "the local private key file of --tls-cert", _text)
    path_prefix: str | None = setting(None, "serve the app under this path only (e.g. /shop), passed on as is", _prefix)
    http_port: int = setting(80, "the front's HTTP port on the host, for redirects and ACME challenges (host-wide)", _port)
    https_port: int = setting(443, "the front's HTTPS port on the host (host-wide)", _port)
    backend_port: int | None = setting(
        None,
        "the first of the two loopback ports the app's servers alternate on (default: port + 1); one pair per app",
        _optional_port,
    )
    health: str | None = setting(
        None,
        "the path checked on the new server before the switch: it must answer 2xx or 3xx (default: / may answer "
        "anything below 500)",
        _text,
    )
    health_host: str | None = setting(None, "the Host header of that check (Django's ALLOWED_HOSTS)", _text)
    health_timeout: float = setting(90, "seconds the new server has to answer the check", _seconds)
    keep: int = setting(5, "releases kept per host", _whole)
    python: str = setting("python3", "the host's Python", _text)
    wheels: bool = setting(False, "ship the dependencies as wheels: the hosts need no package index", _flag)
    allow_partial: bool = setting(False, "switch the hosts that succeeded even when another failed", _flag)
    break_lock: bool = setting(False, "take a deploy lock another deploy left", _flag)
    lock_wait: float = setting(10, "seconds to wait for another deploy's lock", _seconds)
    lock_lease: float = setting(
        60, "seconds the deploy lock holds unless renewed, so a killed deploy's lapses (0: until released)", _seconds
    )
    drain: float = setting(2, "seconds the old server keeps running after the switch", _seconds)
    identity: str | None = setting(None, "the SSH private key file", _text)
    known_hosts: str | None = setting(None, "a known_hosts file checked besides ~/.ssh/known_hosts", _text)
    accept_unknown_host: bool = setting(False, "accept (and record) host keys not in known_hosts", _flag)
    ssh_user: str | None = setting(None, "the SSH user for hosts that name none", _text)
    connect_timeout: float = setting(15, "seconds to wait for an SSH connection", _seconds)
    env_file: str | None = setting(None, "a local secrets file uploaded as shared/environment (mode 0600)", _text)
    migrate: bool = setting(True, "run the migrate hook (Django: manage.py migrate) once per deploy", _flag)
    force: bool = setting(False, "deploy even to hosts whose live release is made of the same source", _flag)
    upload: str = setting("auto", "rsync when both ends have it, else an archive over SFTP; or rsync, sftp", _upload)
    systemd: bool = setting(True, "servers as systemd units where systemd runs (a non-root account: where it lingers)", _flag)
    server: str | None = setting(None, meaning(Settings, "server"), _text, shared=True)
    installer: str = setting("auto", meaning(Settings, "installer"), _text, shared=True)
    processes: int | None = setting(
        None,
        "the web server's worker processes on each host (default: computed there); TYPE=N, or a mapping, sets how many "
        "of a Procfile process type run (default 1; 0: none)",
        _web_processes,
        shared=True,
    )
    process_counts: dict[str, int] = setting(
        None, "how many of each Procfile process type run on each host (set through processes)", _type_counts
    )
    stop_timeout: dict[str, float | int] = setting(
        None,
        "seconds a Procfile process type has to stop after SIGTERM before SIGKILL: {worker: 60}, or one number for all "
        "(default 30)",
        _stop_timeouts,
    )
    threads: int | None = setting(None, "threads per process (default: computed)", _count, shared=True)
    user: str | None = setting(None, "as root: the account the server runs as (mod_wsgi: Apache's workers)", _text, shared=True)
    group: str | None = setting(None, "as root: the group the server runs as (mod_wsgi: Apache's workers)", _text, shared=True)

    @classmethod
    def resolve(cls, config: Any, **given: Any) -> DeploySettings:
        """Task options over ``warp: deploy:`` over ``warp:`` (shared settings only) over the defaults."""
        warp = _section(config, "warp")
        shared = {f.name: warp.get(f.name) for f in fields(cls) if f.metadata["shared"]}
        layers = [shared, dict(_section(warp, "deploy")), dict(given)]
        # processes holds the web server's count and the process types' together; the types' merge layer by layer.
        counts: dict[str, int] = {}
        for layer in layers:
            web, types = process_counts("processes", layer.get("processes"))
            layer["processes"] = web
            counts.update(types)
        layers[-1]["process_counts"] = counts or None
        return _layered(cls, *layers)


def _section(config: Any, name: str) -> Mapping[str, Any]:
    """``config[name]`` as a mapping; a missing or empty section is an empty one."""
    if config is None:
        return {}
    section = config.get(name) or {}
    if not isinstance(section, Mapping) and not hasattr(section, "get"):
        raise ConfigError(f"the {name!r} configuration is not a mapping: {section!r}", f"write {name}: as key: value lines")
    return section


def _says(value: Any) -> bool:
    """Whether a layer says anything about a key: None, and an empty host list, leave it to the layers below."""
    return value is not None and not (isinstance(value, (list, tuple)) and not value)


def _layered(cls: type[T], *layers: Mapping[str, Any]) -> T:
    """The one precedence rule: for each key, the last layer that says something wins, else the default."""
    known = {f.name for f in fields(cls)}
    unknown = set(layers[-1]) - known  # the last layer is the task's options: a typo there is a bug
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for row in fields(cls):
        value = _default(row)
        for layer in layers:
            if _says(layer.get(row.name)):
                value = layer.get(row.name)
        values[row.name] = row.metadata["check"](row.name, value)
    return cls(**values)


def _default(row: Field[Any]) -> Any:
    return None if row.default is MISSING else row.default


def config_defaults() -> dict[str, Any]:
    """Every key, for the collection's ``configure``.

    invoke reads an ``INVOKE_WARP_*`` variable only for a key its configuration
    already has, and casts the value to the type of what is there; a list
    cannot be cast, so the hosts start as None (a comma list from the variable
    is read by :func:`~warptasks.remote.hosts.parse_hosts`).
    """

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def rows(cls: type[Settings] | type[DeploySettings]) -> dict[str, Any]:
        # A shared deploy key starts empty, or it would hide the same key under warp:. So does a number: invoke
        # would cast INVOKE_WARP_PORT=abc with int() (a traceback), and INVOKE_WARP_DEPLOY_DRAIN=1.5 too; left as
        # text, the setting's own check reads it, and the default still applies when nothing sets it.
        empty = {f.name for f in fields(cls) if f.metadata["shared"] or f.default == () or number(f.default)}
        return {f.name: None if f.name in empty else _default(f) for f in fields(cls)}

    return {"warp": {**rows(Settings), "deploy": rows(DeploySettings)}}
