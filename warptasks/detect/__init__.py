"""Detection: a source tree in, an :class:`AppSpec` out. Pure: it reads files, it runs nothing.

- ``app.py``: how the app is launched (app.sh, app.py, Django, wsgi.py, ...).
- ``deps.py``: its dependencies and the Python it asks for.
- ``django.py``: Django's settings, read without importing them.
- ``conventions.py``: warpdrive's and S2I's hooks, environment files and settings.
"""

from .app import SERVER_ALIASES, SERVERS, UNTRACKED_DIRS, AppSpec, detect_app

__all__ = ["SERVERS", "SERVER_ALIASES", "UNTRACKED_DIRS", "AppSpec", "detect_app"]
