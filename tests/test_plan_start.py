"""plan_start: the server command warp start execs, and the checks before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cases import ASGI, FLASK_APP, Exe, django_tree, facts, write_tree
from warptasks.detect import AppSpec, detect_app
from warptasks.errors import ConfigError, NotBuilt
from warptasks.facts import Facts
from warptasks.plan import StartOptions, StartPlan, plan_start
from warptasks.scripts import source

PROJECT = "/srv/app"
ENV = f"{PROJECT}/.warp/envs/py3.11-0123456789abcdef"
SOURCE_THEN_EXEC = 'set -a && . "$1" && set +a && shift && exec "$@"'


def built(server: str, **overrides: Any) -> Facts:
    """Facts of a target whose current environment was built for ``server``."""
    state = {"env_key": "py3.11-0123456789abcdef", "env": ENV, "server": server, "kind": "wsgi", "source": "s"}
    return facts(state=state, current=ENV, **overrides)


def start(spec: AppSpec, target: Facts, **options: Any) -> StartPlan:
    return plan_start(spec, target, StartOptions(project=PROJECT, **options))


PRIVATE_DIRS = source("private_dirs.py")


def server_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The server's own command line, after the private_dirs.py that mod_wsgi's starts with."""
    if len(argv) > 3 and argv[3] == PRIVATE_DIRS:
        return argv[argv.index("--") + 1 :]
    return argv


def contains(argv: tuple[str, ...], *words: str) -> bool:
    """``words`` appear in ``argv`` next to each other, in order."""
    return any(argv[i : i + len(words)] == words for i in range(len(argv) - len(words) + 1))


# tree, --server -> (argv start, groups of adjacent words the argv holds, last word or None)
SERVER_CASES = [
    pytest.param(
        {"wsgi.py": ""},
        None,
        (
            (
                f"{ENV}/bin/mod_wsgi-express",
                "start-server",
                "wsgi",
                "--application-type",
                "module",
                "--callable-object",
                "application",
            ),
            [
                ("--host", "127.0.0.1", "--port", "8080"),
                ("--processes", "3"),
                ("--threads", "5"),
                ("--max-clients", "400"),
                ("--working-directory", PROJECT),
                ("--python-path", PROJECT),
                ("--log-to-terminal",),
            ],
            None,
        ),
        id="mod_wsgi-module",
    ),
    pytest.param(
        {"wsgi.py": FLASK_APP},
        "mod_wsgi",
        (
            (f"{ENV}/bin/mod_wsgi-express", "start-server", "wsgi", "--application-type", "module", "--callable-object", "app"),
            [],
            None,
        ),
        id="mod_wsgi-flask-app",
    ),
    pytest.param(
        django_tree(),
        None,
        (
            (f"{ENV}/bin/mod_wsgi-express", "start-server", "mysite.wsgi", "--application-type", "module"),
            [("--callable-object", "application")],
            None,
        ),
        id="mod_wsgi-django",
    ),
    pytest.param(
        {"paste.ini": ""},
        None,
        ((f"{ENV}/bin/mod_wsgi-express", "start-server", f"{PROJECT}/paste.ini", "--application-type", "paste"), [], None),
        id="mod_wsgi-paste",
    ),
    pytest.param(
        {"wsgi.py": ""},
        "gunicorn",
        (
            (
                f"{ENV}/bin/gunicorn",
                "--bind",
                "127.0.0.1:8080",
                "--workers",
                "3",
                "--threads",
                "5",
                "--worker-class",
                "gthread",
                "--chdir",
                PROJECT,
            ),
            [],
            "warp_app:application",
        ),
        id="gunicorn",
    ),
    pytest.param(
        {"wsgi.py": ""},
        "uwsgi",
        (
            (
                f"{ENV}/bin/uwsgi",
                "--http-socket",
                "127.0.0.1:8080",
                "--master",
                "--processes",
                "3",
                "--threads",
                "5",
                "--chdir",
                PROJECT,
                "--module",
                "warp_app:application",
            ),
            [("--die-on-term",), ("--need-app",)],
            None,
        ),
        id="uwsgi",
    ),
    pytest.param(
        {"wsgi.py": ""},
        "waitress",
        ((f"{ENV}/bin/waitress-serve", "--listen=127.0.0.1:8080", "--threads=5"), [], "warp_app:application"),
        id="waitress",
    ),
    pytest.param(
        {"asgi.py": ASGI},
        None,
        ((f"{ENV}/bin/uvicorn", "warp_app:application", "--host", "127.0.0.1", "--port", "8080", "--workers", "3"), [], None),
        id="uvicorn",
    ),
    pytest.param({"app.sh": ""}, None, (("bash", "app.sh"), [], None), id="app.sh"),
    pytest.param(
        {"app.py": "app.run()\n"},
        None,
        ((f"{ENV}/bin/python", "-c", source("run_script.py"), "app.py"), [], None),
        id="app.py",
    ),
    pytest.param(
        {"Procfile": "web: gunicorn -b :$PORT x:app\n"},
        None,
        (("bash", "-c", "exec gunicorn -b :$PORT x:app"), [], None),
        id="procfile",
    ),
]


