"""Entry point warptasks gives gunicorn, uwsgi, waitress and uvicorn.

Written into the app's environment by ``warp build``. It loads the app named
by WARP_APP_TYPE / WARP_APP_TARGET and, when WARP_STATIC_URL and
WARP_STATIC_ROOT are set, serves those static files in front of it (mod_wsgi
does the same with an Apache alias instead).
"""

import importlib
import os
import sys


def _load():
    kind = os.environ.get("WARP_APP_TYPE", "module")
    target = os.environ["WARP_APP_TARGET"]
    if kind == "paste":
        from paste.deploy import loadapp

        return loadapp("config:" + os.path.abspath(target))
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name or "application")


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


if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
application = _with_static(_load())
