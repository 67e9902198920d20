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

from functools import wraps

from invoke import Collection, Task
from invoke.exceptions import Exit

from ..extras import missing_extra
from ..settings import config_defaults
from .console import logs
from .image import builder, s2i
from .kube import kube
from .local import alive, build, exec_, migrate, plan, ready, setup, shell, start, verify
from .remote import audit, config, deploy, remove, restart, rollback, status, stop


def _names_missing_extras(task: Task) -> Task:
    """``task``, whose run stops with the extra to install when it imports a package of an extra that is missing.

    Every task: the image, deploy and kube tasks import their packages only when they run, some before their
    ``reported()`` block. (invoke hashes a task by its body: changed once, here, before any task runs.)
    """
    body = task.body

    @wraps(body)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return body(*args, **kwargs)
        except ModuleNotFoundError as error:
            missing = missing_extra(error, f"warp {task.name}", body.__module__)
            if missing is None:
                raise
            raise Exit(f"warp: error: {missing}", code=missing.exit_code) from None

    task.body = run
    return task


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
for _task in ns.tasks.values():
    _names_missing_extras(_task)
# invoke reads INVOKE_WARP_* variables only for keys its config already has: every key, deploy's included.
ns.configure(config_defaults())

__all__ = ["ns"]
