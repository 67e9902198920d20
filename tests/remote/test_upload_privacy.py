"""What travels over SFTP is never readable by another account of the host, not even for a moment.

The secrets file (``--env-file``) and the release's archive (the SFTP upload) are written where only the deploy's
account can enter: another account watching the folders never opens either, and the archive is gone once unpacked
or once its upload failed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cases import WSGI, write_tree
from warptasks.detect import detect_app
from warptasks.errors import StepFailed
from warptasks.plan import Step
from warptasks.remote.deploy import _pack
from warptasks.remote.host import HostDeploy
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

pytestmark = pytest.mark.remote

PATH = "/srv/private"
SECRET = "DB_PASSWORD=hunter2-secret\n"
# Run on the host as nobody: open every file of shared/ (and its staging folder) as soon as it appears, and say so.
WATCH = f"""
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
seen = set()
while time.monotonic() < end:
    for folder in ("{PATH}/shared", "{PATH}/shared/.upload"):
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        for name in names + ["environment.tmp", "environment"]:
            path = os.path.join(folder, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            if os.path.isfile(path) and path not in seen:
                seen.add(path)
                print("opened", path, oct(os.fstat(fd).st_mode & 0o777), flush=True)
            os.close(fd)
print("done", flush=True)
"""


def _project(root: Path) -> Path:
    write_tree(root, {"wsgi.py": WSGI, "private_settings.py": "SECRET = 'only-the-owner'\n"})
    (root / "private_settings.py").chmod(0o600)
    return root


@contextmanager
def _deploy(host: Any, project: Path, **settings: Any) -> Iterator[tuple[HostDeploy, Any, list[str]]]:
    """A HostDeploy connected and holding the lock, with the packed release; unlocked and closed after."""
    options = DeploySettings.resolve(None, path=PATH, identity=host.key_filename, known_hosts=host.known_hosts, **settings)
    said: list[str] = []
    release, source, scratch = _pack(detect_app(str(project)), options, said.append)
    deploy = HostDeploy(HostTarget(host.address, host.user, host.port), options, said.append)
    try:
        deploy.connect(None)
        deploy.lock("test")
        yield deploy, (release, source), said
    finally:
        deploy.unlock()
        deploy.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _mode(host: Any, path: str) -> str:
    code, output = host.exec(f"stat -c '%a %U %F' {path}")
    return output.strip() if code == 0 else "missing"


def test_the_secrets_file_is_never_open_to_another_account(ssh_hosts: Any, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1, index=False)
    secrets = tmp_path / "secrets.env"
    secrets.write_text(SECRET)
    with _deploy(host, _project(tmp_path / "site"), env_file=str(secrets)) as (deploy, (release, source), _):
        deploy.upload(release.id, source, None)
        watcher = host.container.exec_run(["python3", "-c", WATCH, "20"], user="nobody", stream=True)
        time.sleep(1)
        for _ in range(40):
            deploy._upload_env_file()
        seen = b"".join(watcher.output).decode()
    assert seen.strip().endswith("done") and "opened" not in seen, seen
    assert _mode(host, f"{PATH}/shared/environment") == "600 root regular file"
    assert _mode(host, f"{PATH}/shared/.upload") == "700 root directory"
    assert _mode(host, f"{PATH}/shared/environment.tmp") == "missing"
    assert host.exec(f"cat {PATH}/shared/environment")[1] == SECRET


def test_a_staging_folder_that_is_a_link_is_refused(ssh_hosts: Any, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1, index=False)
    secrets = tmp_path / "secrets.env"
    secrets.write_text(SECRET)
    with _deploy(host, _project(tmp_path / "site"), env_file=str(secrets)) as (deploy, _, _):
        assert (
            host.exec(f"mkdir -p /tmp/elsewhere && chmod 777 /tmp/elsewhere && ln -s /tmp/elsewhere {PATH}/shared/.upload")[0]
            == 0
        )
        with pytest.raises(Exception, match="not a folder"):
            deploy._upload_env_file()
    assert host.exec("ls -A /tmp/elsewhere")[1].strip() == ""
    assert SECRET not in host.exec(f"cat {PATH}/shared/environment")[1]  # the template the lock made stays


def test_the_archive_is_private_while_it_is_there_and_gone_after(ssh_hosts: Any, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1, index=False)
    project = _project(tmp_path / "site")
    with _deploy(host, project, upload="sftp") as (deploy, (release, source), said):
        folder = f"{PATH}/releases/{release.id}/.warp"
        seen: dict[str, str] = {}
        run = deploy.session.run

        def watching(step: Step) -> Any:
            if step.name == "unpack":
                seen.update(folder=_mode(host, folder), archive=_mode(host, f"{folder}/source.tar.gz"))
            return run(step)

        deploy.session.run = watching  # type: ignore[method-assign]
        deploy.upload(release.id, source, None)
    assert "over SFTP" in " ".join(said)
    assert seen["folder"] == "700 root directory" and seen["archive"].endswith("root regular file"), seen
    assert _mode(host, f"{folder}/source.tar.gz") == "missing"
    # Unpacked, the release's .warp is open again for the servers that read it (as www-data, say).
    assert _mode(host, folder) == "755 root directory"
    assert _mode(host, f"{PATH}/releases/{release.id}/private_settings.py") == "600 root regular file"


def test_an_archive_whose_unpacking_failed_is_removed(ssh_hosts: Any, tmp_path: Path) -> None:
    (host,) = ssh_hosts(1, index=False)
    with _deploy(host, _project(tmp_path / "site"), upload="sftp") as (deploy, (release, source), _):
        run = deploy.session.run

        def failing(step: Step) -> Any:
            if step.name == "unpack":
                raise StepFailed("step 'unpack' failed (exit 2)", output="tar: broken")
            return run(step)

        deploy.session.run = failing  # type: ignore[method-assign]
        with pytest.raises(StepFailed):
            deploy.upload(release.id, source, None)
    folder = f"{PATH}/releases/{release.id}/.warp"
    assert _mode(host, f"{folder}/source.tar.gz") == "missing"
    assert _mode(host, folder) == "700 root directory"
