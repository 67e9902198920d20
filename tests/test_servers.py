"""The server registry: one row per server, so adding a server is its module plus a row here."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import warptasks.servers as servers
from tests.cases import ASGI, facts, write_tree
from warptasks.detect import detect_app
from warptasks.errors import ConfigError
from warptasks.plan.build import BuildOptions, plan_build
from warptasks.plan.resources import Resources, worker_capacity
from warptasks.scripts import source
from warptasks.servers import SERVERS, Server, names, resolve_server, server

GiB = 1024**3

# name -> (packages, protocol, compiled, warp_app, reload, (processes, threads) on 2 CPUs and 8 GiB)
EXPECTED = {
    "mod_wsgi": (("mod_wsgi",), "wsgi", True, False, True, (2, 2)),
    "gunicorn": (("gunicorn", "servestatic"), "wsgi", False, True, True, (2, 2)),
    "uwsgi": (("uwsgi",), "wsgi", True, True, True, (2, 2)),
    "waitress": (("waitress", "servestatic"), "wsgi", False, True, False, (1, 8)),
    "uvicorn": (("uvicorn", "servestatic"), "asgi", False, True, True, (2, 1)),
    "shell": ((), "own", False, False, True, (2, 2)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_server_is_described_by_its_row(name: str) -> None:
    packages, protocol, compiled, warp_app, reload, capacity = EXPECTED[name]
    found = server(name)
    assert found.name == name
    assert (found.packages, found.protocol, found.compiled, found.warp_app, found.reload) == (
        packages,
        protocol,
        compiled,
        warp_app,
        reload,
    )
    sized = worker_capacity(Resources(2, 8 * GiB, ""), found)
    assert (sized.processes, sized.threads) == capacity
    assert sized.why


def test_every_registered_server_has_a_row_and_every_module_is_registered() -> None:
    assert list(SERVERS) == list(EXPECTED)
    modules = [m.name for m in pkgutil.iter_modules([str(Path(servers.__file__).parent)]) if m.name != "base"]
    defined = [importlib.import_module(f"warptasks.servers.{m}").SERVER for m in modules]
    assert sorted(s.name for s in defined) == sorted(SERVERS)
    assert all(SERVERS[s.name] is s for s in defined)


@pytest.mark.parametrize("alias", ["mod_wsgi-express", "modwsgi", "asgi"])
def test_warpdrives_names_are_aliases(alias: str) -> None:
    assert server(alias).name in names()
    assert alias in server(alias).aliases


def test_an_unknown_server_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown server type 'tomcat'") as error:
        server("tomcat")
    assert all(name in error.value.hint for name in ("auto", *names()))


def test_help_lists_the_servers_a_user_picks() -> None:
    assert servers.choices_help() == "auto, mod_wsgi, gunicorn, uwsgi, waitress or uvicorn"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"wsgi.py": ""}, "mod_wsgi", id="wsgi"),
        pytest.param({"asgi.py": ASGI}, "uvicorn", id="asgi"),
        pytest.param({"app.sh": ""}, "shell", id="own"),
    ],
)
def test_auto_picks_the_default_for_the_apps_protocol(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    name, why = resolve_server(detect_app(write_tree(tmp_path, files)))
    assert name == expected
    assert why == server(expected).default_why.format(target=detect_app(tmp_path).target)


def test_exactly_one_default_per_protocol() -> None:
    for protocol in ("wsgi", "asgi", "own"):
        assert len([s for s in SERVERS.values() if s.protocol == protocol and s.default_why]) == 1


@pytest.mark.parametrize("name", list(EXPECTED))
def test_servers_are_frozen_data(name: str) -> None:
    with pytest.raises(AttributeError):
        server(name).name = "other"  # type: ignore[misc]
    assert isinstance(server(name), Server)


def test_paste_apps_get_pastedeploy_where_warp_app_loads_them() -> None:
    assert server("gunicorn").install_packages("paste") == ("gunicorn", "servestatic", "PasteDeploy")
    assert server("mod_wsgi").install_packages("paste") == ("mod_wsgi",)
    assert server("gunicorn").install_packages("wsgi") == ("gunicorn", "servestatic")


ECHO_APP = """
def application(environ, start_response):
    start_response("200 OK", [])
    return [environ]
