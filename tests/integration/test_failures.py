"""Bad input: a clear error, a non-zero exit, and the last good build keeps working."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import WARP, free_port, get, serving, startproject, warp, write

HELLO = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"version 1"]
"""


def _current(project: Path) -> str:
    return os.readlink(project / ".warp" / "current")


def _good_build(project: Path) -> str:
    write(project, {"wsgi.py": HELLO, "requirements.txt": "six\n"})
    warp(project, "build", "--server", "gunicorn")
    return _current(project)


def _assert_clean_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback (most recent call last)" not in result.stderr.split("warp: error:")[-1]
    for phrase in phrases:
        assert phrase in result.stdout + result.stderr, result.stdout + result.stderr


def test_requirement_that_fails_to_install_keeps_the_last_good_environment(project_dir: Path) -> None:
    before = _good_build(project_dir)
    (project_dir / "requirements.txt").write_text("six\nthis-package-does-not-exist-warptasks==0.0.1\n")
    result = warp(project_dir, "build", "--server", "gunicorn", check=False)
    _assert_clean_failure(result, "this-package-does-not-exist-warptasks", "install requirements", "last good build")
    assert _current(project_dir) == before
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "version 1"


def test_django_settings_that_fail_to_import_show_the_traceback_tail(project_dir: Path) -> None:
    startproject(project_dir)
    warp(project_dir, "build", "--server", "gunicorn")
    before = _current(project_dir)
    settings = project_dir / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nimport no_such_module_here\n")
    result = warp(project_dir, "build", "--server", "gunicorn", check=False)
    _assert_clean_failure(result, "No module named 'no_such_module_here'", "collectstatic")
    assert _current(project_dir) == before


def test_failing_build_hook_fails_the_build_and_switches_nothing(project_dir: Path) -> None:
    before = _good_build(project_dir)
    write(project_dir, {".warpdrive/action_hooks/build": "#!/bin/sh\necho hook says no >&2\nexit 3\n"})
    result = warp(project_dir, "build", "--server", "gunicorn", check=False)
    _assert_clean_failure(result, "hook says no", "hook build")
    assert result.returncode == 3
    assert _current(project_dir) == before


def test_ctrl_c_during_install_keeps_the_last_good_environment(project_dir: Path) -> None:
    before = _good_build(project_dir)
    # A dependency change forces a new environment; interrupt while it installs. The local package takes
    # 30 s to build, so the interrupt lands in the install however fast the rest of it is.
    slow = project_dir / "slowpkg"
    slow.mkdir()
    (slow / "setup.py").write_text(
        "import time\nfrom setuptools import setup\ntime.sleep(30)\nsetup(name='slowpkg', version='1')\n"
    )
    (project_dir / "requirements.txt").write_text("six\n./slowpkg\n")
    code, out = _interrupt_build(project_dir, "install requirements", settle=1.0)
    assert code == 130, out  # the install itself was interrupted, not a finished build
    assert "interrupted (Ctrl-C) during 'install requirements'" in out, out
    assert _current(project_dir) == before
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "version 1"