@pytest.mark.parametrize(("files", "server", "expected"), SERVER_CASES)
def test_each_server_gets_its_command(tmp_path: Path, files: dict[str, str], server: str | None, expected: Any) -> None:
    spec = detect_app(write_tree(tmp_path, files), server=server)
    from warptasks.plan import resolve_server

    plan = start(spec, built(resolve_server(spec)[0]), processes=3, threads=5)
    head, groups, last = expected
    argv = server_argv(plan.server.argv)
    assert argv[: len(head)] == head, argv
    for group in groups:
        assert contains(argv, *group), (group, argv)
    if last is not None:
        assert argv[-1] == last
    assert plan.server.cwd == PROJECT
    assert plan.server.env["PORT"] == "8080" and plan.server.env["HOST"] == "127.0.0.1"
    assert plan.server.path == (f"{ENV}/bin",)
    assert "workers: 3 process(es) x 5 thread(s) (set by options)" in plan.notes


@pytest.mark.parametrize(
    ("files", "server", "expected"),
    [
        pytest.param(
            {"wsgi.py": ""},
            "gunicorn",
            {"WARP_APP_TYPE": "module", "WARP_APP_TARGET": "wsgi:application", "WARP_APP_PROTOCOL": "wsgi"},
            id="wsgi",
        ),
        pytest.param(
            {"paste.ini": ""}, "waitress", {"WARP_APP_TYPE": "paste", "WARP_APP_TARGET": f"{PROJECT}/paste.ini"}, id="paste"
        ),
        pytest.param(
            {"asgi.py": "app = 1\n"}, "uvicorn", {"WARP_APP_TARGET": "asgi:app", "WARP_APP_PROTOCOL": "asgi"}, id="asgi"
        ),
    ],
)
def test_servers_other_than_mod_wsgi_load_the_app_through_warp_app(
    tmp_path: Path, files: dict[str, str], server: str, expected: dict[str, str]
) -> None:
    plan = start(detect_app(write_tree(tmp_path, files), server=server), built(server))
    assert {k: plan.server.env[k] for k in expected} == expected
    assert plan.server.env["PYTHONPATH"] == f"{ENV}/warp:{PROJECT}"


# static.json facts -> (mod_wsgi alias, uwsgi static map); None: not served
STATIC_CASES = [
    pytest.param(
        {"static_url": "/static/", "static_root": "/srv/app/.warp/static"},
        (("/static/", "/srv/app/.warp/static/"), "/static=/srv/app/.warp/static"),
        id="root-gets-the-url-slash",
    ),
    pytest.param(
        {"static_url": "/assets", "static_root": "/srv/static/"},
        (("/assets", "/srv/static"), "/assets=/srv/static"),
        id="root-loses-a-slash-the-url-lacks",
    ),
    pytest.param({"static_url": "static/", "static_root": "/s"}, (("/static/", "/s/"), "/static=/s"), id="relative-url"),
    pytest.param({"static_url": "https://cdn.example.com/s/", "static_root": "/s"}, (None, None), id="absolute-url-not-served"),
    pytest.param({"static_url": "//cdn.example.com/s/", "static_root": "/s"}, (None, None), id="protocol-relative-not-served"),
    pytest.param({"static_url": "/static/", "static_root": ""}, (None, None), id="no-root"),
    pytest.param(None, (None, None), id="no-static.json"),
]


