"""The optional parts of warptasks (``pip install 'warptasks[EXTRA]'``), and the message when one is missing.

A local ``warp build`` / ``warp start`` needs only invoke, virtualenv and uv. Images need the Docker SDK, deploys
fabric (and its SSH stack), ``warp kube`` PyYAML: extras, so a local-only install stays small. Their modules are
imported only inside the tasks that use them; a task run without its extra fails with :class:`MissingExtra`,
which names the extra to install.
"""

from __future__ import annotations

from .errors import WarpError

# Each extra, as the message calls it.
EXTRAS = {"image": "the Docker SDK", "deploy": "fabric and its SSH stack", "kube": "PyYAML"}
# A top-level module an extra provides -> that extra. pathspec is in two: the task decides (see :func:`missing_extra`).
MODULES = {"docker": "image", "fabric": "deploy", "paramiko": "deploy", "yaml": "kube", "pathspec": "deploy"}
# Tasks whose module is warptasks.tasks.<key> need the extra <value> when pathspec is missing.
TASK_EXTRA = {"image": "image", "kube": "kube"}


class MissingExtra(WarpError):
    """A task needs a package from an extra that is not installed."""

    def __init__(self, who: str, extra: str, module: str) -> None:
        super().__init__(
            f"{who} needs {EXTRAS[extra]} (the {extra} extra): {module} is not installed",
            f"pip install 'warptasks[{extra}]' (or warptasks[all]) into the environment warp runs from",
        )
        self.extra = extra


def missing_extra(error: ModuleNotFoundError, who: str, task_module: str = "") -> MissingExtra | None:
    """The :class:`MissingExtra` an import failure means, or None when the module is not an extra's."""
    top = (error.name or "").split(".")[0]
    if top not in MODULES:
        return None
    extra = MODULES[top]
    if top == "pathspec":
        extra = TASK_EXTRA.get(task_module.rsplit(".", 1)[-1], extra)
    return MissingExtra(who, extra, top)