def _interrupt_build(project: Path, when: str, settle: float = 0.5) -> tuple[int, str]:
    """Run warp build as at a terminal, send Ctrl-C (SIGINT to its process group) ``settle`` s after ``when`` is printed."""
    process = subprocess.Popen(
        [*WARP, "build", "--server", "gunicorn", "--installer", "pip"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As at a terminal: a test run started in the background (`cmd &`, as some CI runners do) hands its
        # children SIGINT ignored, and a Python that starts so never turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    seen = ""
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen += line
        if when in line or not line:
            break
    assert when in seen, seen
    time.sleep(settle)
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    return process.returncode, seen + out


def test_ctrl_c_during_a_hook_says_interrupted_and_exits_130(project_dir: Path) -> None:
    """A hook that handles Ctrl-C itself and exits 1 (as pip does) is still said to be interrupted, not failed."""
    before = _good_build(project_dir)
    hook = (
        "#!/bin/sh\ntrap 'echo hook stopped; exit 1' INT\necho hook waiting\n"
        "i=0\nwhile [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n"
    )
    write(project_dir, {".warpdrive/action_hooks/pre-build": hook})
    code, out = _interrupt_build(project_dir, "hook waiting")
    assert code == 130, out
    assert "interrupted (Ctrl-C) during 'hook pre-build'" in out, out
    assert "failed (exit" not in out, out
    assert "last good build is still in place" in out, out
    assert _current(project_dir) == before


def test_ctrl_c_while_waiting_for_another_build_says_interrupted_and_exits_130(project_dir: Path) -> None:
    """Ctrl-C outside a step (here, waiting for another build's lock) is an interruption as in a step: 130, said so,
    not invoke's silent exit 1."""
    import fcntl

    write(project_dir, {"wsgi.py": HELLO})
    (project_dir / ".warp").mkdir()
    holder = os.open(project_dir / ".warp" / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        code, out = _interrupt_build(project_dir, "waiting for another build")
    finally:
        os.close(holder)
    assert code == 130, out
    assert "warp: error: interrupted (Ctrl-C)" in out, out
    assert "Traceback" not in out, out
    assert not (project_dir / ".warp" / "current").exists()


def test_an_envs_folder_others_may_write_is_refused_before_building_or_starting(project_dir: Path) -> None:
    shared = project_dir / "shared-envs"
    shared.mkdir(mode=0o755)
    envs = {"INVOKE_WARP_ENVS_DIR": str(shared)}
    write(project_dir, {"wsgi.py": HELLO, "requirements.txt": "six\n"})
    shared.chmod(0o777)
    result = warp(project_dir, "build", "--server", "gunicorn", env=envs, check=False)
    _assert_clean_failure(result, f"environments folder {shared} may be written by other accounts", f"chmod go-w {shared}")
    assert list(shared.iterdir()) == [] and not (project_dir / ".warp" / "current").exists()  # nothing built
    shared.chmod(0o755)
    warp(project_dir, "build", "--server", "gunicorn", env=envs)
    built = sorted(shared.iterdir())
    shared.chmod(0o777)
    result = warp(project_dir, "start", "--port", str(free_port()), env=envs, check=False, timeout=60)
    _assert_clean_failure(result, f"environments folder {shared} may be written", f"chmod go-w {shared}")
    assert sorted(shared.iterdir()) == built


def test_an_envs_folder_inside_a_folder_others_may_write_is_refused_naming_that_folder(project_dir: Path) -> None:
    """They could rename the envs folder away and put their own in its place: every folder up to / counts."""
    above = project_dir / "open"
    envs = above / "envs"
    envs.mkdir(parents=True, mode=0o755)
    above.chmod(0o777)
    write(project_dir, {"wsgi.py": HELLO, "requirements.txt": "six\n"})
    result = warp(project_dir, "build", "--server", "gunicorn", env={"INVOKE_WARP_ENVS_DIR": str(envs)}, check=False)
    _assert_clean_failure(result, f"the folder {above}, above the environments folder {envs}", f"chmod go-w {above}")
    assert list(envs.iterdir()) == [] and not (project_dir / ".warp" / "current").exists()  # nothing built


def test_port_in_use_is_refused_before_starting(project_dir: Path) -> None:
    _good_build(project_dir)
    with serving(project_dir) as site:
        port = site.url.rsplit(":", 1)[1]
        result = warp(project_dir, "start", "--port", port, check=False, timeout=60)
        _assert_clean_failure(result, f"port {port}", "--port")
        assert get(site.url + "/").text == "version 1"


def test_python_version_not_available_is_named(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": HELLO, ".python-version": "3.99\n"})
    result = warp(project_dir, "build", check=False)
    _assert_clean_failure(result, "python3.99", "not available")


def test_no_app_says_what_was_looked_for(project_dir: Path) -> None:
    write(project_dir, {"README.txt": "nothing to serve\n"})
    result = warp(project_dir, "build", check=False)
    _assert_clean_failure(result, "no application found", "wsgi.py", "manage.py", "app.py")


def test_unknown_server_type_lists_the_valid_ones(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": HELLO})
    result = warp(project_dir, "build", "--server", "tomcat", check=False)
    _assert_clean_failure(result, "unknown server type 'tomcat'", "gunicorn", "mod_wsgi", "waitress")


def test_start_before_build_says_to_build(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": HELLO})
    result = warp(project_dir, "start", check=False)
    _assert_clean_failure(result, "warp build")


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn", "uwsgi", "waitress"])
def test_sigterm_stops_the_server_and_frees_its_port(project_dir: Path, server: str) -> None:
    write(project_dir, {"wsgi.py": HELLO})
    warp(project_dir, "build", "--server", server)
    with serving(project_dir) as site:  # serving() sends SIGTERM and fails if the server ignores it
        port = int(site.url.rsplit(":", 1)[1])
    assert site.process.returncode is not None
    # Nothing the server started (Apache children, workers) still holds the port.
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            # As servers bind: connections in TIME_WAIT do not count, a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"port {port} still held after the server stopped") from None
        time.sleep(0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands Apache's workers to another account")
def test_as_root_a_project_apache_workers_cannot_read_is_refused_with_the_fix(project_dir: Path) -> None:
    private = project_dir / "private"
    private.mkdir(mode=0o700)
    app = private / "site"
    write(app, {"wsgi.py": HELLO})
    warp(app, "build")
    # A port of its own: what is checked here comes after the port check, and 8080 may be anyone's.
    result = warp(app, "start", "--port", str(free_port()), check=False, timeout=60)
    _assert_clean_failure(result, "www-data cannot", "Permission denied", "--user/--group")
    os.chmod(private, 0o755)
    with serving(app) as site:  # readable now: the same build starts
        assert get(site.url + "/").text == "version 1"


def test_a_django_build_that_fails_after_collectstatic_leaves_the_static_files_served_as_they_were(
    project_dir: Path,
) -> None:
    """Settings without STATIC_ROOT: collectstatic fills a folder of warptasks' own, never the one being served."""
    startproject(project_dir)
    with (project_dir / "mysite" / "settings.py").open("a") as settings:
        settings.write("\nSTATICFILES_DIRS = [BASE_DIR / 'assets']\n")
    write(project_dir, {"assets/site.css": "version 1\n"})
    warp(project_dir, "build", "--server", "gunicorn")
    served = json.loads((project_dir / ".warp" / "static.json").read_text())["static_root"]
    write(project_dir, {"assets/site.css": "version 2\n"})
    (project_dir / ".warp" / "state.json.next").mkdir()  # the record cannot be written: the build fails after collectstatic
    failed = warp(project_dir, "build", "--server", "gunicorn", check=False)
    _assert_clean_failure(failed)
    assert "collectstatic" in failed.stdout
    assert json.loads((project_dir / ".warp" / "static.json").read_text())["static_root"] == served
    assert (Path(served) / "site.css").read_text() == "version 1\n"
    (project_dir / ".warp" / "state.json.next").rmdir()
    warp(project_dir, "build", "--server", "gunicorn")
    with serving(project_dir, path="/static/site.css") as site:
        assert get(site.url + "/static/site.css").text == "version 2\n"
    assert (Path(served) / "site.css").read_text() == "version 1\n"  # the other folder, for the next build to fill
