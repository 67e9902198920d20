"""Hardening of detection and of the facts it is given: what another account or a hostile tree can plant."""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.cases import MANAGE, WSGI, django_tree, facts, write_tree
from warptasks.detect.app import detect_app
from warptasks.errors import ConfigError, NoAppFound
from warptasks.plan import Plan
from warptasks.plan.build import BuildOptions, plan_build
from warptasks.plan.start import StartOptions, plan_start
from warptasks.scripts import probe

OTHER = 65534  # nobody: tests run as root, so chown to another account works


def _env(envs: Path, name: str, owner: int | None = None, mode: int = 0o755) -> Path:
    folder = envs / name
    (folder / "bin").mkdir(parents=True)
    (folder / "warp-env.json").write_text("{}")
    folder.chmod(mode)
    if owner is not None:
        os.chown(folder, owner, owner)
        os.chown(folder / "warp-env.json", owner, owner)
    return folder


def test_only_own_unwritable_environments_are_complete(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown to another account")
    envs = tmp_path / "envs"
    _env(envs, "mine")
    _env(envs, "planted", owner=OTHER)
    group_writable = _env(envs, "group-writable", mode=0o775)
    os.chown(group_writable, 0, OTHER)  # another account's group may write
    _env(envs, "own-group-writable", mode=0o775)  # a umask of 002: only this account's group may write
    record_only = _env(envs, "foreign-record")
    os.chown(record_only / "warp-env.json", OTHER, OTHER)
    real = _env(tmp_path, "elsewhere")
    (envs / "linked").symlink_to(real)
    linked_record = _env(envs, "linked-record")
    (linked_record / "warp-env.json").unlink()
    (linked_record / "warp-env.json").symlink_to(real / "warp-env.json")
    writable_record = _env(envs, "writable-record")
    (writable_record / "warp-env.json").chmod(0o666)
    assert probe._envs(str(envs)) == ["mine", "own-group-writable"]
    foreign = dict(probe._foreign_envs(str(envs)))
    assert foreign == {
        "planted": "it belongs to nobody (uid 65534)",
        "group-writable": "other accounts may write to it",
        "linked": "it is a link",
    }


def test_an_environment_of_root_is_complete_for_any_account(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    envs = tmp_path / "envs"
    _env(envs, "root-made")
    assert probe._envs(str(envs)) == ["root-made"]


DEEP_SUM = "x = " + "1+" * 200000 + "1\n"
DEEP_ATTR = "x = a" + ".b" * 300000 + "\n"
HUGE = "# padding\n" * 300000 + "app = 1\n"  # 3 MB, past the 2 MiB read cap


@pytest.mark.parametrize("text", [DEEP_SUM, DEEP_ATTR, HUGE], ids=["deep-sum", "deep-attribute", "over-2MiB"])
@pytest.mark.parametrize("name", ["app.py", "main.py"])
def test_an_entry_file_python_cannot_parse_is_run_as_a_script_not_a_traceback(tmp_path: Path, name: str, text: str) -> None:
    write_tree(tmp_path, {name: text})
    spec = detect_app(tmp_path)
    assert (spec.kind, spec.target) == ("script", name)
    assert "cannot parse it" in spec.why


@pytest.mark.parametrize("text", [DEEP_SUM, DEEP_ATTR, HUGE], ids=["deep-sum", "deep-attribute", "over-2MiB"])
@pytest.mark.parametrize(
    "files",
    [
        pytest.param({"wsgi.py": "{}"}, id="wsgi.py"),
        pytest.param({"asgi.py": "{}"}, id="asgi.py"),
        pytest.param({"gunicorn.conf.py": "{}", "wsgi.py": WSGI}, id="gunicorn.conf.py"),
        pytest.param({"setup.py": "{}", "wsgi.py": WSGI}, id="setup.py"),
        pytest.param({"app.py": "from factory import make\napp = make()\n", "factory.py": "{}"}, id="factory-module"),
    ],
)
def test_other_files_python_cannot_parse_are_unreadable_not_a_traceback(tmp_path: Path, files: dict[str, str], text: str) -> None:
    write_tree(tmp_path, {name: content.format() if content != "{}" else text for name, content in files.items()})
    spec = detect_app(tmp_path)  # no RecursionError, no MemoryError
    assert spec.kind in ("wsgi", "asgi", "script")


@pytest.mark.parametrize("text", [DEEP_SUM, HUGE], ids=["deep-sum", "over-2MiB"])
def test_a_django_settings_module_python_cannot_parse_is_read_as_empty(tmp_path: Path, text: str) -> None:
    write_tree(tmp_path, {**django_tree(), "mysite/settings.py": text})
    spec = detect_app(tmp_path)
    assert spec.kind == "django"


def test_a_huge_manage_py_is_a_clear_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {**django_tree(manage=MANAGE + "#\n" * 1_200_000)})
    with pytest.raises(NoAppFound, match="manage.py cannot be read: it is larger than 2 MiB"):
        detect_app(tmp_path)


SPECIAL = [
    pytest.param("fifo", id="fifo"),
    pytest.param(
        "/proc/kmsg", id="proc-kmsg", marks=pytest.mark.skipif(not os.access("/proc/kmsg", os.R_OK), reason="no /proc/kmsg")
    ),
]


def _special(tmp_path: Path, target: str) -> str:
    if target == "fifo":
        fifo = tmp_path / "outside.fifo"
        os.mkfifo(fifo)
        return str(fifo)
    return target


@pytest.mark.parametrize("target", SPECIAL)
@pytest.mark.parametrize(
    "name, others",
    [
        ("app.py", {}),
        ("wsgi.py", {}),
        ("gunicorn.conf.py", {"wsgi.py": WSGI}),
        ("setup.py", {"wsgi.py": WSGI}),
        ("setup.cfg", {"wsgi.py": WSGI}),
        ("factory.py", {"app.py": "from factory import make\napp = make()\n"}),
        ("mysite/settings.py", django_tree()),
    ],
)
def test_an_entry_file_linked_to_a_blocking_special_file_never_blocks(
    tmp_path: Path, target: str, name: str, others: dict[str, str]
) -> None:
    project = tmp_path / "project"
    others = {k: v for k, v in others.items() if k != name}
    write_tree(project, others)
    (project / name).parent.mkdir(parents=True, exist_ok=True)
    (project / name).symlink_to(_special(tmp_path, target))
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(_detect_or_error(project)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), f"detection blocked reading {name} -> {target}"
    assert result and not isinstance(result[0], BaseException) or isinstance(result[0], (ConfigError, NoAppFound))


def _detect_or_error(root: Path) -> object:
    try:
        return detect_app(root)
    except Exception as error:  # noqa: BLE001 - the test checks which
        return error


def test_a_gunicorn_conf_py_linked_outside_the_project_is_refused_like_app_config(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text('wsgi_app = "wsgi:application"\n')
    project = write_tree(tmp_path / "project", {"wsgi.py": WSGI})
    (project / "gunicorn.conf.py").symlink_to(outside)
    with pytest.raises(ConfigError, match="gunicorn.conf.py is a link to a file outside the project"):
        detect_app(project)
    (project / "gunicorn.conf.py").unlink()
    (project / "conf").mkdir()
    (project / "conf" / "gunicorn.py").symlink_to(outside)
    write_tree(project, {".s2i/environment": "APP_CONFIG=conf/gunicorn.py\n"})
    with pytest.raises(ConfigError, match="APP_CONFIG='conf/gunicorn.py'"):
        detect_app(project)


def test_a_gunicorn_conf_py_linked_inside_the_project_is_read(tmp_path: Path) -> None:
    project = write_tree(tmp_path / "project", {"wsgi.py": WSGI, "conf/gunicorn.py": 'wsgi_app = "wsgi:application"\n'})
    (project / "gunicorn.conf.py").symlink_to("conf/gunicorn.py")
    spec = detect_app(project)
    assert spec.target == "wsgi:application"


def test_a_build_whose_environment_folder_is_another_accounts_is_refused_naming_it(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": WSGI, "requirements.txt": "flask\n"}))
    target = facts()
    env = _planned_env(plan_build(spec, target, BuildOptions(project="/srv/app")))
    planted = replace(target, foreign_envs=((env.rsplit("/", 1)[1], "it belongs to nobody (uid 65534)"),))
    with pytest.raises(ConfigError) as error:
        plan_build(spec, planted, BuildOptions(project="/srv/app"))
    assert env in error.value.message and "nobody (uid 65534)" in error.value.message
    assert f"remove {env}" in error.value.hint
    # Another account's folder beside it (another key) is no one's business here.
    beside = replace(target, foreign_envs=(("py3.11-other", "it belongs to nobody (uid 65534)"),))
    assert _planned_env(plan_build(spec, beside, BuildOptions(project="/srv/app"))) == env


def _planned_env(plan: Plan) -> str:
    return next(s for s in plan.steps if s.name == "virtualenv").argv[-1]


PROJECT_FILES = [".s2i/environment", ".warpdrive/environment", ".warpdrive/server_type", ".warpdrive/action_hooks/pre-build"]


@pytest.mark.parametrize("rel", PROJECT_FILES)
@pytest.mark.skipif(not os.access("/proc/kmsg", os.R_OK), reason="no readable /proc/kmsg")
def test_a_project_file_linked_to_a_blocking_file_is_a_clear_error_not_a_hang(tmp_path: Path, rel: str) -> None:
    # /proc/kmsg is a "regular file" (is_file() is True) whose read blocks until the kernel logs something.
    project = write_tree(tmp_path / "project", {"wsgi.py": WSGI})
    (project / rel).parent.mkdir(parents=True, exist_ok=True)
    (project / rel).symlink_to("/proc/kmsg")
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(_detect_or_error(project)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), f"detection blocked reading {rel}"
    # An environment file is refused sooner: a link out of the project is never read (its lines would be shown).
    refusals = (f"{rel} cannot be read", f"{rel} is a link to a file outside the project")
    assert isinstance(result[0], ConfigError) and any(r in result[0].message for r in refusals), result


def test_an_app_config_detection_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    files = {"wsgi.py": WSGI, "conf/gunicorn.py": HUGE, ".s2i/environment": "APP_CONFIG=conf/gunicorn.py\n"}
    with pytest.raises(ConfigError, match="APP_CONFIG='conf/gunicorn.py' .* cannot be read: it is larger than 2 MiB"):
        detect_app(write_tree(tmp_path, files))


def test_an_envs_folder_others_may_write_or_own_is_named_with_its_fix(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown to another account")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    assert probe._unsafe_envs(str(shared)) is None
    assert probe._unsafe_envs(str(tmp_path / "not-yet")) is None  # the build makes it, this account's
    shared.chmod(0o775)  # a umask of 002: only this account's group may write
    assert probe._unsafe_envs(str(shared)) is None
    os.chown(shared, 0, OTHER)  # another account's group may write
    problem, fix = probe._unsafe_envs(str(shared))
    assert f"{shared} may be written by other accounts (mode 775)" in problem and f"chmod go-w {shared}" in fix
    os.chown(shared, 0, 0)
    shared.chmod(0o1777)  # as /tmp: anyone may plant a key
    problem, fix = probe._unsafe_envs(str(shared))
    assert "may be written by other accounts" in problem and f"chmod go-w {shared}" in fix
    shared.chmod(0o755)
    os.chown(shared, OTHER, OTHER)
    problem, fix = probe._unsafe_envs(str(shared))
    assert f"{shared} belongs to nobody (uid 65534)" in problem and f"chown root {shared}" in fix


def test_an_unsafe_envs_folder_is_refused_before_a_build_or_start_is_planned(tmp_path: Path) -> None:
    spec = detect_app(write_tree(tmp_path, {"wsgi.py": WSGI}))
    unsafe = ("the environments folder /srv/envs may be written by other accounts (mode 777)", "chmod go-w /srv/envs")
    target = replace(facts(), unsafe_envs=unsafe)
    with pytest.raises(ConfigError) as error:
        plan_build(spec, target, BuildOptions(project="/srv/app", envs_dir="/srv/envs"))
    assert "/srv/envs" in error.value.message and error.value.hint == "chmod go-w /srv/envs"
    with pytest.raises(ConfigError, match="/srv/envs may be written"):
        plan_start(spec, target, StartOptions(project="/srv/app"))


@pytest.mark.parametrize("argument", ["-" * 100_000 + "1", "not " * 50_000 + "1", "+" * 10_000 + "1"])
def test_a_factory_call_nested_past_the_parser_is_a_clear_error(tmp_path: Path, argument: str) -> None:
    """gunicorn's wsgi_app = "module:factory(...)": arguments nested past what the parser takes are refused as any
    other bad value, not a MemoryError or RecursionError out of detection."""
    files = {"wsgi.py": WSGI, "gunicorn.conf.py": f"wsgi_app = 'wsgi:make({argument})'\n"}
    with pytest.raises(ConfigError, match="wsgi_app"):
        detect_app(write_tree(tmp_path, files))


def _acl(path: Path, *entries: tuple[int, int, int]) -> None:
    """Set ``path``'s access ACL (the kernel's xattr form, as setfacl writes it); skip where ACLs are not supported."""
    anyone = 0xFFFFFFFF
    base = [(0x01, 7, anyone), (0x04, 5, anyone), (0x10, 7, anyone), (0x20, 5, anyone)]  # user::rwx group::r-x mask other
    data = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in sorted([*base, *entries]))
    try:
        os.setxattr(path, "system.posix_acl_access", data)
    except OSError as error:
        pytest.skip(f"no POSIX ACLs here: {error}")


def test_an_envs_folder_an_acl_lets_another_account_write_is_unsafe(tmp_path: Path) -> None:
    """setfacl -m u:nobody:rwx (or a default ACL inherited from the folder above) shows as group-writable by this
    account's own group: the ACL names who may write, and it is another account."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chown(shared, os.geteuid(), os.getegid())
    (shared / "py3.11-0123456789abcdef").mkdir(mode=0o755)
    _acl(shared, (0x02, 7, OTHER))  # user:nobody:rwx
    _acl(shared / "py3.11-0123456789abcdef", (0x08, 7, OTHER))  # group:nogroup:rwx
    problem, fix = probe._unsafe_envs(str(shared))
    assert f"{shared} may be written by other accounts" in problem and f"chmod go-w {shared}" in fix
    assert probe._foreign_envs(str(shared)) == [["py3.11-0123456789abcdef", "other accounts may write to it"]]
    assert not probe._trusted(str(shared), True)
    _acl(shared, (0x02, 5, OTHER))  # user:nobody:r-x: it may read, not write
    assert probe._unsafe_envs(str(shared)) is None


def test_an_envs_folder_writable_by_a_primary_group_others_share_is_unsafe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group-writable folder of this account's group is safe only when the group is this account's alone: a primary
    group such as "users", with a umask of 002, lets every member replace an environment."""
    import grp

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    os.chown(shared, os.geteuid(), os.getegid())
    assert probe._unsafe_envs(str(shared)) is None  # this account's own group
    real = grp.getgrgid

    def with_mallory(gid: int) -> grp.struct_group:
        entry = real(gid)
        return grp.struct_group((entry.gr_name, entry.gr_passwd, entry.gr_gid, [*entry.gr_mem, "mallory"]))

    monkeypatch.setattr(grp, "getgrgid", with_mallory)
    problem, fix = probe._unsafe_envs(str(shared))
    assert f"{shared} may be written by other accounts (mode 775)" in problem and f"chmod go-w {shared}" in fix


def test_an_envs_folder_in_a_folder_others_may_write_is_unsafe(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)  # not sticky: anyone may rename what is in it
    envs = parent / "envs"
    envs.mkdir(mode=0o755)
    problem, fix = probe._unsafe_envs(str(envs))
    assert f"the folder {parent}, above the environments folder {envs}, may be written by other accounts (mode 777)" in problem
    assert f"chmod go-w {parent}" in fix
    assert probe._unsafe_envs(str(envs / "not-yet")) is not None  # not made yet: the folders above still count


def test_an_envs_folder_in_a_sticky_folder_others_may_write_is_safe(tmp_path: Path) -> None:
    """As /tmp: others may make entries there, but only an entry's owner may rename or remove it."""
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o1777)
    envs = parent / "envs"
    envs.mkdir(mode=0o755)
    assert probe._unsafe_envs(str(envs)) is None
    assert probe._unsafe_envs(str(tmp_path / "app" / ".warp" / "envs")) is None  # pytest's own folders pass


def test_a_folder_above_the_envs_folder_of_another_account_is_unsafe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = tmp_path / "theirs" / "envs"
    envs.mkdir(parents=True, mode=0o755)
    real_lstat = os.lstat

    def theirs(path: Any, *args: Any, **kwargs: Any) -> Any:
        info = real_lstat(path, *args, **kwargs)
        if str(path) == str(envs.parent):
            return os.stat_result((info.st_mode, *info[1:4], 4321, *info[5:]))
        return info

    monkeypatch.setattr(os, "lstat", theirs)
    problem, fix = probe._unsafe_envs(str(envs))
    assert f"the folder {envs.parent}, above the environments folder {envs}, belongs to" in problem
    assert "uid 4321" in problem and "build as that account" in fix


@pytest.mark.skipif(os.geteuid() != 0, reason="hands folders to other accounts (the suite runs as root)")
def test_folders_of_the_projects_own_owner_are_trusted_as_an_s2i_image_run_as_any_uid_has_them(tmp_path: Path) -> None:
    """OpenShift runs an S2I image as a random uid in group 0: the project and its environments belong to 1001 (here
    4321), group 0, group-writable. Its owner's code is what runs, so its folders are trusted; a third account's not."""
    project = tmp_path / "src"
    envs = project / ".warp" / "envs"
    envs.mkdir(parents=True)
    for folder in (project, project / ".warp", envs):
        os.chown(folder, 4321, 0)
        folder.chmod(0o775)
    trusted = probe._trusted_owners(str(project))
    assert trusted == (4321,)
    assert probe._unsafe_envs(str(envs), trusted) is None
    problem, _ = probe._unsafe_envs(str(envs))  # with no project to trust: another account's folders
    assert "belongs to uid 4321" in problem or "(uid 4321)" in problem
    os.chown(project / ".warp", 4322, 0)  # a third account's folder above the environments
    problem, fix = probe._unsafe_envs(str(envs), trusted)
    assert f"the folder {project / '.warp'}, above the environments folder {envs}, belongs to" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="hands folders to other accounts (the suite runs as root)")
def test_a_project_reached_through_another_accounts_folder_trusts_only_the_real_projects_owner(tmp_path: Path) -> None:
    """The project's owner is trusted because its code runs anyway: the owner of the real folder, never the account
    whose folder the path to it goes through, which could swap the environments for its own."""
    real = tmp_path / "app"
    (real / ".warp" / "envs").mkdir(parents=True)  # root's
    theirs = tmp_path / "home"
    theirs.mkdir()
    os.chown(theirs, 4321, 4321)
    os.symlink(real, theirs / "app")
    assert probe._trusted_owners(str(theirs / "app")) == (0,)
    problem, _ = probe._unsafe_envs(str(theirs / "app" / ".warp" / "envs"), probe._trusted_owners(str(theirs / "app")))
    assert f"the folder {theirs}, above the environments folder" in problem and "uid 4321" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="hands folders to other accounts (the suite runs as root)")
