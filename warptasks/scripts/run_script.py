"""Run the app's Python script as ``python SCRIPT ARGS...`` would: ``python -c <this> SCRIPT ARGS...``.

``warp start`` runs an app.py (or APP_FILE) that serves itself through this. The script runs in this process as
``__main__``, its folder first on sys.path, so signals, exit statuses and an exec reach it unchanged. One thing is
added: a script that ends with status 0 without ever having listened on a socket (or started a process, which may
have been its server) served nothing (a Flask app.py whose ``app.run()`` never ran, a script missing its server), and
a web process that ends at once is a failure, not a success: it says so and exits 1. A script that listened and
then stops (SIGTERM) keeps its own status.
"""

import sys

# `python -c` put the app's folder ('') first: its own socket.py or runpy.py must not stand in for the standard
# library's here. The script's folder is put back before the script runs, as `python SCRIPT` has it.
if sys.path and sys.path[0] == "":
    del sys.path[0]

import os  # noqa: E402
import runpy  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402

_listened = []  # type: list[bool]


def _watched(function):
    def watched(*args, **kwargs):
        _listened.append(True)
        return function(*args, **kwargs)

    return watched


socket.socket.listen = _watched(socket.socket.listen)  # type: ignore[method-assign]
# A child process (subprocess, multiprocessing, os.system) may be what serves: the script handed over to it.
for _name in ("fork", "system", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, _watched(getattr(os, _name)))
subprocess.Popen.__init__ = _watched(subprocess.Popen.__init__)  # type: ignore[method-assign]


def _served_nothing(script):
    sys.stderr.write(
        "warp: %s ended (exit status 0) without listening on any port, so nothing was served.\n"
        "  -> make %s start its server on $HOST:$PORT, or name its app object with APP_MODULE=module:callable "
        "(in .s2i/environment) so warp serves it\n" % (script, script)
    )
    sys.stdout.flush()
    os._exit(1)


if len(sys.argv) < 2:
    sys.stderr.write("usage: run_script.py SCRIPT ARGS...\n")
    sys.exit(2)
_script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(_script)))
try:
    runpy.run_path(_script, run_name="__main__")
except SystemExit as _exit:
    if _exit.code in (None, 0) and not _listened:
        _served_nothing(_script)
    raise
if not _listened:
    _served_nothing(_script)
