"""The collection imported into a user's own tasks.py, driven by invoke itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .conftest import free_port, get, serving, stop, wait_for, warp, write

USER_TASKS = """
from invoke import Collection, task
import warptasks


@task
def hello(c):
    print("user task")


ns = Collection(hello, warptasks.ns)
"""

APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s"]
"""


def _inv(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inv = os.path.join(os.path.dirname(sys.executable), "inv")
    return subprocess.run(
        [inv, *args], cwd=project, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )


def test_user_tasks_py_gets_warp_tasks_and_invoke_config_applies(project_dir: Path) -> None:
    port = free_port()
    write(
        project_dir,
        {"tasks.py": USER_TASKS, "wsgi.py": APP % b"v1".decode(), "invoke.yaml": f"warp:\n  server: waitress\n  port: {port}\n"},
    )
    listed = _inv(project_dir, "--list")
    assert "warp.build" in listed.stdout and "warp.start" in listed.stdout and "hello" in listed.stdout
    built = _inv(project_dir, "warp.build")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "server: waitress" in built.stdout
    log = project_dir.parent / f"{project_dir.name}-inv.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "inv"), "warp.start"],
            cwd=project_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/", process, log)
        assert get(f"http://127.0.0.1:{port}/").text == "v1"
    finally:
        stop(process)
    # An environment variable beats invoke.yaml; a task option beats both.
    planned = _inv(project_dir, "warp.plan", env={"INVOKE_WARP_PORT": "9999"})
    assert "--listen=127.0.0.1:9999" in planned.stdout
    planned = _inv(project_dir, "warp.plan", "--port", "9998", env={"INVOKE_WARP_PORT": "9999"})
    assert "--listen=127.0.0.1:9998" in planned.stdout
    failed = _inv(project_dir, "warp.build", "--server", "nonsense")
    assert failed.returncode != 0 and "unknown server type" in failed.stderr and "Traceback" not in failed.stderr


def test_reload_picks_up_code_changes(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": APP % "v1"})
    warp(project_dir, "build", "--server", "gunicorn")
    with serving(project_dir, "--reload") as site:
        assert get(site.url + "/").text == "v1"
        (project_dir / "wsgi.py").write_text(APP % "v2")
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and text != "v2":
            time.sleep(0.3)
            try:
                text = get(site.url + "/").text
            except OSError:
                continue
        assert text == "v2"