def test_a_start_refuses_an_envs_folder_of_another_account_before_running_its_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``warp start`` reads its facts by running the built environment's own Python: that account could have swapped
    it (the very thing the refusal is for), so the refusal comes before it runs, not after."""
    from invoke import Context

    from warptasks.run.local import start_plan
    from warptasks.settings import Settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing kept: the probe would run
    project = write_tree(tmp_path / "src", {"wsgi.py": WSGI})
    envs = project / ".warp" / "envs"
    (envs / "k" / "bin").mkdir(parents=True)
    ran = tmp_path / "ran"
    python = envs / "k" / "bin" / "python"
    python.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")  # another account's "Python"
    python.chmod(0o755)
    os.symlink(envs / "k", project / ".warp" / "current")
    os.chown(envs, 4321, 4321)
    with pytest.raises(ConfigError) as refused:
        start_plan(Context(), Settings.resolve(None, project=str(project)))
    assert f"the environments folder {envs} belongs to uid 4321" in str(refused.value)
    assert not ran.exists(), "the starting account ran the Python another account could have put there"


@pytest.mark.skipif(os.geteuid() != 0, reason="hands folders to other accounts (the suite runs as root)")
def test_a_start_refuses_an_environment_folder_of_another_account_beside_envs_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """envs_dir outside the project: the folder holding ``current`` (``.warp``) is not above the envs folder, yet who
    may write it points ``current``, whose Python a start runs, anywhere."""
    from invoke import Context

    from warptasks.run.local import start_plan
    from warptasks.settings import Settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    project = write_tree(tmp_path / "src", {"wsgi.py": WSGI})
    (tmp_path / "envs").mkdir()  # root's, safe
    theirs = tmp_path / "theirs" / "bin"
    theirs.mkdir(parents=True)
    ran = tmp_path / "ran"
    (theirs / "python").write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    (theirs / "python").chmod(0o755)
    (project / ".warp").mkdir()
    os.symlink(theirs.parent, project / ".warp" / "current")
    os.chown(project / ".warp", 4321, 4321)
    with pytest.raises(ConfigError) as refused:
        start_plan(Context(), Settings.resolve(None, project=str(project), envs_dir=str(tmp_path / "envs")))
    assert f"the folder {project / '.warp'}" in str(refused.value) and "uid 4321" in str(refused.value)
    assert not ran.exists(), "the starting account ran the Python another account could have put there"
