"""What lands on a real host: a release holds no secret files, and its modes are never wider than here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cases import WSGI, as_git_repo, write_tree
from warptasks.detect import detect_app
from warptasks.remote.deploy import _pack
from warptasks.remote.host import HostDeploy
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

pytestmark = pytest.mark.remote

PATH = "/srv/files"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
SHIPPED = {
    "wsgi.py": "644",
    "private.py": "600",
    "shared.py": "644",
    "run.sh": "755",
    "pkg": "755",
    "pkg/a.py": "644",
    "id_ed25519.pub": "644",
}


def _project(root: Path) -> Path:
    write_tree(
        root,
        {
            "wsgi.py": WSGI,
            "private.py": "",
            "shared.py": "",
            "run.sh": "#!/bin/sh\n",
            "pkg/a.py": "",
            "id_ed25519": KEY,
            "id_ed25519.pub": "ssh-ed25519 AAAA",
            ".envrc": "export TOKEN=x",
            ".aws/credentials": "[default]",
            "tls/site.key": KEY,
            "deploy/key": KEY,
        },
    )
    as_git_repo(root)  # the secrets are tracked: what git tracks is shipped, secrets excepted
    for name, mode in {"private.py": 0o600, "shared.py": 0o666, "run.sh": 0o775, "pkg": 0o777}.items():
        (root / name).chmod(mode)
    return root


@pytest.mark.parametrize("upload", ["rsync", "sftp"])
def test_a_shipped_release_holds_no_secrets_and_no_wider_modes(ssh_hosts, tmp_path: Path, upload: str) -> None:
    (host,) = ssh_hosts(1, index=False)
    project = _project(tmp_path / "site")
    settings = DeploySettings.resolve(None, path=PATH, identity=host.key_filename, known_hosts=host.known_hosts, upload=upload)
    said: list[str] = []
    release, source, scratch = _pack(detect_app(str(project)), settings, said.append)
    deploy = HostDeploy(HostTarget(host.address, host.user, host.port), settings, said.append)
    try:
        deploy.connect(None)
        deploy.lock("test")
        deploy.upload(release.id, source, None)
    finally:
        deploy.unlock()
        deploy.close()
        shutil.rmtree(scratch, ignore_errors=True)
    assert {"rsync": "(rsync)", "sftp": "over SFTP"}[upload] in " ".join(said)
    code, listing = host.exec(f"find {PATH}/releases/{release.id} -mindepth 1 -not -path '*/.warp*' -printf '%m %P\\n'")
    assert code == 0, listing
    modes = {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in listing.splitlines()}
    assert modes == SHIPPED
    withheld = sorted(line.split()[2] for line in said if line.startswith("not shipped:"))
    assert withheld == [".aws/credentials", ".envrc", "deploy/key", "id_ed25519", "tls/site.key"]
