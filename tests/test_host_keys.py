"""Host keys (pure tier): known_hosts files are read as ssh reads them, never rewritten, and accepted keys appended."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fabric import Config, Connection
from paramiko import ECDSAKey, HostKeys, PKey

from warptasks.errors import ConfigError
from warptasks.remote import known_hosts
from warptasks.remote.hosts import HostTarget, check_host_keys, connect, open_checked
from warptasks.remote.known_hosts import HostCertificate, RevokedHostKey, UnknownHostKey
from warptasks.settings import DeploySettings


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the files a test writes: a HOME of its own, and no system-wide known_hosts."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(known_hosts, "SYSTEM_FILE", str(tmp_path / "no-system-file"))


def _key() -> PKey:
    return ECDSAKey.generate()


def _line(name: str, key: PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}"


def _policy(conn: Any) -> Any:
    return conn.client._policy  # what paramiko calls for a host with no listed key


def _known(conn: Any, name: str) -> Any:
    return conn.client.get_host_keys().lookup(name)


def test_comments_markers_hashed_names_and_patterns_are_read_and_the_file_left_alone(tmp_path: Path) -> None:
    web, other, ca, revoked, star = _key(), _key(), _key(), _key(), _key()
    text = "\n".join(
        [
            "# our hosts",
            "",
            _line(HostKeys.hash_host("[web1]:2222"), web),
            "@cert-authority *.corp.example " + _line("", ca).strip(),
            "@revoked * " + _line("", revoked).strip(),
            _line("*.example.com,!bad.example.com", star),
            _line("[other]:2222", other) + "  a comment",
            "this line is damaged",
            "",
        ]
    )
    known = tmp_path / "known_hosts"
    known.write_text(text)
    conn = Connection("web1", port=2222)
    check_host_keys(conn, str(known), accept_unknown=False)
    assert _known(conn, "[web1]:2222")[web.get_name()] == web
    app = Connection("app.example.com")
    check_host_keys(app, str(known), accept_unknown=False)
    assert _known(app, "app.example.com")[star.get_name()] == star
    bad = Connection("bad.example.com")
    check_host_keys(bad, str(known), accept_unknown=False)
    assert _known(bad, "bad.example.com") is None
    assert known.read_text() == text


def test_an_unknown_host_is_refused_with_its_fingerprint_and_how_to_add_it(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    conn = Connection("web1", port=2222)
    check_host_keys(conn, str(known), accept_unknown=False)
    key = _key()
    with pytest.raises(UnknownHostKey) as refused:
        _policy(conn).missing_host_key(conn.client, "[web1]:2222", key)
    error = _opened(refused.value)
    assert "[web1]:2222 is not in known_hosts" in error.message and key.fingerprint in error.message
    assert "ssh-keyscan -p 2222 web1" in error.hint and known.read_text() == ""


def test_a_revoked_key_is_refused_even_when_listed_and_unknown_hosts_are_accepted(tmp_path: Path) -> None:
    key = _key()
    known = tmp_path / "known_hosts"
    known.write_text(f"{_line('web1', key)}\n@revoked web1,web2 {_line('', key).strip()}\n")
    conn = Connection("web1")
    check_host_keys(conn, str(known), accept_unknown=True)
    assert _known(conn, "web1") is None  # paramiko never compares against a revoked key: it asks the policy
    with pytest.raises(RevokedHostKey) as refused:
        _policy(conn).missing_host_key(conn.client, "web1", key)
    assert "@revoked" in _opened(refused.value).message
    assert known.read_text().count("\n") == 2


def test_a_host_vouched_for_by_a_certificate_authority_only_is_refused_saying_why(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.corp.example {_line('', _key()).strip()}\n")
    conn = Connection("web.corp.example")
    check_host_keys(conn, str(known), accept_unknown=True)
    with pytest.raises(HostCertificate) as refused:
        _policy(conn).missing_host_key(conn.client, "web.corp.example", _key())
    error = _opened(refused.value)
    assert "host certificates are not supported" in error.message
    assert "list the host key itself" in error.hint


def test_hosts_accepted_at_once_are_appended_one_line_each_and_the_rest_kept(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    kept = f"# keep this comment\n{_line(HostKeys.hash_host('old'), _key())}\n@revoked * {_line('', _key()).strip()}"
    known.write_text(kept)  # no final newline: the first appended line must not join it
    hosts = [(f"web{i}", _key()) for i in range(16)]
    start = threading.Barrier(len(hosts))

    def accept(name: str, key: PKey) -> None:
        conn = Connection(name)
        check_host_keys(conn, str(known), accept_unknown=True)
        start.wait()
        _policy(conn).missing_host_key(conn.client, name, key)
        _policy(conn).missing_host_key(conn.client, name, key)  # twice: recorded once

    threads = [threading.Thread(target=accept, args=host) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = known.read_text()
    assert text.startswith(kept + "\n")
    added = text[len(kept) + 1 :].splitlines()
    assert sorted(added) == sorted(_line(name, key) for name, key in hosts)
    again = Connection("web3")
    check_host_keys(again, str(known), accept_unknown=False)
    assert _known(again, "web3") is not None


def test_without_a_given_file_an_accepted_key_goes_to_the_users_known_hosts(tmp_path: Path) -> None:
    conn = Connection("web1", port=2200)
    check_host_keys(conn, None, accept_unknown=True)
    key = _key()
    _policy(conn).missing_host_key(conn.client, "[web1]:2200", key)
    path = tmp_path / "home" / ".ssh" / "known_hosts"
    assert path.read_text() == _line("[web1]:2200", key) + "\n"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700" and oct(path.stat().st_mode & 0o777) == "0o600"


def test_every_proxyjump_hop_checks_its_host_key(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host web1\n    ProxyJump jump2\n\nHost jump2\n    ProxyJump jump1\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    settings = DeploySettings.resolve(None, known_hosts=str(known))
    conn = connect(HostTarget("web1"), settings, Config(runtime_ssh_path=str(ssh_config)))
    hops = []
    hop = conn
    while isinstance(hop, Connection):
        hops.append(hop)
        hop = hop.gateway
    assert [h.host for h in hops] == ["web1", "jump2", "jump1"]
    assert all(isinstance(_policy(h), known_hosts.CheckedPolicy) for h in hops)


def _opened(refusal: Exception) -> ConfigError:
    """What open_checked makes of a connection that fails with ``refusal``."""

    class Refused:
        def open(self) -> None:
            raise refusal

    with pytest.raises(ConfigError) as error:
        open_checked(Refused())
    return error.value


def test_rsyncs_ssh_appends_accepted_keys_to_the_same_file(tmp_path: Path) -> None:
    from warptasks.remote.upload import _ssh_like

    settings = DeploySettings.resolve(None, known_hosts=str(tmp_path / "deploy_hosts"), accept_unknown_host=True)
    ssh = _ssh_like(Connection("web1"), settings)
    # ssh's accept-new writes to the first UserKnownHostsFile: the given one, as the SSH connection does.
    assert f"UserKnownHostsFile={tmp_path}/deploy_hosts {tmp_path}/home/.ssh/known_hosts" in ssh
    assert "StrictHostKeyChecking=accept-new" in ssh