@pytest.mark.parametrize(("static", "expected"), STATIC_CASES)
def test_static_files_are_served_with_agreeing_slashes(static: dict[str, str] | None, expected: Any, tmp_path: Path) -> None:
    alias, static_map = expected
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    mod_wsgi = start(spec, built("mod_wsgi", static=static)).server.argv
    if alias:
        assert contains(mod_wsgi, "--url-alias", *alias)
        assert alias[0].endswith("/") == alias[1].endswith("/")
    else:
        assert "--url-alias" not in mod_wsgi
    uwsgi = start(detect_app(tmp_path, server="uwsgi"), built("uwsgi", static=static)).server.argv
    assert contains(uwsgi, "--static-map", static_map) if static_map else "--static-map" not in uwsgi
    gunicorn = start(detect_app(tmp_path, server="gunicorn"), built("gunicorn", static=static)).server.env
    if alias:
        assert (gunicorn["WARP_STATIC_URL"], gunicorn["WARP_STATIC_ROOT"]) == alias
    else:
        assert "WARP_STATIC_URL" not in gunicorn


@pytest.mark.parametrize(
    ("accounts", "options", "expected"),
    [
        pytest.param([["www-data", "www-data"], ["nobody", "nogroup"]], {}, ("www-data", "www-data"), id="first-account"),
        pytest.param([["nobody", "nogroup"]], {}, ("nobody", "nogroup"), id="nobody"),
        pytest.param([["nobody", "nogroup"]], {"group": "web"}, ("nobody", "web"), id="group-option"),
        pytest.param([], {"user": "app"}, ("app", "app"), id="user-option-names-the-group"),
        pytest.param([["www-data", "www-data"]], {"user": "app", "group": "staff"}, ("app", "staff"), id="user-and-group"),
    ],
)
def test_root_runs_apache_workers_as_an_account_that_must_read_the_app(
    tmp_path: Path, accounts: list[list[str]], options: dict[str, str], expected: tuple[str, str]
) -> None:
    spec = detect_app(write_tree(tmp_path, {"paste.ini": ""}))
    plan = start(spec, built("mod_wsgi", euid=0, worker_accounts=accounts), **options)
    user, group = expected
    assert contains(plan.server.argv, "--user", user, "--group", group)
    check = [c for c in plan.checks if c.name == "worker can read"]
    assert len(check) == 1
    python = f"{ENV}/bin/python"
    assert check[0].argv[4:] == (user, group, python, python, ENV, PROJECT, f"{PROJECT}/paste.ini")


