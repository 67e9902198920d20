"""Facts.parse: the probe's JSON in, typed facts out; a wrong shape is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cases import PROBE_FACTS, probe_output
from warptasks.errors import WarpError
from warptasks.facts import BadFacts, BuildState, CgroupLimits, Facts, StaticFiles
from warptasks.scripts import source


def run_probe(request: dict[str, Any]) -> object:
    result = subprocess.run(
        [sys.executable, "-c", source("probe.py"), json.dumps(request)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_what_the_probe_prints_here_parses(tmp_path: Path) -> None:
    env_dir = tmp_path / ".warp"
    (env_dir / "envs" / "k1").mkdir(parents=True)
    (env_dir / "envs" / "k1" / "warp-env.json").write_text("{}")
    (env_dir / "current").symlink_to(env_dir / "envs" / "k1")
    (env_dir / "state.json").write_text(json.dumps({"env_key": "k1", "server": "gunicorn", "warptasks": "0"}))
    (env_dir / "static.json").write_text(json.dumps({"static_url": "/static/", "static_root": "/srv/s"}))
    request = {"env_dir": str(env_dir), "envs_dir": str(env_dir / "envs"), "project": str(tmp_path), "ignore": [".warp"]}
    found = Facts.parse(run_probe(request))
    assert found.python.version == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert found.complete_envs == ("k1",)
    assert found.current == str(env_dir / "envs" / "k1")
    assert found.state == BuildState(env_key="k1", server="gunicorn")
    assert found.static == StaticFiles("/static/", "/srv/s")
    assert found.source_digest and found.cc is None and found.package_manager is None


def test_a_probe_without_a_request_parses() -> None:
    found = Facts.parse(run_probe({}))
    assert found.state is None and found.static is None and found.current is None and found.source_digest is None


def test_the_fixture_reads_as_attributes() -> None:
    found = Facts.parse(probe_output())
    assert found.python.executable == PROBE_FACTS["python"]["executable"]
    assert found.worker_accounts == (("www-data", "www-data"), ("nobody", "nogroup"))
    assert found.cgroup == CgroupLimits()


def test_cgroup_limits_keep_the_probes_order() -> None:
    raw = {
        "v2": {"cpu.max": ["50000 100000", "max 100000"], "memory.max": ["max"]},
        "v1": {"cpu": [["-1", "100000"], ["200000", "100000"]], "limit_in_bytes": ["268435456"]},
    }
    limits = Facts.parse(probe_output(cgroup=raw)).cgroup
    assert limits.cpu_max == ("50000 100000", "max 100000")
    assert limits.memory_max == ("max",)
    assert limits.cfs == (("-1", "100000"), ("200000", "100000"))
    assert limits.limit_in_bytes == ("268435456",)


@pytest.mark.parametrize(
    ("state", "static"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({}, {}, id="empty"),
        pytest.param([1], "x", id="not-objects"),
    ],
)
def test_files_from_another_build_that_say_nothing_are_none(state: object, static: object) -> None:
    found = Facts.parse(probe_output(state=state, static=static))
    assert found.state is None
    assert found.static is None or found.static == StaticFiles()


def test_an_older_state_file_reads_with_what_it_has() -> None:
    found = Facts.parse(probe_output(state={"server": "mod_wsgi", "unknown": 1, "env": 3}))
    assert found.state == BuildState(server="mod_wsgi")


def _without(key: str) -> dict[str, Any]:
    data = probe_output()
    del data[key]
    return data


# probe output -> words the error names
BAD_CASES = [
    pytest.param([], "the output should be an object", id="not-an-object"),
    pytest.param(_without("python"), "'python' is missing", id="missing-python"),
    pytest.param(_without("cgroup"), "'cgroup' is missing", id="missing-cgroup"),
    pytest.param(probe_output(python={**PROBE_FACTS["python"], "version": 3.11}), "version should be text", id="number-version"),
    pytest.param(probe_output(python={"executable": "/usr/bin/python3"}), "'version' is missing", id="partial-python"),
    pytest.param(probe_output(euid="0"), "euid should be a whole number", id="text-euid"),
    pytest.param(probe_output(memtotal=True), "memtotal should be a whole number", id="bool-memory"),
    pytest.param(probe_output(has_virtualenv=None), "has_virtualenv should be true or false", id="null-bool"),
    pytest.param(probe_output(worker_accounts=[["www-data"]]), "worker_accounts should hold pairs", id="short-pair"),
    pytest.param(probe_output(complete_envs="k1"), "complete_envs should be a list", id="text-list"),
    pytest.param(probe_output(cgroup={"v1": {"cpu": "100000"}}), "cgroup v1 cpu should be a list", id="v1-cpu-text"),
    pytest.param(probe_output(cgroup={"v2": {"cpu.max": "max"}}), "cgroup cpu.max should be a list", id="v2-cpu-text"),
]


@pytest.mark.parametrize(("data", "words"), BAD_CASES)
def test_a_wrong_shape_is_a_clear_error(data: object, words: str) -> None:
    with pytest.raises(BadFacts, match=words) as raised:
        Facts.parse(data)
    assert isinstance(raised.value, WarpError)
    assert raised.value.hint


def test_the_probe_says_whether_the_system_has_a_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl
    from types import SimpleNamespace

    from warptasks.scripts import probe

    empty, bundle = tmp_path / "empty.crt", tmp_path / "bundle.crt"
    empty.write_text("")
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: SimpleNamespace(openssl_cafile=str(tmp_path / "missing")))
    monkeypatch.setattr(probe, "CA_FILES", (str(empty),))
    assert probe._system_ca() is False
    monkeypatch.setattr(probe, "CA_FILES", (str(empty), str(bundle)))
    assert probe._system_ca() is True
    assert Facts.parse(probe_output(system_ca=False)).system_ca is False
    assert Facts.parse(probe_output()).system_ca is None  # an older probe: not known
