"""Every script warptasks ships runs isolated (``python -I``): a project's files never shadow its imports (pure tier).

The helpers run with the project as their working folder, some as root, some with ``PYTHONPATH`` naming the
project (the server's step, inside run_as.py): without ``-I`` a project's ``re.py`` or ``sitecustomize.py`` would
be imported by them. The collectstatic script is left out on purpose: it imports the app's settings, so it runs the
app's code whatever its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cases import ASGI, django_tree, facts, write_tree
from warptasks.detect import detect_app
from warptasks.plan import BuildOptions, StartOptions, Step, plan_build, plan_start
from warptasks.remote.layout import Layout, with_shared_environment
from warptasks.run import executor
from warptasks.scripts import source
from warptasks.servers import SERVERS

HELPERS = ("envfile.py", "run_as.py", "read_check.py", "private_dirs.py", "port_check.py", "switch.py", "probe.py")
SOURCES = {source(name): name for name in HELPERS}
ENV = "/srv/app/.warp/envs/py3.11-0123456789abcdef"
TREES = {"mod_wsgi": django_tree(), "uvicorn": {"asgi.py": ASGI}, "shell": {"app.sh": "#!/bin/sh\nexec sleep 1\n"}}


def helper_runs(argv: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """Each shipped helper ``argv`` runs (nested ones too: run_as.py runs the next command), with its Python's options."""
    found = []
    for i, word in enumerate(argv):
        if word == "-c" and i + 1 < len(argv) and argv[i + 1] in SOURCES:
            start = max(j for j in range(i) if not argv[j].startswith("-"))
            found.append((SOURCES[argv[i + 1]], argv[start + 1 : i]))
    return found


def steps_of(tmp_path: Path, server: str, euid: int) -> list[Step]:
    tree = TREES.get(server, {"wsgi.py": "def application(e, s):\n    pass\n"})
    write_tree(tmp_path, tree)
    spec = detect_app(str(tmp_path), server=server)
    extra: dict[str, Any] = {"apxs": "/usr/bin/apxs"} if server == "mod_wsgi" else {}
    build = plan_build(spec, facts(euid=euid, **extra), BuildOptions(project=str(tmp_path)))
    state = {"env_key": "py3.11-0123456789abcdef", "env": ENV, "server": server, "kind": "wsgi", "source": "s"}
    target = facts(euid=euid, state=state, current=ENV, worker_accounts=[["www-data", "www-data"]], **extra)
    start = plan_start(spec, target, StartOptions(project=str(tmp_path)))
    return [*build.steps, *start.checks, *start.before, start.server]


@pytest.mark.parametrize("euid", [0, 1000], ids=["root", "user"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_every_helper_a_plan_runs_is_isolated(tmp_path: Path, server: str, euid: int) -> None:
    runs = [(step.name, run) for step in steps_of(tmp_path, server, euid) for run in helper_runs(step.argv)]
    assert runs, "the plans run helpers"
    assert [(name, helper) for name, (helper, options) in runs if "-I" not in options] == []


def test_a_host_step_and_the_probe_run_their_helpers_isolated() -> None:
    step = Step("migrate", ("python", "manage.py", "migrate"), "/srv/app", "migrate", env={"A": "1"})
    literal, _ = with_shared_environment(step, Layout("/srv/app"), "python3", "/srv/app/.warp/env/migrate")
    assert helper_runs(literal.argv) == [("envfile.py", ("-I",))]

    class Seen:
        command = ""

        def run(self, command: str, **_: Any) -> Any:
            Seen.command = command
            raise SystemExit

    with pytest.raises(SystemExit):
        executor.gather_facts(Seen(), "python3", {})
    assert Seen.command.startswith("python3 -I -c ")
