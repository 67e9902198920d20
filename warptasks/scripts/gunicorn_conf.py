"""gunicorn settings warptasks adds, then the app's own configuration file over them.

Written into the app's environment by ``warp build`` and given to gunicorn as ``--config``. First warptasks'
defaults (workers and threads as the resources allow, access log to stdout, the app's folder), from the
WARP_GUNICORN_* variables the start plan sets; then the app's own file (WARP_GUNICORN_CONFIG: APP_CONFIG or
gunicorn.conf.py), run here as gunicorn would run it, so every setting it makes replaces warptasks' default. What
must win over the app's file is on gunicorn's command line (its bind: the port warp start was given), which gunicorn
puts above any configuration file. gunicorn ignores names it does not know, so this works across gunicorn versions.
"""

import os

# gunicorn 27's control socket is one fixed path per user: two apps (or two
# releases during a deploy) would fight over it, and it races with SIGTERM
# during start-up.
control_socket_disable = True

if os.environ.get("WARP_GUNICORN_WORKERS"):
    workers = int(os.environ["WARP_GUNICORN_WORKERS"])
if os.environ.get("WARP_GUNICORN_THREADS"):
    threads = int(os.environ["WARP_GUNICORN_THREADS"])
    worker_class = "gthread"
if os.environ.get("WARP_GUNICORN_CHDIR"):
    chdir = os.environ["WARP_GUNICORN_CHDIR"]
accesslog = "-"

_app_config = os.environ.get("WARP_GUNICORN_CONFIG")
if _app_config:
    _here = __file__ if "__file__" in globals() else None
    __file__ = _app_config  # as when gunicorn loads it: paths relative to the file work
    with open(_app_config, "rb") as _handle:
        exec(compile(_handle.read(), _app_config, "exec"))
    if _here is not None:
        __file__ = _here
    # warp start supervises the server in the foreground: a daemonised gunicorn would look like one that exited.
    daemon = False