"""
SPOOF = {
    "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "shop.test",
}


def _warp_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: str | None) -> Any:
    """warp_app.py's application, loading an app that answers with the environ it was given."""
    (tmp_path / "echo.py").write_text(ECHO_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "echo", raising=False)
    for name, value in {"WARP_APP_TARGET": "echo:application", "WARP_TRUSTED_PROXY": proxy}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "warp_app"}
    exec(compile(source("warp_app.py"), "warp_app.py", "exec"), namespace)
    return namespace["application"]


def _seen(app: Any, peer: str, **extra: str) -> dict[str, str]:
    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8081", **SPOOF, **extra}
    (seen,) = app(environ, lambda status, headers: None)
    return seen


@pytest.mark.parametrize(
    ("proxy", "peer", "extra", "expected"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", {}, ("203.0.113.9", "https", "shop.test", True), id="from-the-proxy"),
        pytest.param("::1", "0:0::1", {}, ("203.0.113.9", "https", "shop.test", True), id="ipv6-spelt-otherwise"),
        pytest.param("127.0.0.1", "127.0.0.2", {}, ("127.0.0.2", "http", "127.0.0.1:8081", False), id="another-peer"),
        # uWSGI took the scheme from any peer's X-Forwarded-Proto: undone for another peer.
        pytest.param(
            "127.0.0.1",
            "127.0.0.2",
            {"uwsgi.version": "2.0", "wsgi.url_scheme": "https"},
            ("127.0.0.2", "http", "127.0.0.1:8081", False),
            id="another-peer-on-uwsgi",
        ),
        pytest.param(
            "127.0.0.1",
            "127.0.0.1",
            {"HTTP_X_FORWARDED_FOR": "not an address", "HTTP_X_FORWARDED_PROTO": "gopher"},
            ("127.0.0.1", "http", "shop.test", True),
            id="nonsense-from-the-proxy-is-not-used",
        ),
        pytest.param(None, "127.0.0.1", {}, ("127.0.0.1", "http", "127.0.0.1:8081", True), id="no-proxy-changes-nothing"),
    ],
)
def test_warp_app_believes_forwarded_headers_from_the_trusted_proxy_only(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy: str | None,
    peer: str,
    extra: dict[str, str],
    expected: tuple[str, str, str, bool],
) -> None:
    seen = _seen(_warp_app(tmp_path, monkeypatch, proxy), peer, **extra)
    address, scheme, host, headers_kept = expected
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"], seen["HTTP_HOST"]) == (address, scheme, host)
    # From another peer the headers are gone, so nothing downstream (Django's USE_X_FORWARDED_HOST) believes them.
    assert all((name in seen) == headers_kept for name in SPOOF)


def test_warp_app_calls_gunicorns_factory_form_with_its_literal_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wsgi_app = "factory:make('prod', size=2)" is loaded as gunicorn loads it: the factory called, once."""
    (tmp_path / "factory.py").write_text(
        "def make(name, size=1):\n"
        "    def application(environ, start_response):\n"
        "        start_response('200 OK', [])\n"
        "        return [f'{name} {size}'.encode()]\n"
        "    return application\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "factory", raising=False)
    monkeypatch.setenv("WARP_APP_TARGET", "factory:make('prod', size=2)")
    monkeypatch.delenv("WARP_TRUSTED_PROXY", raising=False)
    namespace: dict[str, Any] = {"__name__": "warp_app"}
    exec(compile(source("warp_app.py"), "warp_app.py", "exec"), namespace)
    assert namespace["application"]({}, lambda status, headers: None) == [b"prod 2"]


def test_mod_wsgi_refuses_a_factory_it_cannot_call(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"gunicorn.conf.py": "wsgi_app = 'app:create_app()'\n", "app.py": ""}))
    with pytest.raises(ConfigError, match=r"mod_wsgi cannot serve 'app:create_app\(\)'") as error:
        plan_build(replace(spec, server="mod_wsgi"), facts(apxs="/usr/bin/apxs"), BuildOptions(project="/srv/app"))
    assert "--server gunicorn" in error.value.hint
