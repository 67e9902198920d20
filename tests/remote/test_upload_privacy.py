"""The secrets file (``--env-file``) travels over SFTP where no other account of the host can open it.

Written inside ``shared/.upload`` (0700) and renamed into place: another account watching ``shared/`` never opens
it, not even in the moment before its mode is set; a staging folder that is a link is refused.
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
