"""``--env-file`` reaches the host through a folder only the deploy's account can enter (pure tier, a fake SFTP).

A file SFTP creates is 0644 until its mode is set, and whoever opens it in that moment keeps reading it: the
secrets are written inside ``shared/.upload`` (0700, a real folder of the deploy's account, checked before a byte
is written), then renamed into place.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from warptasks.remote.host import HostDeploy
from warptasks.remote.hosts import HostTarget
from warptasks.remote.session import DeployFailed
from warptasks.settings import DeploySettings

ROOT = "/srv/app"
STAGING = f"{ROOT}/shared/.upload"
MINE, OTHER = 1000, 1001


@dataclass
class Attrs:
    st_mode: int
    st_uid: int = MINE


@dataclass
class FakeSftp:
    """An SFTP server's files, and every call made, in order; a new file is 0644 until chmod'ed, as on a host."""

    files: dict[str, Attrs] = field(default_factory=lambda: {f"{ROOT}/shared": Attrs(stat.S_IFDIR | 0o755)})
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    written: dict[str, bytes] = field(default_factory=dict)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self.calls.append(("mkdir", path, mode))
        if path in self.files:
            raise OSError(f"{path} exists")
        self.files[path] = Attrs(stat.S_IFDIR | mode)

    def lstat(self, path: str) -> Attrs:
        self.calls.append(("lstat", path))
        return self.files[path]

    def chmod(self, path: str, mode: int) -> None:
        self.calls.append(("chmod", path, mode))
        self.files[path].st_mode = stat.S_IFMT(self.files[path].st_mode) | mode

    def open(self, path: str, how: str) -> FakeFile:
        self.calls.append(("open", path, how))
        self.files[path] = Attrs(stat.S_IFREG | 0o644)
        return FakeFile(self, path)

    def remove(self, path: str) -> None:
        self.calls.append(("remove", path))
        del self.files[path]

    def posix_rename(self, old: str, new: str) -> None:
        self.calls.append(("rename", old, new))
        self.files[new] = self.files.pop(old)
        self.written[new] = self.written.pop(old)


@dataclass
class FakeFile:
    sftp: FakeSftp
    path: str

    def __enter__(self) -> FakeFile:
        return self

    def __exit__(self, *_: Any) -> None:
        self.sftp.calls.append(("close", self.path))

    def chmod(self, mode: int) -> None:
        self.sftp.chmod(self.path, mode)

    def stat(self) -> Attrs:
        return self.sftp.files[self.path]

    def write(self, data: bytes) -> None:
        folder = self.sftp.files[self.path.rsplit("/", 1)[0]]
        # Who could open the file while it is written: nobody but its owner, whatever the file's own mode.
        self.sftp.calls.append(("write", self.path, stat.S_IMODE(folder.st_mode), stat.S_IMODE(self.stat().st_mode)))
        self.sftp.written[self.path] = data


def _upload(tmp_path: Path, sftp: FakeSftp, on_host: tuple[str, ...] = (), said: list[str] | None = None) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("DB_PASSWORD=hunter2\n")
    settings = DeploySettings.resolve(None, path=ROOT, env_file=str(secrets))
    deploy = HostDeploy(HostTarget("host.example"), settings, (said if said is not None else []).append)
    deploy.session.sftp = lambda: sftp  # type: ignore[method-assign]
    # The names the host's file has (the agent's config list): an upload that drops some says so.
    deploy.agent = lambda action, **request: {"names": list(on_host)}  # type: ignore[method-assign]
    deploy._upload_env_file()


def test_an_upload_that_drops_names_the_hosts_file_has_names_them_never_their_values(tmp_path: Path) -> None:
    said: list[str] = []
    _upload(tmp_path, FakeSftp(), on_host=("DB_PASSWORD", "SENTRY_DSN", "DEBUG"), said=said)
    [warning] = said
    assert "drops DEBUG, SENTRY_DSN" in warning and "warp config set" in warning
    said.clear()
    _upload(tmp_path, FakeSftp(), on_host=("DB_PASSWORD",), said=said)
    assert said == []


def test_the_secrets_are_written_in_a_private_folder_and_renamed_into_place(tmp_path: Path) -> None:
    sftp = FakeSftp()
    _upload(tmp_path, sftp)
    writes = [c for c in sftp.calls if c[0] == "write"]
    assert writes == [("write", f"{STAGING}/environment", 0o700, 0o600)]
    assert sftp.calls.index(("mkdir", STAGING, 0o700)) < sftp.calls.index(("open", f"{STAGING}/environment", "wb"))
    assert sftp.calls[-1] == ("rename", f"{STAGING}/environment", f"{ROOT}/shared/environment")
    assert sftp.written == {f"{ROOT}/shared/environment": b"DB_PASSWORD=hunter2\n"}
    assert stat.S_IMODE(sftp.files[f"{ROOT}/shared/environment"].st_mode) == 0o600
    # Never in shared/ itself, where any account may look.
    assert not [c for c in sftp.calls if c[0] == "open" and not c[1].startswith(STAGING + "/")]


def test_a_staging_folder_left_open_by_an_earlier_deploy_is_closed_first(tmp_path: Path) -> None:
    sftp = FakeSftp()
    sftp.files[STAGING] = Attrs(stat.S_IFDIR | 0o755)
    _upload(tmp_path, sftp)
    assert [c for c in sftp.calls if c[0] == "write"] == [("write", f"{STAGING}/environment", 0o700, 0o600)]


@pytest.mark.parametrize(
    "found",
    [
        pytest.param(Attrs(stat.S_IFLNK | 0o777), id="a-link"),
        pytest.param(Attrs(stat.S_IFREG | 0o600), id="a-file"),
        pytest.param(Attrs(stat.S_IFDIR | 0o700, st_uid=OTHER), id="another-accounts-folder"),
    ],
)
def test_a_staging_folder_that_is_not_a_private_folder_of_ours_is_refused(tmp_path: Path, found: Attrs) -> None:
    sftp = FakeSftp()
    sftp.files[STAGING] = found
    with pytest.raises(DeployFailed, match=r"shared/\.upload"):
        _upload(tmp_path, sftp)
    assert not [c for c in sftp.calls if c[0] in ("write", "rename")]
    assert f"{ROOT}/shared/environment" not in sftp.files


def test_a_broken_env_file_fails_the_upload_naming_the_line_never_quoting_it(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("A=1\nhunter2 is the password\n")
    settings = DeploySettings.resolve(None, path=ROOT, env_file=str(secrets))
    deploy = HostDeploy(HostTarget("host.example"), settings, lambda _: None)
    sftp = FakeSftp()
    deploy.session.sftp = lambda: sftp  # type: ignore[method-assign]
    with pytest.raises(DeployFailed, match="line 2 is not NAME=VALUE") as failed:
        deploy._upload_env_file()
    assert "hunter2" not in str(failed.value) and not sftp.written
