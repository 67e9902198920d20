"""A host reached through a ProxyJump hop: the hop's host key is checked like the host's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabric import Config

from warptasks.errors import ConfigError
from warptasks.remote.hosts import HostTarget, connect, open_checked
from warptasks.settings import DeploySettings

pytestmark = pytest.mark.remote


def _open(ssh_config: Path, known_hosts: Path, accept: bool = False) -> str:
    settings = DeploySettings.resolve(None, known_hosts=str(known_hosts), accept_unknown_host=accept)
    conn = connect(HostTarget("web"), settings, Config(runtime_ssh_path=str(ssh_config)))
    try:
        open_checked(conn)
        return str(conn.run("hostname", hide=True, in_stream=False).stdout.strip())
    finally:
        conn.close()


def test_a_hop_with_an_unknown_key_is_refused_and_a_known_one_lets_the_deploy_through(
    ssh_hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two addresses: fabric ignores a ProxyJump whose host is the target's own (ports aside).
    (jump,) = ssh_hosts(1, index=False)
    (web,) = ssh_hosts(1, network="bridge", index=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no known_hosts but the ones written here
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host web\n    HostName {web.address}\n    Port {web.port}\n    User root\n"
        f"    ProxyJump root@{jump.address}:{jump.port}\n\n"
        f"Host *\n    IdentityFile {web.key_filename}\n"
    )
    web_only = tmp_path / "web_only"
    web_only.write_text("\n".join(web.host_keys) + "\n")
    with pytest.raises(ConfigError, match=rf"\[{jump.address}\]:{jump.port} is not in known_hosts"):
        _open(ssh_config, web_only)
    jump_only = tmp_path / "jump_only"
    jump_only.write_text("\n".join(jump.host_keys) + "\n")
    with pytest.raises(ConfigError, match=rf"{web.address} is not in known_hosts"):
        _open(ssh_config, jump_only)
    both = tmp_path / "both"
    both.write_text("\n".join([*jump.host_keys, *web.host_keys]) + "\n")
    assert _open(ssh_config, both) == web.name
    # Accepted, the hop's key is appended to the given file, which keeps what it had.
    assert _open(ssh_config, web_only, accept=True) == web.name
    assert web_only.read_text() == "\n".join([*web.host_keys, *jump.host_keys]) + "\n"
