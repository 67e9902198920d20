"""The app's own account on a host deployed as root: its name from the deploy path, and who runs what as it."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from tests.cases import django_tree, write_tree
from warptasks.detect import detect_app
from warptasks.remote.account import VALID, account_mark, app_account
from warptasks.remote.console import recorded_command
from warptasks.remote.host import HostDeploy
from warptasks.remote.hosts import HostTarget
from warptasks.remote.layout import with_shared_environment
from warptasks.scripts import agent as agent_module
from warptasks.scripts import source
from warptasks.settings import DeploySettings

AGENT_FILE = str(files("warptasks.scripts").joinpath("agent.py"))
RUN_AS = source("run_as.py")


@pytest.mark.parametrize(
    "path, name",
    [
        ("/srv/shop", "warp-shop-"),
        ("/srv/shop/", "warp-shop-"),  # the same path: the same account
        ("/srv/My Shop.example.org", "warp-my-shop-example-o-"),  # lower case, runs of others one -, cut to 17
        ("/srv/apps/blog_2", "warp-blog-2-"),
        ("/srv/---", "warp-app-"),  # nothing left of the name: "app"
        ("/", "warp-app-"),
        ("/srv/ünïcode", "warp-n-code-"),
        ("/srv/" + "x" * 200, "warp-" + "x" * 17 + "-"),
        ("/srv/9lives", "warp-9lives-"),  # the prefix puts a letter first
    ],
)
def test_the_account_is_named_after_the_deploy_paths_last_part_and_a_hash_of_the_whole_path(path: str, name: str) -> None:
    account = app_account(path)
    assert account.startswith(name) and len(account) == len(name) + 8, account
    assert VALID.match(account) and len(account) <= 32
    assert account == app_account(path)  # deterministic: every deploy of the path finds the same account


def test_two_paths_with_the_same_last_part_get_two_accounts_and_marks() -> None:
    one, other = "/srv/a/shop", "/srv/b/shop"
    assert app_account(one) != app_account(other) and account_mark(one) != account_mark(other)
    assert app_account("/srv/shop/") == app_account("/srv/shop") and account_mark("/srv/shop/") == account_mark("/srv/shop")


def test_the_mark_is_what_the_agent_accepts_and_fits_a_gecos_field() -> None:
    mark = account_mark("/srv/shop, the: one")
    assert agent_module.ACCOUNT_MARK.match(mark) and not set(mark) & set(",:\n")
    assert agent_module.ACCOUNT_NAME.pattern == VALID.pattern


def _agent(root: Path, **request: Any) -> subprocess.CompletedProcess[str]:
    payload = json.dumps({"action": "account", "root": str(root), **request})
    return subprocess.run([sys.executable, AGENT_FILE, payload], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent makes accounts as root only")
def test_an_existing_account_warptasks_did_not_make_is_refused_naming_the_ways_on(tmp_path: Path) -> None:
    # nobody stands for a foreign account that has the derived name: its comment is not warptasks' mark.
    locked = subprocess.run(
        [sys.executable, AGENT_FILE, json.dumps({"action": "lock", "root": str(tmp_path), "owner": "test", "token": "t"})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert locked.returncode == 0, locked
    result = _agent(tmp_path, name="nobody", mark=account_mark(str(tmp_path)), token="t")
    assert result.returncode != 0
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    comment = pwd.getpwnam("nobody").pw_gecos.split(",")[0]
    assert f"the account nobody exists on this host and warptasks did not make it for the deploy path {tmp_path}" in error
    assert repr(comment) in error and "--user" in error and "usermod --comment" in error
    assert (tmp_path / "shared" / "data").stat().st_uid == 0  # nothing given to it


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent makes accounts as root only")
def test_an_account_is_made_only_under_the_deploy_lock(tmp_path: Path) -> None:
    for token in ({}, {"token": "not-the-holder"}):
        result = _agent(tmp_path, name="nobody", mark=account_mark(str(tmp_path)), **token)
        assert result.returncode != 0 and "lock" in result.stdout, result
    assert not (tmp_path / "shared").exists()


@pytest.mark.parametrize("name", ["Shop", "1shop", "shop;rm", "x" * 33, "", "root:x"])
def test_a_name_that_is_no_account_name_is_refused_before_anything(tmp_path: Path, name: str) -> None:
    result = _agent(tmp_path, name=name, mark=account_mark(str(tmp_path)))
    assert result.returncode != 0 and "account needs a name" in result.stdout


def _host(tmp_path: Path, euid: int, **settings: Any) -> tuple[HostDeploy, list[dict[str, Any]], Any]:
    files = django_tree() | {".warpdrive/action_hooks/verify": "#!/bin/sh\ntrue\n"}
    spec = detect_app(str(write_tree(tmp_path, files)))
    path = "/srv/shop"
    deploy = HostDeploy(HostTarget("web1"), DeploySettings.resolve(None, path=path, **settings), print, release="R1")
    deploy.env, deploy.info = "/srv/shop/e", {"euid": euid}
    asked: list[dict[str, Any]] = []
    name = app_account(path)

    def agent(action: str, /, **request: Any) -> dict[str, Any]:
        asked.append({"action": action, **request})
        return {"user": name, "group": name, "made": True, "reowned": 0}

    def literal(step: Any, name: str) -> Any:
        return with_shared_environment(step, deploy.layout, "python3", f"/srv/shop/releases/R1/.warp/env/{name}")[0]

    deploy.agent = agent  # type: ignore[method-assign]
    deploy._literal = literal  # type: ignore[method-assign]
    return deploy, asked, spec


def _run_as(argv: list[str]) -> list[str] | None:
    """The user and group run_as.py is given in ``argv``, or None when it is not there."""
    if RUN_AS not in argv:
        return None
    at = argv.index(RUN_AS)
    return argv[at + 1 : at + 3]


def test_on_a_root_deploy_the_commands_run_as_the_apps_account_and_as_root_only_when_asked(tmp_path: Path) -> None:
    deploy, asked, spec = _host(tmp_path, 0)
    commands = deploy._commands(spec, 8081)
    name = app_account("/srv/shop")
    mark = account_mark("/srv/shop")
    assert asked == [{"action": "account", "name": name, "mark": mark, "token": deploy.token}]  # once, under the lock
    for action in ("exec", "shell", "migrate", "verify"):
        assert _run_as(commands[action]["argv"]) == [name, name], action
        assert _run_as(commands[action]["root_argv"]) is None, action
    # The shared environment is read (as root) before the account is taken: envfile.py comes first.
    argv = commands["exec"]["argv"]
    assert argv.index(source("envfile.py")) < argv.index(RUN_AS)
    record = {"id": "R1", "commands": commands}
    assert f" {name} {name} -- " in recorded_command(record, "exec", ("id",))
    assert RUN_AS not in recorded_command(record, "exec", ("id",), as_root=True)


@pytest.mark.parametrize("euid, settings", [(1000, {}), (0, {"user": "www-data", "group": "www-data"})])
def test_a_deploy_not_as_root_or_with_user_runs_the_commands_as_the_ssh_account(
    tmp_path: Path, euid: int, settings: dict[str, Any]
) -> None:
    deploy, asked, spec = _host(tmp_path, euid, **settings)
    commands = deploy._commands(spec, 8081)
    assert asked == [] and deploy.app_account() is None
    assert all(_run_as(c["argv"]) is None and "root_argv" not in c for c in commands.values())


def test_the_migration_and_the_release_command_run_as_the_apps_account(tmp_path: Path) -> None:
    deploy, _asked, _spec = _host(tmp_path, 0)
    name = app_account("/srv/shop")
    run: list[Any] = []
    deploy.session.run = lambda step, **_: run.append(step)  # type: ignore[method-assign]
    spec = detect_app(str(write_tree(tmp_path / "p", django_tree() | {"Procfile": "release: python manage.py check\n"})))
    deploy.migrate(spec)
    deploy.release_command(spec)
    assert [step.name for step in run] == ["migrate", "release"]
    assert all(_run_as(list(step.argv)) == [name, name] for step in run)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
def test_files_the_app_wrote_as_its_old_account_become_the_new_ones_never_through_a_link(tmp_path: Path) -> None:
    old, new, other = 65534, 4242, 4343  # nobody (www-data, say), the app's account, someone else
    outside = tmp_path / "outside"
    outside.write_text("someone else's")
    os.chown(outside, old, old)
    root = tmp_path / "srv"
    (root / "shared" / "uploads").mkdir(parents=True)
    os.symlink(outside, root / "shared" / "link")
    os.chown(root / "shared" / "link", old, old, follow_symlinks=False)
    os.link(outside, root / "shared" / "hardlink")  # its other name is outside the deploy path
    for name, owner in (("uploads", old), ("uploads/1.jpg", old), ("uploads/theirs", other)):
        path = root / "shared" / name
        if not path.exists():
            path.write_text("x")
        os.chown(path, owner, owner)
    assert agent_module._reown(str(root), {old}, {old}, new, new) == 3  # uploads, 1.jpg, the link itself
    owners = {p.relative_to(root).as_posix(): (p.lstat().st_uid, p.lstat().st_gid) for p in root.rglob("*")}
    assert owners["shared/uploads"] == owners["shared/uploads/1.jpg"] == owners["shared/link"] == (new, new)
    assert owners["shared/uploads/theirs"] == (other, other) and owners["shared/hardlink"] == (old, old)
    assert outside.stat().st_uid == old  # never reached through the link


@pytest.mark.parametrize("action", [("exec", "--as-root", "--", "id"), ("shell", "--as-root"), ("migrate", "--as-root")])
def test_as_root_without_a_host_is_refused_naming_the_fix(tmp_path: Path, action: tuple[str, ...]) -> None:
    (tmp_path / "wsgi.py").write_text("def application(environ, start_response):\n    pass\n")
    run = "import sys; from warptasks.cli import main; sys.argv = ['warp', *sys.argv[1:]]; main()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", run, *action], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode != 0 and "--as-root is for a command on a host" in result.stderr and "give --host" in result.stderr


def test_warp_deploy_takes_user_and_group_for_the_old_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import warptasks.remote.deploy as remote_deploy
    from warptasks.tasks import remote as deploy_task

    seen: list[DeploySettings] = []
    monkeypatch.setattr(remote_deploy, "deploy", lambda targets, project, settings, **_: seen.append(settings) or [])
    monkeypatch.setattr(deploy_task, "_fabric_config", lambda c: None)
    context = type("C", (), {"config": None})()
    deploy_task.deploy.body(context, host=["web1"], project=str(tmp_path), user="www-data", group="www-data")
    assert (seen[0].user, seen[0].group) == ("www-data", "www-data")


def _swap_once(monkeypatch: pytest.MonkeyPatch, folder: Path, to: Path) -> None:
    """The app winning the race against the hand-over walk: just before the walk's first chown, ``folder`` (which the
    walk is inside) becomes a link to ``to``."""
    swapped: list[bool] = []
    for name in ("chown", "lchown", "fchown"):
        real = getattr(os, name)

        def chown(*args: Any, real: Any = real, **kwargs: Any) -> Any:
            if not swapped:
                swapped.append(True)
                os.rename(folder, folder.with_name(folder.name + ".was"))
                os.symlink(to, folder)
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, chown)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
@pytest.mark.parametrize("walk", ["data", "previous"])
def test_a_folder_swapped_for_a_link_during_the_hand_over_walk_gives_nothing_outside_away(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, walk: str
) -> None:
    # shared/data is the app's: its live server (or, before, its www-data one) writes there while the next deploy walks
    # it as root, so it can swap a folder the walk is in for a link to anywhere on the host.
    old, new = 65534, 4242
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "shadow").write_text("root's")
    os.chown(outside / "shadow", 0 if walk == "data" else old, 0)  # root's own, or a file www-data wrote elsewhere
    root = tmp_path / "srv"
    inner = root / "shared" / "data" / "d"
    inner.mkdir(parents=True)
    os.chown(inner, new, new)
    (inner / "shadow").write_text("the app's")
    os.chown(inner / "shadow", old, old)
    _swap_once(monkeypatch, inner, outside)
    if walk == "data":
        agent_module._reown(str(root / "shared" / "data"), None, None, new, new)
    else:
        agent_module._reown(str(root), {old}, {old}, new, new)
    monkeypatch.undo()
    assert (outside / "shadow").stat().st_uid != new, "a file outside the deploy path was given to the app"
    assert (inner.with_name("d.was") / "shadow").stat().st_uid == new  # the one the walk found is still handed over


def _live_on_old_account(root: Path, old: pwd.struct_passwd) -> Path:
    """A locked deploy path whose live release R0 runs as ``old``, which owns its uploads folder; the uploads."""
    locked = subprocess.run(
        [sys.executable, AGENT_FILE, json.dumps({"action": "lock", "root": str(root), "owner": "test", "token": "t"})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert locked.returncode == 0, locked
    # The live release, recorded as running as the old shared account, which owns its uploads folder (made by hand).
    for release in ("R0", "R1"):
        (root / "releases" / release / ".warp").mkdir(parents=True)
        (root / "releases" / release / ".warp" / "deploy.json").write_text(json.dumps({"status": "live", "account": old.pw_name}))
    os.symlink(root / "releases" / "R0", root / "current")
    uploads = root / "shared" / "uploads"
    uploads.mkdir(mode=0o755)
    (uploads / "1.jpg").write_text("photo")
    for path in (uploads, uploads / "1.jpg"):
        os.chown(path, old.pw_uid, old.pw_gid)
    return uploads


def _writable_by(path: Path, account: pwd.struct_passwd) -> bool:
    st = path.stat()
    return bool((st.st_uid == account.pw_uid and st.st_mode & 0o200) or (st.st_gid == account.pw_gid and st.st_mode & 0o020))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
def test_a_deploy_that_does_not_switch_gives_the_live_servers_files_back_to_its_account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = pwd.getpwnam("nobody")
    root = tmp_path / "srv"
    uploads = _live_on_old_account(root, old)
    # The app's own account exists already, marked (as a deploy made it): the account action only hands over.
    name, mark = app_account(str(root)), account_mark(str(root))
    made = pwd.struct_passwd((name, "x", 4242, 4242, mark, "/", "/usr/sbin/nologin"))
    real_getpwnam = pwd.getpwnam
    monkeypatch.setattr(pwd, "getpwnam", lambda n: made if n == name else real_getpwnam(n))
    import grp

    real_getgrgid = grp.getgrgid
    monkeypatch.setattr(grp, "getgrgid", lambda g: grp.struct_group((name, "x", 4242, [])) if g == 4242 else real_getgrgid(g))
    agent_module.account({"root": str(root), "name": name, "mark": mark, "token": "t"})
    monkeypatch.undo()
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["previous"] == "nobody"
    assert uploads.stat().st_uid == 4242  # handed over, for the new release's migration and server
    record = root / "shared" / agent_module.HANDOVER
    assert record.stat().st_uid == 0 and record.stat().st_mode & 0o777 == 0o600
    # The migration (as the new account) wrote a file; then the deploy failed before its switch: its cleanup.
    (uploads / "2.jpg").write_text("made by the migration")
    os.chown(uploads / "2.jpg", 4242, 4242)
    agent_module.handback({"root": str(root), "token": "t"})
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["handed_back"] >= 3
    for path in (uploads, uploads / "1.jpg", uploads / "2.jpg"):
        assert (path.stat().st_uid, path.stat().st_gid) == (old.pw_uid, old.pw_gid), path
    assert _writable_by(uploads, old), "the live server (nobody) cannot write its uploads after the failed deploy"
    assert not record.exists()


def _pending_hand_over(root: Path, live: str) -> Path:
    """What a deploy that died after the hand-over leaves: the record, and the uploads the new account's (4242)."""
    old = pwd.getpwnam("nobody")
    uploads = _live_on_old_account(root, old)
    for path in (uploads, uploads / "1.jpg"):
        os.chown(path, 4242, 4242)
    handover = {"live": live, "from": old.pw_uid, "from_gid": old.pw_gid, "to": 4242, "to_gid": 4242}
    (root / "shared" / agent_module.HANDOVER).write_text(json.dumps(handover))
    # The dead deploy's lock is let go (its lease lapsed, or it was released without its cleanup reaching the host).
    assert (
        subprocess.run(
            [sys.executable, AGENT_FILE, json.dumps({"action": "unlock", "root": str(root), "token": "t"})], timeout=60
        ).returncode
        == 0
    )
    return uploads


