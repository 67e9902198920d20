"""The warp task collection, ``warp.*``: thin invoke tasks over the library.

Used as ``inv warp.<task>`` from a project's own tasks.py
(``ns = Collection(warptasks.ns)``) and as the standalone ``warp`` command.
Each task parses its options, calls the library and prints; the image and
deploy tasks import the Docker SDK and fabric only when they run.

- ``local.py``: plan, build, start, exec, shell, setup, migrate, verify, alive, ready.
- ``image.py``: s2i, builder.
- ``kube.py``: kube (Kubernetes and OpenShift manifests).
- ``remote.py``: deploy, status, rollback, remove; config, restart, stop, audit (``start --host`` is local.py's).
- ``console.py``: logs, and exec, shell and the hooks on hosts (``--host``).
- ``report.py``: help texts and error reporting every task shares.
- ``flags.py``: the one table of short flags, and whole-number options checked as they are parsed.
"""

from invoke import Collection

from ..settings import config_defaults
from .console import logs
from .image import builder, s2i
from .kube import kube
from .local import alive, build, exec_, migrate, plan, ready, setup, shell, start, verify
from .remote import audit, config, deploy, remove, restart, rollback, status, stop

ns = Collection(
    "warp",
    plan,
    build,
    start,
    exec_,
    shell,
    setup,
    migrate,
    verify,
    alive,
    ready,
    s2i,
    builder,
    kube,
    deploy,
    status,
    rollback,
    remove,
    logs,
    config,
    restart,
    stop,
    audit,
)
# invoke reads INVOKE_WARP_* variables only for keys its config already has: every key, deploy's included.
ns.configure(config_defaults())

__all__ = ["ns"]
