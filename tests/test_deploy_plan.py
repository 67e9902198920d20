"""Deploy, pure tier: host specs, release files, the host-side agent's bookkeeping, wheel plans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fabric import Connection

from tests.cases import as_git_repo, facts
from warptasks.detect import detect_app
from warptasks.errors import ConfigError
from warptasks.facts import Facts
from warptasks.plan import BuildOptions, Step, command_line, plan_build
from warptasks.remote.host import HostDeploy
from warptasks.remote.hosts import HostTarget, check_host_keys, parse_host, parse_hosts
from warptasks.remote.interrupt import Interrupted, signals_as_interrupts
from warptasks.remote.known_hosts import CheckedPolicy
from warptasks.remote.layout import Layout, backend_port, migrate_step, with_shared_environment
from warptasks.remote.rollback import rollback
from warptasks.remote.upload import release_id, rsync_step, source_files, ssh_command
from warptasks.remote.wheels import download_steps, offline_install_env, wheel_requirements
from warptasks.scripts import agent as deploy_agent
from warptasks.scripts import envfile, source
from warptasks.servers import SERVERS, server
from warptasks.settings import DeploySettings


@pytest.mark.parametrize(
    "value, expected",
    [
        ("web1", HostTarget("web1")),
        ("deploy@web2", HostTarget("web2", "deploy")),
        ("deploy@web2:2222", HostTarget("web2", "deploy", 2222)),
        ("10.0.0.5:22", HostTarget("10.0.0.5", None, 22)),
        ("root@[::1]:2200", HostTarget("::1", "root", 2200)),
        ({"host": "app@web3:2022", "port": 9000, "listen": "127.0.0.1"}, HostTarget("web3", "app", 2022, 9000, "127.0.0.1")),
    ],
)
def test_host_specs_are_read(value: Any, expected: HostTarget) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize("value", ["user@", "a b", "host:port", {"port": 80}])
def test_unreadable_host_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError):
        parse_host(value)


def test_hosts_from_a_comma_list_and_duplicates_refused() -> None:
    assert [t.host for t in parse_hosts("web1,web2")] == ["web1", "web2"]
    with pytest.raises(ConfigError, match="given twice"):
        parse_hosts(["web1", "web1"])


def test_connections_refuse_unknown_host_keys_unless_asked(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    conn = Connection("127.0.0.1", port=2222)
    check_host_keys(conn, str(known), accept_unknown=False)
    assert isinstance(conn.client._policy, CheckedPolicy) and not conn.client._policy.accept_unknown
    assert conn.client.get_host_keys().lookup("[127.0.0.1]:2222") is not None
    other = Connection("127.0.0.1", port=2222)
    check_host_keys(other, None, accept_unknown=True)
    assert isinstance(other.client._policy, CheckedPolicy) and other.client._policy.accept_unknown


@pytest.mark.parametrize("current, expected", [(None, 8081), (8081, 8082), (8082, 8081), (9999, 8081)])
def test_backend_ports_alternate_between_a_pair(current: int | None, expected: int) -> None:
    assert backend_port(8081, current) == expected


def test_a_host_step_gets_its_environment_from_files_never_from_its_command_line() -> None:
    step = Step("gunicorn", ("gunicorn", "app"), "/srv/a/releases/1", "serve", env={"TOKEN": "s3cr$t-9"}, path=("/e/bin",))
    values = "/srv/a/releases/1/.warp/env/server"
    literal, text = with_shared_environment(step, Layout("/srv/a"), "python3", values)
    envfile_py = source("envfile.py")
    assert literal.argv == ("python3", "-I", "-c", envfile_py, values, "/srv/a/shared/environment", "--", "gunicorn", "app")
    assert literal.env == {} and literal.path == ("/e/bin",) and literal.cwd == step.cwd
    assert "s3cr$t-9" not in command_line(literal)
    assert envfile.parse(text, values) == {"WARP_DATA_DIR": "/srv/a/shared/data", "TOKEN": "s3cr$t-9"}


def test_the_shared_environment_wins_and_no_value_is_run(tmp_path: Path) -> None:
    # As a sourcing shell gave it precedence, without ever running (or cutting) a value.
    marker = tmp_path / "ran"
    shared = tmp_path / "shared" / "environment"
    shared.parent.mkdir()
    shared.write_text(f"SECRET_KEY=k9$x2&(z)!=a\nTICKS=`touch {marker}`\nPORT=9999\n")
    show = "import json, os; print(json.dumps({n: os.environ[n] for n in ('SECRET_KEY', 'TICKS', 'PORT', 'OWN')}))"
    step = Step("show", (sys.executable, "-c", show), str(tmp_path), "show", env={"PORT": "8081", "OWN": "it's $HOME"})
    literal, text = with_shared_environment(step, Layout(str(tmp_path)), sys.executable, str(tmp_path / "values"))
    (tmp_path / "values").write_text(text)
    result = subprocess.run(["sh", "-c", command_line(literal)], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {
        "SECRET_KEY": "k9$x2&(z)!=a",
        "TICKS": f"`touch {marker}`",
        "PORT": "9999",
        "OWN": "it's $HOME",
    }
    assert not marker.exists()


def test_a_value_no_file_can_hold_is_a_config_error() -> None:
    step = Step("gunicorn", ("gunicorn",), "/r", "serve", env={"BAD": "two\nlines"})
    with pytest.raises(ConfigError, match="BAD"):
        with_shared_environment(step, Layout("/srv/a"), "python3", "/r/.warp/env/server")


def _django(root: Path, hook: bool = False) -> Path:
    (root / "manage.py").write_text("import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n")
    (root / "mysite").mkdir()
    (root / "mysite" / "__init__.py").write_text("")
    (root / "mysite" / "settings.py").write_text("STATIC_URL = 'static/'\nWSGI_APPLICATION = 'mysite.wsgi.application'\n")
    (root / "mysite" / "wsgi.py").write_text("application = None\n")
    (root / "requirements.txt").write_text("Django\n")
    if hook:
        hooks = root / ".warpdrive" / "action_hooks"
        hooks.mkdir(parents=True)
        (hooks / "migrate").write_text("#!/bin/sh\nexit 0\n")
        (hooks / "migrate").chmod(0o755)
    return root


def test_django_migrates_with_manage_py_in_the_release(tmp_path: Path) -> None:
    spec = detect_app(_django(tmp_path))
    step = migrate_step(spec, "/srv/a/releases/7", "/srv/a/shared/envs/e1")
    assert step is not None
    assert step.argv[-4:] == ("python", "manage.py", "migrate", "--noinput")
    assert step.cwd == "/srv/a/releases/7" and step.path == ("/srv/a/shared/envs/e1/bin",)
    assert step.env["WARP_ACTION"] == "migrate"


def test_a_migrate_hook_wins_over_manage_py(tmp_path: Path) -> None:
    spec = detect_app(_django(tmp_path, hook=True))
    step = migrate_step(spec, "/srv/a/releases/7", "/e")
    assert step is not None and step.argv[-1] == "./.warpdrive/action_hooks/migrate"


def test_a_plain_wsgi_app_has_nothing_to_migrate(tmp_path: Path) -> None:
    (tmp_path / "wsgi.py").write_text("application = None\n")
    assert migrate_step(detect_app(tmp_path), "/srv/a/releases/1", "/e") is None


def test_deploy_settings_merge_config_then_options() -> None:
    config = {"warp": {"server": "gunicorn", "deploy": {"path": "/srv/site", "keep": 3, "hosts": ["web1"]}}}
    settings = DeploySettings.resolve(config, keep=7, wheels=False, port=None)
    got = (settings.path, settings.keep, settings.hosts, settings.server, settings.port)
    assert got == ("/srv/site", 7, (HostTarget("web1"),), "gunicorn", 8080)
    # An option given as off wins over the config turning it on.
    on = {"warp": {"deploy": {"systemd": True, "migrate": True}}}
    assert DeploySettings.resolve(on, systemd=False, migrate=False).systemd is False
    # warp: deploy: may set a build setting for deploys alone.
    assert DeploySettings.resolve({"warp": {"server": "gunicorn", "deploy": {"server": "waitress"}}}).server == "waitress"
    with pytest.raises(ConfigError, match="not absolute"):
        DeploySettings.resolve(config, path="srv")
    with pytest.raises(ConfigError, match="keep 'all' is not a number"):
        DeploySettings.resolve({"warp": {"deploy": {"keep": "all"}}})
    with pytest.raises(ConfigError, match="drain 'soon' is not a number of seconds"):
        DeploySettings.resolve(None, drain="soon")


# -- what is shipped ---------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_outside_git_the_tree_is_shipped_without_envs_secrets_and_ignored_files(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "wsgi.py": "",
            "pkg/a.py": "",
            ".env": "SECRET=1",
            ".warp/x": "",
            ".hg/store/data": "",
            "media/up.png": "",
            "pkg/__pycache__/a.pyc": "",
            ".gitignore": "media/\n*.log\n",
            "debug.log": "",
        },
    )
    selection = source_files(tmp_path)
    assert selection.files == [".gitignore", "pkg/a.py", "wsgi.py"]
    assert "without" in selection.why


def test_in_git_the_tracked_files_are_shipped(tmp_path: Path) -> None:
    _tree(tmp_path, {"wsgi.py": "", "tracked.txt": "", "untracked.txt": "", ".env": "S=1"})
    as_git_repo(tmp_path, add=("wsgi.py", "tracked.txt", ".env"))
    selection = source_files(tmp_path)
    assert selection.files == ["tracked.txt", "wsgi.py"] and "git" in selection.why
    assert release_id(tmp_path, now=0).startswith("19700101T000000000Z-")


def test_release_ids_sort_by_time(tmp_path: Path) -> None:
    ids = [release_id(tmp_path, now=t) for t in (1_700_000_000.5, 1_700_000_000.75, 1_700_000_060.0)]
    assert ids == sorted(ids) and len(set(ids)) == 3


# -- wheels for hosts without an index -----------------------------------------


def test_wheels_cover_requirements_and_server_and_mod_wsgi_ships_as_source(tmp_path: Path) -> None:
    spec = detect_app(_django(tmp_path))
    args, source = wheel_requirements(spec)
    assert args == ("-r", str(tmp_path / "requirements.txt")) and source == ("mod_wsgi",)
    steps = download_steps(spec, "/w", {"python": f"{os.sys.version_info[0]}.{os.sys.version_info[1]}"})
    assert [s.name for s in steps] == ["download dependencies", "download build tools", "download server source"]
    assert "--only-binary=:all:" not in steps[0].argv
    assert steps[2].argv[-1] == "mod_wsgi" and "--no-binary" in steps[2].argv


def test_wheels_for_another_python_version_ask_for_its_binaries(tmp_path: Path) -> None:
    spec = detect_app(_django(tmp_path), server="gunicorn")
    steps = download_steps(spec, "/w", {"python": "3.9", "machine": "aarch64"})
    argv = steps[0].argv
    assert argv[argv.index("--python-version") + 1] == "3.9" and "--only-binary=:all:" in argv
    assert "manylinux2014_aarch64" in argv and "gunicorn" in argv and len(steps) == 2


def _facts(tmp_path: Path) -> Facts:
    return facts(uv=None, cache_home="/home/u/.cache", has_virtualenv=False)


def test_offline_install_reaches_every_install_step_and_not_the_env_key(tmp_path: Path) -> None:
    spec = detect_app(_django(tmp_path))
    offline = offline_install_env("/srv/a/shared/wheels")
    base = BuildOptions("/srv/a/releases/1", envs_dir="/srv/a/shared/envs")
    plan = plan_build(spec, _facts(tmp_path), BuildOptions(base.project, envs_dir=base.envs_dir, install_env=offline))
    installs = [s for s in plan.steps if s.name.startswith("install")]
    assert installs and all(s.env["PIP_NO_INDEX"] == "1" and s.env["PIP_FIND_LINKS"] == "/srv/a/shared/wheels" for s in installs)
    online = plan_build(spec, _facts(tmp_path), base)
    assert [s.name for s in online.steps] == [s.name for s in plan.steps]
    assert all("PIP_NO_INDEX" not in s.env for s in online.steps)
    # The same dependencies make the same environment, wherever the wheels came from.
    assert plan.notes == online.notes


# -- the agent's bookkeeping on the host (its functions, run in this process) --


def _agent(action: str, capsys: pytest.CaptureFixture[str], **request: Any) -> dict[str, Any]:
    deploy_agent.ACTIONS[action]({"action": action, **request})
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_lock_names_its_holder_and_can_be_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "app")
    assert _agent("lock", capsys, root=root, owner="alice@laptop", token="t1", wait=0)["locked"]
    assert oct(os.stat(os.path.join(root, "shared", "environment")).st_mode & 0o777) == "0o600"
    with pytest.raises(SystemExit) as held:
        _agent("lock", capsys, root=root, owner="bob@ci", token="t2", wait=0)
    assert held.value.code == 3
    assert "alice@laptop" in capsys.readouterr().err
    assert not _agent("unlock", capsys, root=root, token="t2")["unlocked"]  # only the holder unlocks
    assert _agent("lock", capsys, root=root, owner="bob@ci", token="t2", wait=0, **{"break": True})["locked"]
    assert _agent("unlock", capsys, root=root, token="t2")["unlocked"]


def _release(root: Path, rid: str, status: str, env: str = "e1") -> None:
    warp = root / "releases" / rid / ".warp"
    warp.mkdir(parents=True)
    (warp / "deploy.json").write_text(json.dumps({"status": status, "port": 8081}))
    (root / "shared" / "envs" / env).mkdir(parents=True, exist_ok=True)
    (warp / "current").symlink_to(root / "shared" / "envs" / env)


def test_switch_is_a_symlink_replaced_atomically_and_retires_the_old(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _release(tmp_path, "r1", "healthy")
    _release(tmp_path, "r2", "healthy")
    assert _agent("switch", capsys, root=str(tmp_path), release="r1")["previous"] is None
    assert _agent("switch", capsys, root=str(tmp_path), release="r2")["previous"] == "r1"
    assert os.readlink(tmp_path / "current") == "releases/r2"
    assert json.loads((tmp_path / "releases" / "r1" / ".warp" / "deploy.json").read_text())["status"] == "retired"


def test_switch_publishes_the_live_backend_to_the_front_and_lock_puts_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _release(tmp_path, "r1", "healthy")
    _release(tmp_path, "r2", "healthy")
    _agent("mark", capsys, root=str(tmp_path), release="r2", values={"port": 8082})
    upstream = tmp_path / "shared" / "upstream"
    assert _agent("switch", capsys, root=str(tmp_path), release="r1", upstream=str(upstream))["backend"] == "127.0.0.1:8081"
    assert upstream.read_text() == "127.0.0.1:8081"
    # Recorded: a later switch (a rollback) names no file and still moves the front.
    assert _agent("switch", capsys, root=str(tmp_path), release="r2")["backend"] == "127.0.0.1:8082"
    assert upstream.read_text() == "127.0.0.1:8082"
    # A deploy that died between the two writes of a switch: the next lock puts the front back on current's server.
    upstream.write_text("127.0.0.1:8081")
    answer = _agent("lock", capsys, root=str(tmp_path), owner="o", token="t")
    assert answer["resynced"] == "127.0.0.1:8081" and upstream.read_text() == "127.0.0.1:8082"


@pytest.mark.parametrize(
    "upstream", ["/etc/passwd", "/var/lib/warp-front/upstreams/../x", "/tmp/upstreams/other", "relative/upstreams/warp-a"]
)
def test_switch_refuses_an_upstream_file_that_is_not_a_fronts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], upstream: str
) -> None:
    _release(tmp_path, "r1", "healthy")
    with pytest.raises(SystemExit):
        _agent("switch", capsys, root=str(tmp_path), release="r1", upstream=upstream)
    assert not (tmp_path / "current").exists()


def test_prune_keeps_the_newest_good_releases_and_their_environments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    releases = [("r1", "retired", "old"), ("r2", "retired", "e1"), ("r3", "failed", "broken"), ("r4", "retired", "e1")]
    for rid, status, env in [*releases, ("r5", "live", "e2")]:
        _release(tmp_path, rid, status, env)
    (tmp_path / "current").symlink_to("releases/r5")
    answer = _agent("prune", capsys, root=str(tmp_path), keep=2)
    assert sorted(os.listdir(tmp_path / "releases")) == ["r4", "r5"]
    assert set(answer["removed"]) == {"r1", "r2", "r3"}
    assert sorted(os.listdir(tmp_path / "shared" / "envs")) == ["e1", "e2"]


def test_rsync_sends_exactly_the_release_files_with_the_connections_checks() -> None:
    ssh = ssh_command("deploy", 2222, ["/k/id"], ["/h/.ssh/known_hosts", "/extra hosts"], False, None)
    assert ssh.startswith("ssh -F /dev/null -o BatchMode=yes")
    assert "StrictHostKeyChecking=yes" in ssh and "'UserKnownHostsFile=/h/.ssh/known_hosts /extra hosts'" in ssh
    assert "-l deploy -p 2222 -i /k/id -o IdentitiesOnly=yes" in ssh
    assert "accept-new" in ssh_command(None, None, [], [], True, "/h/.ssh/config")
    step = rsync_step("/src/site/", "/tmp/list", "::1", "/srv/a/releases/2", ssh, "/srv/a/releases/1")
    assert step.argv[-2:] == ("/src/site/", "[::1]:/srv/a/releases/2/")
    assert "--files-from=/tmp/list" in step.argv and "--from0" in step.argv
    assert "--copy-dest=/srv/a/releases/1" in step.argv and "changed" in step.why
    assert "--copy-dest" not in " ".join(rsync_step("/s", "/l", "web1", "/r", ssh, None).argv)


def test_unknown_upload_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="upload method"):
        DeploySettings.resolve(None, upload="ftp")


# -- faults: what a deploy sends, and how it takes a signal ----------------------------


@pytest.mark.parametrize("to", ["../../x", "20250101T120000000Z/../..", "current", ""])
def test_rollback_to_is_refused_unless_it_looks_like_a_release_id(to: str) -> None:
    # Refused before any host is reached (this one would never answer).
    with pytest.raises(ConfigError, match="not a release id"):
        rollback([HostTarget("192.0.2.1", "root", 22)], DeploySettings.resolve(None), say=print, to=to)


def test_the_default_health_check_accepts_any_answer_below_500_and_a_given_path_2xx_or_3xx() -> None:
    default = HostDeploy(HostTarget("web1"), DeploySettings.resolve(None), print).health_settings()
    assert default["path"] == "/" and default["accept"] == "any-below-500"
    given = HostDeploy(HostTarget("web1"), DeploySettings.resolve(None, health="/ready/"), print).health_settings()
    assert given["path"] == "/ready/" and given["accept"] == "2xx-3xx"


def test_sigterm_during_a_deploy_is_an_interrupt_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM"):
        with signals_as_interrupts() as came:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert came.name == "SIGTERM" and signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(Interrupted):
        came.check()  # a step that swallowed the interrupt still stops the deploy


@pytest.mark.parametrize(
    "name, stop_signal", [("mod_wsgi", "SIGWINCH"), ("gunicorn", "SIGTERM"), ("uwsgi", "SIGHUP"), ("waitress", "SIGINT")]
)
def test_each_server_is_stopped_with_the_signal_that_lets_its_requests_finish(name: str, stop_signal: str) -> None:
    assert server(name).stop_signal == stop_signal
    assert all(s.stop_timeout > 0 and hasattr(signal, s.stop_signal) for s in SERVERS.values())
