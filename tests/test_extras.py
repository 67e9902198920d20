"""Optional extras: a local-only install (no Docker SDK, fabric, PyYAML, pathspec) runs the local tasks, and a task
that needs an extra says which one to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases import write_tree
from warptasks.extras import MissingExtra, missing_extra

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("docker", "fabric", "paramiko", "yaml", "pathspec")

# Runs warp with the optional packages unimportable, as in an environment where only the base install is.
BLOCKED = """
import runpy, sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError("No module named %r" % name, name=name)
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = ["warp"] + sys.argv[1:]
runpy.run_module("warptasks", run_name="__main__")
"""


def _warp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = BLOCKED.format(blocked=set(OPTIONAL))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_tree(tmp_path, {"wsgi.py": "def application(environ, start_response):\n    pass\n"})
    return tmp_path


def test_help_and_plan_need_no_extra(app: Path) -> None:
    shown = _warp("--help", cwd=app)
    assert shown.returncode == 0, shown.stderr
    assert "s2i" in shown.stdout and "deploy" in shown.stdout  # every task is listed, installed extra or not
    planned = _warp("plan", "--project", str(app), cwd=app)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "wsgi" in planned.stdout


@pytest.mark.parametrize(
    ("args", "who", "extra"),
    [
        (("s2i",), "warp s2i", "image"),
        (("builder",), "warp builder", "image"),
        (("kube",), "warp kube", "kube"),
        # On 127.0.0.1 (nothing is reached: the import fails first), some of them before the task's reported block.
        (("deploy", "--host", "127.0.0.1"), "warp deploy", "deploy"),
        (("status", "--host", "127.0.0.1"), "warp status", "deploy"),
        (("logs", "--host", "127.0.0.1"), "warp logs", "deploy"),
    ],
)
def test_a_task_whose_extra_is_missing_names_it(app: Path, args: tuple[str, ...], who: str, extra: str) -> None:
    done = _warp(*args, cwd=app)  # the project: the current folder
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert f"{who} needs" in done.stderr and f"(the {extra} extra)" in done.stderr, done.stderr
    assert f"pip install 'warptasks[{extra}]'" in done.stderr, done.stderr


def test_the_same_tasks_run_past_that_point_with_the_extras_installed(app: Path) -> None:
    # The twin of the test above: without the blocker, s2i gets past its imports (it then needs an engine, or not).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "warptasks", "kube", "--project", str(app), "--image", "example.test/app:1", "--out", "k8s"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "needs" not in done.stderr and "warptasks[" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("module", "task_module", "extra"),
    [
        ("docker", "warptasks.tasks.image", "image"),
        ("docker.errors", "warptasks.tasks.image", "image"),
        ("fabric", "warptasks.tasks.remote", "deploy"),
        ("paramiko.ssh_exception", "warptasks.tasks.console", "deploy"),
        ("yaml", "warptasks.tasks.kube", "kube"),
        ("pathspec", "warptasks.tasks.image", "image"),
        ("pathspec", "warptasks.tasks.remote", "deploy"),
    ],
)
def test_which_extra_a_missing_module_means(module: str, task_module: str, extra: str) -> None:
    found = missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), "warp x", task_module)
    assert isinstance(found, MissingExtra) and found.extra == extra
    assert f"pip install 'warptasks[{extra}]'" in str(found)


def test_a_module_no_extra_provides_is_not_blamed_on_one() -> None:
    assert missing_extra(ModuleNotFoundError("No module named 'nosuch'", name="nosuch"), "warp x") is None


def test_the_command_line_imports_no_optional_package() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import warptasks.cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "warptasks" in imported  # the output is what this test reads
    # Not yaml: invoke's vendored copy imports an installed PyYAML for its C loader (the blocker test covers it).
    heavy = {"docker", "fabric", "paramiko", "pathspec"}
    assert not imported & heavy, sorted(imported & heavy)
    # Nor warptasks' own image, Kubernetes and deploy code: only the light parts of remote the options need.
    ours = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "warptasks.tasks.image" in ours  # the task modules themselves are there: invoke needs their signatures
    unused = sorted(m for m in ours if m.startswith(("warptasks.image", "warptasks.kube")))
    unused += sorted(m for m in ours if m.startswith("warptasks.remote.") and m not in ("warptasks.remote.hosts",))
    assert unused == []
