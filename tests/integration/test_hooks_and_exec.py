"""warpdrive's hooks, environment file and commands, for real."""

from __future__ import annotations

from pathlib import Path

from .conftest import get, serving, warp, write

ENV_ECHO = """
import os

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    keys = ("GREETING", "FROM_DEPLOY_ENV", "WARPDRIVE_PHASE")
    return [" ".join("%s=%s" % (k, os.environ.get(k, "-")) for k in keys).encode()]
"""

HOOKS = {
    "wsgi.py": ENV_ECHO,
    ".warpdrive/environment": "GREETING='hello there'\n",
    ".warpdrive/action_hooks/pre-build": '#!/bin/sh\necho pre-build ran >> "$WARPDRIVE_SRC_ROOT/hooks.log"\n',
    ".warpdrive/action_hooks/build-env": "BUILT_WITH=build-env\n",
    ".warpdrive/action_hooks/build": (
        '#!/bin/sh\nset -e\necho "build ran with $BUILT_WITH in $VIRTUAL_ENV" >> "$WARPDRIVE_SRC_ROOT/hooks.log"\n'
        "python -c 'import six'\n"
    ),
    ".warpdrive/action_hooks/deploy-env": "FROM_DEPLOY_ENV=yes\n",
    ".warpdrive/action_hooks/deploy": '#!/bin/sh\necho deploy ran on $WARPDRIVE_HTTP_PORT >> "$WARPDRIVE_SRC_ROOT/hooks.log"\n',
    ".warpdrive/action_hooks/verify": "#!/bin/sh\necho verified $GREETING\n",
    "requirements.txt": "six\n",
}


def test_warpdrive_hooks_run_at_their_points_with_their_environment(project_dir: Path) -> None:
    write(project_dir, HOOKS)
    (project_dir / ".warpdrive/action_hooks/build-env").chmod(0o644)
    warp(project_dir, "build", "--server", "waitress")
    log = (project_dir / "hooks.log").read_text().splitlines()
    assert log[0] == "pre-build ran"
    assert log[1].startswith("build ran with build-env in ") and "/.warp/envs/" in log[1]
    with serving(project_dir) as site:
        assert get(site.url + "/").text == "GREETING=hello there FROM_DEPLOY_ENV=yes WARPDRIVE_PHASE=deploy"
        port = site.url.rsplit(":", 1)[1]
    assert (project_dir / "hooks.log").read_text().splitlines()[-1] == f"deploy ran on {port}"
    verified = warp(project_dir, "verify")
    assert verified.stdout.strip() == "verified hello there"


def _builds(project: Path) -> int:
    return sum(line.startswith("build ran") for line in (project / "hooks.log").read_text().splitlines())


def test_no_op_rebuild_skips_every_step_and_says_so(project_dir: Path) -> None:
    write(project_dir, HOOKS)
    warp(project_dir, "build", "--server", "waitress")
    again = warp(project_dir, "build", "--server", "waitress")
    assert "nothing to do" in again.stdout
    assert _builds(project_dir) == 1
    (project_dir / "wsgi.py").write_text(ENV_ECHO + "\n# changed\n")
    code_change = warp(project_dir, "build", "--server", "waitress")
    assert "skip virtualenv" in code_change.stdout and "hook build" in code_change.stdout
    assert _builds(project_dir) == 2


def test_changed_requirement_builds_a_new_environment_beside_the_old(project_dir: Path) -> None:
    write(project_dir, HOOKS)
    warp(project_dir, "build", "--server", "waitress")
    first = (project_dir / ".warp/current").resolve()
    (project_dir / "requirements.txt").write_text("six\nidna\n")
    warp(project_dir, "build", "--server", "waitress")
    second = (project_dir / ".warp/current").resolve()
    assert first != second and first.exists()
    checked = warp(project_dir, "exec", "--", "python", "-c", "import idna, sys; print(sys.prefix)")
    assert checked.stdout.strip() == str(second)


def test_exec_runs_in_the_environment_with_the_environment_file(project_dir: Path) -> None:
    write(project_dir, HOOKS)
    warp(project_dir, "build", "--server", "waitress")
    result = warp(project_dir, "exec", "--", "sh", "-c", 'echo "$GREETING|$FROM_DEPLOY_ENV|$(pwd)|$VIRTUAL_ENV"')
    greeting, deploy_env, cwd, venv = result.stdout.strip().split("|")
    assert (greeting, deploy_env, cwd) == ("hello there", "yes", str(project_dir))
    assert venv == str((project_dir / ".warp/current").resolve())
    failing = warp(project_dir, "exec", "--", "sh", "-c", "exit 7", check=False)
    assert failing.returncode == 7


def test_missing_health_hooks_fail_instead_of_succeeding_silently(project_dir: Path) -> None:
    write(project_dir, {"wsgi.py": ENV_ECHO})
    warp(project_dir, "build", "--server", "waitress")
    for name in ("alive", "ready", "verify", "setup"):
        result = warp(project_dir, name, check=False)
        assert result.returncode != 0
        assert f"no {name} action hook" in result.stderr
    no_command = warp(project_dir, "exec", check=False)
    assert no_command.returncode != 0 and "no command given" in no_command.stderr


def test_django_migrate_without_a_hook_runs_manage_py_migrate(project_dir: Path) -> None:
    from .conftest import startproject

    startproject(project_dir)
    warp(project_dir, "build", "--server", "waitress")
    result = warp(project_dir, "migrate")
    assert "Applying auth" in result.stdout
    assert (project_dir / "db.sqlite3").exists()


def test_shell_opens_in_the_environment(project_dir: Path) -> None:
    import subprocess

    from .conftest import WARP

    write(project_dir, HOOKS)
    warp(project_dir, "build", "--server", "waitress")
    result = subprocess.run(
        [*WARP, "shell"],
        cwd=project_dir,
        input='echo "in:$VIRTUAL_ENV:$GREETING"; exit 0\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"in:{(project_dir / '.warp/current').resolve()}:hello there" in result.stdout
