"""Forwarded headers: each server believes X-Forwarded-For/-Proto/-Host from the trusted proxy only.

Real builds and real servers on 127.0.0.1, started with the plan's command and
``trusted_proxy="127.0.0.1"`` (what a deploy behind the front asks for). A
client on 127.0.0.1 is that proxy; one bound to 127.0.0.2 (all of 127/8 is
this machine) is any other peer. The last test goes through the real front.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from invoke import Context

from warptasks.plan import plan_start
from warptasks.remote import front
from warptasks.run.executor import run_checks
from warptasks.run.local import _built_python, detect, read_facts, start_options
from warptasks.settings import Settings

from .conftest import Server, free_port, stop, wait_for, warp, write
from .front_helpers import caddy_venv_once, running_front

pytestmark = pytest.mark.integration

WSGI_ECHO = """
import json


def application(environ, start_response):
    seen = {
        "addr": environ["REMOTE_ADDR"],
        "scheme": environ["wsgi.url_scheme"],
        "host": environ.get("HTTP_HOST"),
        "xff": environ.get("HTTP_X_FORWARDED_FOR"),
    }
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""

ASGI_ECHO = """
import json


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = {name.decode("latin1"): value.decode("latin1") for name, value in scope["headers"]}
    seen = {
        "addr": scope["client"][0],
        "scheme": scope["scheme"],
        "host": headers.get("host"),
        "xff": headers.get("x-forwarded-for"),
    }
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""

SPOOF = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.test"}


def ask(port: int, source: str, headers: dict[str, str]) -> dict[str, Any]:
    """What the app saw of one GET to 127.0.0.1:``port`` sent from the address ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", "/", headers=headers)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return dict(json.loads(body))
    finally:
        conn.close()


@contextmanager
def started(project: Path, port: int, trusted_proxy: str | None) -> Iterator[Server]:
    """The built app's server, started with the plan's own command (checks first), as ``warp start`` would with
    ``trusted_proxy``; stopped with SIGTERM afterwards."""
    c = Context()
    settings = Settings.resolve(None, project=str(project), port=port)
    spec = detect(settings)
    facts = read_facts(c, spec.root, settings, _built_python(spec, settings), tree=False)
    plan = plan_start(spec, facts, replace(start_options(spec.root, settings), trusted_proxy=trusted_proxy))
    run_checks(c, plan, say=lambda line: None)
    step = plan.server
    env = {**os.environ, **step.env, "PATH": ":".join([*step.path, os.environ.get("PATH", os.defpath)])}
    log = project.parent / f"{project.name}-server-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            list(step.argv), cwd=step.cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/", process, log)
        yield Server(process, url, log)
    finally:
        stop(process)
        assert process.poll() is not None


# server -> (the app file, what the app sees from the trusted proxy, from it without a trusted proxy)
# {port} stands for the server's own 127.0.0.1:PORT, the Host header the client sent.
CASES = {
    "mod_wsgi": (WSGI_ECHO, ("203.0.113.9", "https", "shop.test"), ("127.0.0.1", "http", "{port}")),
    # gunicorn's own default (forwarded_allow_ips 127.0.0.1,::1) believes X-Forwarded-Proto from 127.0.0.1.
    "gunicorn": (WSGI_ECHO, ("203.0.113.9", "https", "shop.test"), ("127.0.0.1", "https", "{port}")),
    # uWSGI takes wsgi.url_scheme from any peer's X-Forwarded-Proto.
    "uwsgi": (WSGI_ECHO, ("203.0.113.9", "https", "shop.test"), ("127.0.0.1", "https", "{port}")),
    "waitress": (WSGI_ECHO, ("203.0.113.9", "https", "shop.test"), ("127.0.0.1", "http", "{port}")),
    # uvicorn ignores X-Forwarded-Host (the front keeps the original Host), and by default (--proxy-headers,
    # forwarded_allow_ips 127.0.0.1) believes the client and scheme from 127.0.0.1.
    "uvicorn": (ASGI_ECHO, ("203.0.113.9", "https", "{port}"), ("203.0.113.9", "https", "{port}")),
}


def seen(answer: dict[str, Any]) -> tuple[str, str, str]:
    return answer["addr"], answer["scheme"], answer["host"]


def expect(values: tuple[str, str, str], port: int) -> tuple[str, ...]:
    return tuple(v.format(port=f"127.0.0.1:{port}") for v in values)


@pytest.mark.parametrize("server", list(CASES))
def test_forwarded_headers_are_believed_from_the_trusted_proxy_only(project_dir: Path, server: str) -> None:
    app, from_proxy, untrusted = CASES[server]
    write(project_dir, {"asgi.py" if app is ASGI_ECHO else "wsgi.py": app})
    warp(project_dir, "build", "--server", server)

    port = free_port()
    with started(project_dir, port, "127.0.0.1") as running:
        assert seen(ask(port, "127.0.0.1", SPOOF)) == expect(from_proxy, port), running.output()
        # Another peer's headers are not believed (and, but for uvicorn, not even passed on).
        other = ask(port, "127.0.0.2", SPOOF)
        assert seen(other) == ("127.0.0.2", "http", f"127.0.0.1:{port}"), running.output()
        assert server == "uvicorn" or other["xff"] is None
        # From the proxy without the headers: the peer's own.
        assert seen(ask(port, "127.0.0.1", {})) == ("127.0.0.1", "http", f"127.0.0.1:{port}")

    # Without a trusted proxy (a local warp start) nothing is added: each server keeps its own defaults.
    port = free_port()
    with started(project_dir, port, None) as running:
        assert seen(ask(port, "127.0.0.1", SPOOF)) == expect(untrusted, port), running.output()


def test_through_the_front_a_spoofed_client_address_never_reaches_the_app(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": WSGI_ECHO})
    warp(project_dir, "build")  # mod_wsgi, the default
    venv = caddy_venv_once()
    app_port, public = free_port(), free_port()
    with (
        started(project_dir, app_port, "127.0.0.1"),
        running_front(venv, http_port=free_port(), https_port=free_port()) as f,
    ):
        f.site(front.Site(front.app_id("/srv/app"), hosts=("app.test",), port=public), backend=f"127.0.0.1:{app_port}")
        spoofed = {"Host": "app.test", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
        answer = ask(public, "127.0.0.2", spoofed)
        assert seen(answer) == ("127.0.0.2", "http", "app.test"), answer
        assert "6.6.6.6" not in json.dumps(answer)
