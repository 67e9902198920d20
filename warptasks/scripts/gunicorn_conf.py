"""gunicorn settings warptasks adds; the app's own config file (APP_CONFIG) is read after.

Written into the app's environment by ``warp build``. gunicorn ignores names
it does not know, so this works across gunicorn versions.
"""

import os

# gunicorn 27's control socket is one fixed path per user: two apps (or two
# releases during a deploy) would fight over it, and it races with SIGTERM
# during start-up.
control_socket_disable = True

_app_config = os.environ.get("WARP_GUNICORN_CONFIG")
if _app_config:
    with open(_app_config, encoding="utf-8") as _handle:
        exec(compile(_handle.read(), _app_config, "exec"))