def test_root_without_an_unprivileged_account_is_an_error(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    with pytest.raises(ConfigError, match="no non-root account") as error:
        start(spec, built("mod_wsgi", euid=0, worker_accounts=[]))
    assert "--user" in error.value.hint


@pytest.mark.parametrize(
    ("project", "euid", "group"),
    [
        pytest.param(PROJECT, 1000, "", id="user"),
        pytest.param(PROJECT, 0, "www-data", id="root-gives-the-workers-group"),
        pytest.param("/srv/" + "p" * 50, 1000, "", id="longest-path-for-sockets-in-the-server-root"),
    ],
)
def test_mod_wsgi_gets_a_private_server_root_in_the_environment_folder(
    tmp_path: Path, project: str, euid: int, group: str
) -> None:
    # Without --server-root, mod_wsgi-express uses /tmp/mod_wsgi-HOST:PORT:UID, which another account can make first.
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    plan = plan_start(spec, built("mod_wsgi", euid=euid), StartOptions(project=project, host="::1", port=9000))
    root = f"{project}/.warp/run/::1-9000"
    argv = plan.server.argv
    assert argv[: argv.index("--") + 1] == (f"{ENV}/bin/python", "-I", "-c", PRIVATE_DIRS, group, root, "--")
    assert server_argv(argv)[-2:] == ("--server-root", root) and "--socket-prefix" not in argv
    assert len(root) == 74 or project == PROJECT


def test_mod_wsgi_sockets_too_long_for_the_server_root_get_a_checked_folder_of_their_own(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    project = "/srv/" + "p" * 51  # one character more than the server root can have
    plan = plan_start(spec, built("mod_wsgi", euid=0), StartOptions(project=project, host="::1", port=9000))
    root = f"{project}/.warp/run/::1-9000"
    argv = plan.server.argv
    [sockets] = [argv[i + 1] for i, word in enumerate(argv) if word == "--socket-prefix"]
    # As root in /run, where no other account can make the folder first; another account's in /tmp.
    assert sockets.startswith("/run/warp-wsgi-") and len(sockets + "/wsgi.4194304.u4294967295.99.sock") <= 107
    as_user = plan_start(spec, built("mod_wsgi", euid=1000), StartOptions(project=project, host="::1", port=9000))
    assert contains(as_user.server.argv, "--socket-prefix", sockets.replace("/run/warp-wsgi-", "/tmp/warp-wsgi-1000-"))
    # private_dirs.py makes, checks and closes both, at every start.
    assert argv[: argv.index("--") + 1] == (f"{ENV}/bin/python", "-I", "-c", PRIVATE_DIRS, "www-data", root, sockets, "--")
    assert contains(argv, "--server-root", root)
    other = plan_start(spec, built("mod_wsgi", euid=0), StartOptions(project=project, host="::1", port=9001))
    assert sockets not in other.server.argv, "each server root has its own socket folder"


def test_mod_wsgi_server_root_follows_the_environment_folder(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    plan = start(spec, built("mod_wsgi"), env_dir="build/env")
    assert contains(plan.server.argv, "--server-root", f"{PROJECT}/build/env/run/127.0.0.1-8080")


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn"])
def test_non_root_passes_no_account(tmp_path: Path, server: str) -> None:
    plan = start(detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server=server), built(server, euid=1000))
    assert "--user" not in plan.server.argv
    assert [c.name for c in plan.checks] == ["port"]


def test_gunicorn_as_root_passes_no_apache_account(tmp_path: Path) -> None:
    plan = start(detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server="gunicorn"), built("gunicorn", euid=0))
    assert "--user" not in plan.server.argv


RUN_AS = source("run_as.py")
PYTHON = f"{ENV}/bin/python"


@pytest.mark.parametrize(("files", "server", "expected"), [c for c in SERVER_CASES if not str(c.id).startswith("mod_wsgi")])
def test_as_root_every_server_but_mod_wsgi_runs_as_an_unprivileged_account(
    tmp_path: Path, files: dict[str, str], server: str | None, expected: Any
) -> None:
    # The same command as a user's start, run by run_as.py as www-data: an app served as root hands over the machine.
    spec = detect_app(write_tree(tmp_path, files), server=server)
    from warptasks.plan import resolve_server

    name = resolve_server(spec)[0]
    as_user = start(spec, built(name), processes=3, threads=5)
    as_root = start(spec, built(name, euid=0), processes=3, threads=5)
    assert as_root.server.argv == (PYTHON, "-I", "-c", RUN_AS, "www-data", "www-data", "--", *as_user.server.argv)
    assert (as_root.server.env, as_root.server.cwd, as_root.server.path) == (
        as_user.server.env,
        as_user.server.cwd,
        as_user.server.path,
    )
    # Checked as that account before the start: it must read the Python, the environment and the app.
    assert [c.name for c in as_root.checks] == [c.name for c in as_user.checks] + ["worker can read"]
    check = as_root.checks[-1]
    assert check.argv[:4] == (PYTHON, "-I", "-c", source("read_check.py"))
    assert check.argv[4:] == ("www-data", "www-data", PYTHON, PYTHON, ENV, PROJECT)
    assert f"running as root: {name} runs as www-data:www-data" in "\n".join(as_root.notes)


@pytest.mark.parametrize(
    ("accounts", "options", "expected"),
    [
        pytest.param([["nobody", "nogroup"]], {}, ("nobody", "nogroup"), id="nobody"),
        pytest.param([["www-data", "www-data"]], {"user": "app", "group": "staff"}, ("app", "staff"), id="user-and-group"),
        pytest.param([], {"user": "app"}, ("app", "app"), id="user-option-names-the-group"),
    ],
)
def test_the_account_a_root_server_runs_as_is_mod_wsgis(
    tmp_path: Path, accounts: list[list[str]], options: dict[str, str], expected: tuple[str, str]
) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server="waitress")
    plan = start(spec, built("waitress", euid=0, worker_accounts=accounts), **options)
    assert plan.server.argv[:7] == (PYTHON, "-I", "-c", RUN_AS, *expected, "--")
    assert plan.checks[-1].argv[4:6] == expected


