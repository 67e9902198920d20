"""Everything warptasks ships verbatim to a target and runs there.

Nothing in this folder imports warptasks: each file is sent as source to the
target's own Python (``python -c``), written into an app's environment at
build time, or copied into an image. The Python files keep to the oldest
syntax a target may have (see pyproject's ruff settings).

- ``probe.py``: reads a target's facts (one JSON object); also records a build.
- ``port_check.py``, ``read_check.py``: checks before a server starts; ``checks.py`` runs several of them in one Python.
- ``private_dirs.py``: makes a server's runtime folders private, then execs it (mod_wsgi-express).
- ``run_as.py``: as root, runs a server (all but mod_wsgi) as an unprivileged account.
- ``envfile.py``: the one environment-file parser (detection imports it); runs a command with a file's values.
- ``switch.py``: makes an environment current, atomically.
- ``agent.py``: the deploy's actions on a host (lock, start, health, switch...).
- ``proxy.py``: the deploy's front proxy on a host (today's relay).
- ``front.py``: Caddy as a host's front, one per host, a site per app (not yet used by deploys).
- ``warp_app.py``, ``gunicorn_conf.py``: loaded by servers from the environment.
- ``run_script.py``: runs an app.py that serves itself; one that ends at once having listened on nothing fails.
- ``setup_name.py``: puts the module ``setup.py --name`` prints into the server's command, then execs it.
- ``django_static.py``: Django's collectstatic, with a STATIC_ROOT supplied.
- ``image_start.py``: ``warp`` in an application image's runtime stage: starts the app from the start data rendered
  at build time, sizing the workers with ``plan/resources.py`` (shipped beside it), and is the HEALTHCHECK.
- ``s2i/``: the S2I builder image's scripts.
"""

import os
from functools import cache

HERE = os.path.dirname(os.path.abspath(__file__))


@cache
def source(name: str) -> str:
    """The text of the shipped file ``name`` (a path inside this folder).

    Read as a plain file (warptasks is always installed as files): importlib.resources would cost every warp
    command ~5 ms of imports. Kept once read: a plan embeds the same scripts in several steps.
    """
    with open(os.path.join(HERE, name), encoding="utf-8") as handle:
        return handle.read()


# Isolated mode: neither the working folder (the project) nor PYTHONPATH (the server's names the project) is on
# sys.path, PYTHON* variables and the user's site are ignored. The helpers run in the project's folder, some as root:
# a project's re.py or sitecustomize.py must never be imported by them. Their environment is passed on unchanged to
# the command some of them exec (os.environ keeps PYTHONPATH).
ISOLATED = "-I"


def command(python: str, name: str, *args: str) -> tuple[str, ...]:
    """The command that runs the shipped script ``name`` with ``python``, isolated (see :data:`ISOLATED`)."""
    return (python, ISOLATED, "-c", source(name), *args)