def _lock(root: Path) -> dict[str, Any]:
    request = json.dumps({"action": "lock", "root": str(root), "owner": "next", "token": "u"})
    done = subprocess.run([sys.executable, AGENT_FILE, request], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    return dict(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
def test_the_next_lock_gives_back_what_a_deploy_that_died_before_its_switch_handed_over(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    uploads = _pending_hand_over(root, live="R0")
    assert _lock(root)["handed_back"] == 2
    old = pwd.getpwnam("nobody")
    assert uploads.stat().st_uid == (uploads / "1.jpg").stat().st_uid == old.pw_uid and _writable_by(uploads, old)
    assert not (root / "shared" / agent_module.HANDOVER).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
def test_a_hand_over_whose_deploy_switched_stays_and_its_record_goes(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    uploads = _pending_hand_over(root, live="R0")
    os.unlink(root / "current")  # current moved on (the switch happened): the new account's files stay its own
    os.symlink(root / "releases" / "R1", root / "current")
    assert _lock(root)["handed_back"] is None
    assert uploads.stat().st_uid == 4242 and not (root / "shared" / agent_module.HANDOVER).exists()
    # And a switch itself drops the record: the hand-over is for good.
    (root / "shared" / agent_module.HANDOVER).write_text(
        json.dumps({"live": "R1", "from": 1, "from_gid": 1, "to": 2, "to_gid": 2})
    )
    switched = subprocess.run(
        [sys.executable, AGENT_FILE, json.dumps({"action": "switch", "root": str(root), "release": "R1", "token": "u"})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert switched.returncode == 0, switched
    assert not (root / "shared" / agent_module.HANDOVER).exists()


@pytest.mark.parametrize("switched", [False, True])
def test_the_cleanup_of_a_deploy_that_did_not_switch_asks_for_the_files_back(tmp_path: Path, switched: bool) -> None:
    deploy, asked, _spec = _host(tmp_path, 0)
    deploy.app_account()
    deploy.session.conn = object()
    deploy.session.reopen_if_lost = lambda: None  # type: ignore[method-assign]
    deploy.error, deploy.switched, deploy.previous = "the health check failed", switched, "R0" if switched else ""
    deploy.clean_up()
    actions = [a["action"] for a in asked]
    assert ("handback" in actions) is not switched, actions
    if not switched:  # after its server is stopped, under the lock
        assert actions.index("handback") > actions.index("stop") and asked[-1]["token"] == deploy.token


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
@pytest.mark.parametrize("kind", ["link", "fifo"])
@pytest.mark.parametrize("walk", ["data", "handback"])
def test_a_link_or_pipe_swapped_for_a_hard_link_after_the_walk_looked_gives_nothing_outside_away(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, walk: str
) -> None:
    # The app (its live server, or a process its failed release left) writes shared/data while root walks it. A link
    # or a pipe is changed by name, not through a descriptor: swapped, between the walk's look and its change, for a
    # hard link to a file elsewhere (any file, on a host without fs.protected_hardlinks), that file would be given.
    old, new = 65534, 4242
    outside = tmp_path / "shadow"
    outside.write_text("root's")
    root = tmp_path / "srv"
    data = root / "shared" / "data"
    data.mkdir(parents=True)
    name = data / "bait"
    if kind == "link":
        os.symlink("anywhere", name)
    else:
        os.mkfifo(name)
    # data: the walk gives the app anything there not its own; handback: the app's own things go to www-data.
    os.chown(name, new if walk == "handback" else old, new if walk == "handback" else old, follow_symlinks=False)
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        found = real_stat(path, *args, **kwargs)
        if path == "bait" and not kwargs.get("follow_symlinks", True):
            os.unlink(name)
            os.link(outside, name)  # the app wins the race: the name is now another file's
        return found

    monkeypatch.setattr(os, "stat", stat)
    if walk == "data":
        agent_module._reown(str(data), None, None, new, new)
    else:
        agent_module._reown(str(root), {new}, {new}, old, old)
    monkeypatch.undo()
    assert (outside.stat().st_uid, outside.stat().st_gid) == (0, 0), "a file outside the deploy path changed hands"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another account takes root")
@pytest.mark.parametrize(
    "record",
    [
        {"from": 0, "from_gid": 0, "to": 4242, "to_gid": 4242},  # the app's files to root
        {"from": 65534, "from_gid": 65534, "to": 0, "to_gid": 0},  # root's files to www-data
        {"from": 4242, "from_gid": 4242, "to": 4242, "to_gid": 4242},  # the same account: nothing to undo
    ],
)
def test_a_hand_over_record_naming_root_or_one_account_twice_gives_nothing(tmp_path: Path, record: dict[str, int]) -> None:
    root = tmp_path / "srv"
    (root / "shared" / "data").mkdir(parents=True)
    mine, roots = root / "shared" / "data" / "app.db", root / "shared" / "environment"
    mine.write_text("the app's")
    os.chown(mine, 4242, 4242)
    roots.write_text("root's")
    (root / "shared" / agent_module.HANDOVER).write_text(json.dumps(dict(record, live=None)))
    assert agent_module._hand_back(str(root)) is None
    assert (mine.stat().st_uid, roots.stat().st_uid) == (4242, 0)
    assert not (root / "shared" / agent_module.HANDOVER).exists()