def test_as_root_the_deploy_env_hook_is_sourced_as_the_account_which_must_read_it(tmp_path: Path) -> None:
    files = {"wsgi.py": "", ".warpdrive/action_hooks/deploy-env": "export A=1\n"}
    spec = detect_app(write_tree(tmp_path, files), server="gunicorn")
    plan = start(spec, built("gunicorn", euid=0))
    hook = f"{PROJECT}/.warpdrive/action_hooks/deploy-env"
    assert plan.server.argv[7:12] == ("bash", "-c", SOURCE_THEN_EXEC, "bash", hook)
    assert plan.checks[-1].argv[-1] == hook


def test_root_without_an_unprivileged_account_cannot_start_any_server(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server="gunicorn")
    with pytest.raises(ConfigError, match="no non-root account") as error:
        start(spec, built("gunicorn", euid=0, worker_accounts=[]))
    assert "--user" in error.value.hint


def test_as_root_user_root_keeps_the_server_root_and_says_so(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server="gunicorn")
    plan = start(spec, built("gunicorn", euid=0), user="root")
    assert plan.server.argv == start(spec, built("gunicorn")).server.argv
    assert [c.name for c in plan.checks] == ["port"]
    assert "running as root: gunicorn too, as --user root asks" in plan.notes


def test_mod_wsgi_as_root_stays_root_and_drops_its_own_workers(tmp_path: Path) -> None:
    # Apache binds as root and runs its workers as the account itself (--user/--group): no run_as.py around it.
    plan = start(detect_app(write_tree(tmp_path, {"wsgi.py": ""})), built("mod_wsgi", euid=0))
    assert RUN_AS not in plan.server.argv and contains(plan.server.argv, "--user", "www-data", "--group", "www-data")
    assert [c.name for c in plan.checks] == ["port", "worker can read"]


def test_port_is_checked_before_a_server_but_not_before_the_apps_own(tmp_path: Path) -> None:
    plan = start(detect_app(write_tree(tmp_path / "a", {"wsgi.py": ""})), built("mod_wsgi"), host="::1", port=9000)
    assert [c.name for c in plan.checks] == ["port"]
    assert plan.checks[0].argv[0] == f"{ENV}/bin/python" and plan.checks[0].argv[-2:] == ("::1", "9000")
    assert start(detect_app(write_tree(tmp_path / "b", {"app.sh": ""})), built("shell")).checks == ()


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(facts(), id="nothing-built"),
        pytest.param(facts(current=ENV), id="no-state"),
        pytest.param(facts(state={"server": "mod_wsgi"}), id="no-current-environment"),
    ],
)
def test_start_before_build_is_not_built(tmp_path: Path, target: Facts) -> None:
    with pytest.raises(NotBuilt, match="has not been built") as error:
        start(detect_app(write_tree(tmp_path, {"wsgi.py": ""})), target)
    assert "warp build" in error.value.hint


def test_a_build_record_naming_an_unknown_server_asks_for_a_new_build(tmp_path: Path) -> None:
    # state.json may come from another version of warptasks; its server must be one this version can start.
    with pytest.raises(NotBuilt, match="does not know \\('granian'\\)") as error:
        start(detect_app(write_tree(tmp_path, {"wsgi.py": ""})), built("granian"))
    assert "warp build" in error.value.hint


def test_asking_for_another_server_than_was_built_is_an_error(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server="mod_wsgi")
    with pytest.raises(ConfigError, match="built for gunicorn, but mod_wsgi is asked for") as error:
        start(spec, built("gunicorn"))
    assert "--server mod_wsgi" in error.value.hint


def test_without_a_server_choice_the_built_server_starts(tmp_path: Path) -> None:
    plan = start(detect_app(write_tree(tmp_path, {"wsgi.py": ""})), built("gunicorn"))
    assert plan.server.argv[0] == f"{ENV}/bin/gunicorn"


