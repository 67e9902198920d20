"""Entry point warptasks gives gunicorn, uwsgi, waitress and uvicorn.

Written into the app's environment by ``warp build``. It loads the app named
by WARP_APP_TYPE / WARP_APP_TARGET and, when WARP_STATIC_URL and
WARP_STATIC_ROOT are set, serves those static files in front of it (mod_wsgi
does the same with an Apache alias instead).

When WARP_TRUSTED_PROXY is set (gunicorn and uWSGI behind the front proxy:
neither sets REMOTE_ADDR from X-Forwarded-For itself), a WSGI app sees the
forwarded client, scheme and host of requests from that peer only, and the
forwarded headers of any other peer are removed.
"""

import importlib
import ipaddress
import os
import sys

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")


def _load():
    kind = os.environ.get("WARP_APP_TYPE", "module")
    target = os.environ["WARP_APP_TARGET"]
    if kind == "paste":
        from paste.deploy import loadapp

        return loadapp("config:" + os.path.abspath(target))
    module, _, name = target.partition(":")
    name = name or "application"
    if not name.endswith(")"):
        return getattr(importlib.import_module(module), name)
    # gunicorn's factory form (wsgi_app = "module:create_app()"), read as gunicorn reads it: a plain name, called
    # with literal arguments only. Detection accepted nothing else.
    import ast

    call = ast.parse(name, mode="eval").body
    args = [ast.literal_eval(argument) for argument in call.args]
    kwargs = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    return getattr(importlib.import_module(module), call.func.id)(*args, **kwargs)


def _with_static(app):
    url = os.environ.get("WARP_STATIC_URL")
    root = os.environ.get("WARP_STATIC_ROOT")
    if not (url and root):
        return app
    refresh = os.environ.get("WARP_RELOAD") == "1"
    if os.environ.get("WARP_APP_PROTOCOL") == "asgi":
        from servestatic import ServeStaticASGI

        return ServeStaticASGI(app, root=root, prefix=url, autorefresh=refresh)
    from servestatic import ServeStatic

    return ServeStatic(app, root=root, prefix=url, autorefresh=refresh)


def _same_address(peer, proxy):
    try:
        return ipaddress.ip_address(peer) == ipaddress.ip_address(proxy)
    except ValueError:
        return peer == proxy


def _last(environ, name):
    """The last value of a comma-separated forwarded header: the one the trusted proxy itself added."""
    values = [value.strip() for value in environ.get(name, "").split(",")]
    return next((value for value in reversed(values) if value), "")


def _believe(environ):
    client = _last(environ, "HTTP_X_FORWARDED_FOR")
    try:
        environ["REMOTE_ADDR"] = str(ipaddress.ip_address(client))
    except ValueError:
        pass  # absent or not an address: the peer's stays
    scheme = _last(environ, "HTTP_X_FORWARDED_PROTO").lower()
    if scheme in ("http", "https"):
        environ["wsgi.url_scheme"] = scheme
    host = _last(environ, "HTTP_X_FORWARDED_HOST")
    if host:
        environ["HTTP_HOST"] = host


def _disbelieve(environ):
    if "uwsgi.version" in environ and "HTTP_X_FORWARDED_PROTO" in environ:
        # uWSGI took wsgi.url_scheme from this peer's X-Forwarded-Proto; the connection's own, as uWSGI would say it.
        environ["wsgi.url_scheme"] = "https" if environ.get("HTTPS", "").lower() in ("on", "1") else "http"
    for name in _FORWARDED:
        environ.pop(name, None)


def _with_forwarded(app):
    proxy = os.environ.get("WARP_TRUSTED_PROXY")
    if not proxy or os.environ.get("WARP_APP_PROTOCOL") == "asgi":
        return app

    def forwarded(environ, start_response):
        if _same_address(environ.get("REMOTE_ADDR", ""), proxy):
            _believe(environ)
        else:
            _disbelieve(environ)
        return app(environ, start_response)

    return forwarded


if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
application = _with_forwarded(_with_static(_load()))