@pytest.mark.parametrize(
    ("files", "server", "options", "message"),
    [
        pytest.param({"wsgi.py": ""}, "waitress", {"reload": True}, "waitress has no code reloader", id="waitress-reload"),
        pytest.param({"asgi.py": ASGI}, "mod_wsgi", {}, "is an ASGI app", id="asgi-with-mod_wsgi"),
    ],
)
def test_impossible_start_is_a_config_error(
    tmp_path: Path, files: dict[str, str], server: str, options: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        start(detect_app(write_tree(tmp_path, files), server=server), built(server), **options)


@pytest.mark.parametrize(
    ("files", "server", "words", "absent"),
    [
        pytest.param({"wsgi.py": ""}, "mod_wsgi", ("--reload-on-changes",), None, id="mod_wsgi"),
        pytest.param({"wsgi.py": ""}, "gunicorn", ("--reload",), None, id="gunicorn"),
        pytest.param({"wsgi.py": ""}, "uwsgi", ("--py-autoreload", "1"), None, id="uwsgi"),
        pytest.param({"asgi.py": ASGI}, "uvicorn", ("--reload",), "--workers", id="uvicorn"),
    ],
)
def test_reload_uses_each_servers_reloader(
    tmp_path: Path, files: dict[str, str], server: str, words: tuple[str, ...], absent: str | None
) -> None:
    plan = start(detect_app(write_tree(tmp_path, files), server=server), built(server), reload=True)
    assert contains(plan.server.argv, *words)
    assert absent is None or absent not in plan.server.argv
    plain = start(detect_app(tmp_path, server=server), built(server))
    assert not contains(plain.server.argv, *words)


SRC_LAYOUT = {
    "pyproject.toml": '[project]\nname = "srcapp"\nversion = "1"\n[build-system]\nrequires = ["setuptools"]\n',
    "src/srcapp/__init__.py": "",
    ".s2i/environment": "APP_MODULE=srcapp:application\n",
}


@pytest.mark.parametrize("server", ["mod_wsgi", "gunicorn", "uwsgi"])
def test_reload_serves_an_installed_src_layout_from_src(tmp_path: Path, server: str) -> None:
    """The project is installed non-editable: with --reload its src/ comes first on the import path, and it says so."""
    spec = detect_app(write_tree(tmp_path, SRC_LAYOUT), server=server)
    plan = start(spec, built(server), reload=True)
    path = plan.server.env["PYTHONPATH"].split(":")
    assert f"{PROJECT}/src" in path
    assert any(n.startswith(f"reload: {PROJECT}/src comes before the installed project") for n in plan.notes)
    if plan.server.env.get("WARP_APP_TARGET"):  # loaded through warp_app.py: its folder comes first, src/ cannot shadow it
        assert path[:2] == [f"{ENV}/warp", f"{PROJECT}/src"]
    else:
        assert path[0] == f"{PROJECT}/src"
    plain = start(spec, built(server))
    assert f"{PROJECT}/src" not in plain.server.env.get("PYTHONPATH", "")
    assert not any(n.startswith("reload:") for n in plain.notes)


def test_reload_leaves_the_path_alone_when_src_is_not_installed(tmp_path: Path) -> None:
    files = {**SRC_LAYOUT, "pyproject.toml": '[project]\nname = "srcapp"\nversion = "1"\n'}  # no [build-system]
    plan = start(detect_app(write_tree(tmp_path, files), server="gunicorn"), built("gunicorn"), reload=True)
    assert f"{PROJECT}/src" not in plan.server.env.get("PYTHONPATH", "")


@pytest.mark.parametrize(
    ("target", "server", "expected"),
    [
        pytest.param({"affinity": 4, "cpu_count": 8}, "mod_wsgi", ("4", "2"), id="one-process-per-cpu"),
        pytest.param(
            {"affinity": 4, "cgroup": {"v2": {"cpu.max": ["150000 100000"]}, "v1": {}}}, "gunicorn", ("2", "2"), id="cpu-quota"
        ),
        pytest.param({"affinity": 8, "memtotal": 300 * 1024**2}, "uwsgi", ("2", "2"), id="memory-caps-processes"),
    ],
)
def test_workers_follow_the_resources_of_the_target(
    tmp_path: Path, target: dict[str, Any], server: str, expected: tuple[str, str]
) -> None:
    plan = start(detect_app(write_tree(tmp_path, {"wsgi.py": ""}), server=server), built(server, **target))
    processes, threads = expected
    argv = plan.server.argv
    flag = {"mod_wsgi": "--processes", "gunicorn": "--workers", "uwsgi": "--processes"}[server]
    assert contains(argv, flag, processes) and contains(argv, "--threads", threads)
    assert f"workers: {processes} process(es) x {threads} thread(s)" in " ".join(plan.notes)


def test_max_clients_grows_with_workers_and_can_be_set(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    assert contains(start(spec, built("mod_wsgi"), processes=20, threads=10).server.argv, "--max-clients", "800")
    assert contains(start(spec, built("mod_wsgi"), max_clients=50).server.argv, "--max-clients", "50")


def test_deploy_hooks_run_before_the_server_with_deploy_env_sourced(tmp_path: Path) -> None:
    files: dict[str, str | Exe] = {
        "wsgi.py": "",
        ".warpdrive/action_hooks/deploy": Exe(),
        ".warpdrive/action_hooks/deploy-env": "export A=1\n",
    }
    plan = start(detect_app(write_tree(tmp_path, files)), built("mod_wsgi"), port=9000)
    wrapper = ("bash", "-c", SOURCE_THEN_EXEC, "bash", f"{PROJECT}/.warpdrive/action_hooks/deploy-env")
    [deploy] = plan.before
    assert deploy.argv == (*wrapper, "./.warpdrive/action_hooks/deploy")
    assert deploy.cwd == PROJECT
    assert deploy.env["WARPDRIVE_PHASE"] == "deploy" and deploy.env["WARPDRIVE_HTTP_PORT"] == "9000"
    assert plan.server.argv[:5] == wrapper
    assert server_argv(plan.server.argv[5:])[0] == f"{ENV}/bin/mod_wsgi-express"


def test_environment_file_values_reach_the_server(tmp_path: Path) -> None:
    files = {"wsgi.py": "", ".s2i/environment": "DATABASE_URL='postgres://db/x'\n"}
    plan = start(detect_app(write_tree(tmp_path, files), server="gunicorn"), built("gunicorn"))
    assert plan.server.env["DATABASE_URL"] == "postgres://db/x"
    assert plan.server.env["VIRTUAL_ENV"] == ENV


def test_start_plan_is_plain_data(tmp_path: Path) -> None:
    import json

    plan = start(detect_app(write_tree(tmp_path, django_tree())), built("mod_wsgi", euid=0))
    data = json.loads(json.dumps(plan.as_dict()))
    assert set(data) == {"notes", "checks", "before", "server"}
    assert server_argv(tuple(data["server"]["argv"]))[0] == f"{ENV}/bin/mod_wsgi-express"
    assert data["server"]["command"].startswith(f"cd {PROJECT} && ")


def test_gunicorn_reads_warptasks_settings_then_the_apps_app_config(tmp_path: Path) -> None:
    files = {"wsgi.py": "", ".s2i/environment": "APP_CONFIG=conf/gunicorn.py\n", "conf/gunicorn.py": "workers = 3\n"}
    plan = start(detect_app(write_tree(tmp_path, files), server="gunicorn"), built("gunicorn"))
    assert contains(plan.server.argv, "--config", f"{ENV}/warp/gunicorn_conf.py")
    assert plan.server.env["WARP_GUNICORN_CONFIG"] == f"{PROJECT}/conf/gunicorn.py"
    plain = start(detect_app(write_tree(tmp_path / "plain", {"wsgi.py": ""}), server="gunicorn"), built("gunicorn"))
    assert "WARP_GUNICORN_CONFIG" not in plain.server.env


@pytest.mark.parametrize(
    ("environment", "expected", "absent"),
    [
        pytest.param(
            "MOD_WSGI_PROCESSES=4\nMOD_WSGI_THREADS=7\n", [("--processes", "4"), ("--threads", "7")], [], id="processes-threads"
        ),
        pytest.param("WEB_CONCURRENCY=6\n", [("--processes", "6")], [], id="web-concurrency"),
        pytest.param(
            "MOD_WSGI_REQUEST_TIMEOUT=30\nMOD_WSGI_RELOAD_ON_CHANGES=1\n",
            [("--request-timeout", "30"), ("--reload-on-changes",)],
            [],
            id="value-and-flag",
        ),
        pytest.param(
            "MOD_WSGI_RELOAD_ON_CHANGES=0\nMOD_WSGI_UNKNOWN_THING=1\n",
            [],
            ["--reload-on-changes", "--unknown-thing"],
            id="off-and-unknown-ignored",
        ),
    ],
)
def test_warpdrive_mod_wsgi_settings_and_web_concurrency_reach_the_server(
    tmp_path: Path, environment: str, expected: list[tuple[str, ...]], absent: list[str]
) -> None:
    write_tree(tmp_path, {"wsgi.py": "", ".warpdrive/environment": environment})
    argv = start(detect_app(tmp_path), built("mod_wsgi")).server.argv
    for words in expected:
        assert contains(argv, *words), argv
    for word in absent:
        assert word not in argv


def test_a_bad_web_concurrency_is_a_clear_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": "", ".s2i/environment": "WEB_CONCURRENCY=lots\n"})
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        start(detect_app(tmp_path), built("mod_wsgi"))


# server -> (groups of adjacent words its argv holds with trusted_proxy="127.0.0.1", WARP_TRUSTED_PROXY for warp_app.py)
FORWARDED_CASES = [
    pytest.param(
        {"wsgi.py": ""},
        "mod_wsgi",
        [
            ("--trust-proxy-header", "X-Forwarded-For"),
            ("--trust-proxy-header", "X-Forwarded-Proto"),
            ("--trust-proxy-header", "X-Forwarded-Host"),
            ("--trust-proxy", "127.0.0.1"),
        ],
        False,
        id="mod_wsgi",
    ),
    pytest.param({"wsgi.py": ""}, "gunicorn", [("--forwarded-allow-ips", "127.0.0.1")], True, id="gunicorn"),
    pytest.param({"wsgi.py": ""}, "uwsgi", [], True, id="uwsgi"),
    pytest.param(
        {"wsgi.py": ""},
        "waitress",
        [
            ("--trusted-proxy=127.0.0.1",),
            ("--trusted-proxy-headers=x-forwarded-for x-forwarded-proto x-forwarded-host",),
            ("--clear-untrusted-proxy-headers",),
        ],
        False,
        id="waitress",
    ),
    pytest.param({"asgi.py": ASGI}, "uvicorn", [("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")], False, id="uvicorn"),
    pytest.param({"app.py": "app.run()\n"}, None, [], False, id="own"),
]
# Every word any server adds for a trusted proxy: none may appear without one.
FORWARDED_WORDS = (
    "--trust-proxy-header",
    "--trust-proxy",
    "--forwarded-allow-ips",
    "--proxy-headers",
    "--clear-untrusted-proxy-headers",
)


@pytest.mark.parametrize(("files", "server", "groups", "by_warp_app"), FORWARDED_CASES)
def test_a_trusted_proxy_is_believed_by_each_server_and_only_when_set(
    tmp_path: Path, files: dict[str, str], server: str | None, groups: list[tuple[str, ...]], by_warp_app: bool
) -> None:
    spec = detect_app(write_tree(tmp_path, files), server=server)
    from warptasks.plan import resolve_server

    name = resolve_server(spec)[0]
    trusted = start(spec, built(name), trusted_proxy="127.0.0.1")
    argv = server_argv(trusted.server.argv)
    for group in groups:
        assert contains(argv, *group), (group, argv)
    assert trusted.server.env.get("WARP_TRUSTED_PROXY") == ("127.0.0.1" if by_warp_app else None)
    if name != "shell":
        # Every usual word is still there, and the app stays where it was (waitress's options go before it).
        plain = server_argv(start(spec, built(name)).server.argv)
        assert set(plain) <= set(argv)
        if plain[-1] == "warp_app:application":
            assert argv[-1] == plain[-1]
    local = server_argv(start(spec, built(name)).server.argv)
    assert not [w for w in local if w in FORWARDED_WORDS or w.startswith("--trusted-proxy")], local
    assert "WARP_TRUSTED_PROXY" not in start(spec, built(name)).server.env


def test_mod_wsgi_refuses_a_trusted_proxy_apache_would_misread(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": ""}))
    with pytest.raises(ConfigError, match="mod_wsgi-express cannot serve"):
        start(spec, built("mod_wsgi"), trusted_proxy="127.0.0.1 evil")
