"""The runtime image's start, without an engine: the start data rendered at build time, and the entry point using it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.cases import WSGI, Exe, facts, write_tree
from warptasks.detect import detect_app
from warptasks.image import dockerfile as img
from warptasks.image.context import runtime_files
from warptasks.image.runtime import MAX_CPUS, PORT_TOKENS, port_positions, render

ENV = f"{img.PROJECT}/.warp/envs/py3.11-abc"
BUILT = facts(euid=1001, state={"server": "mod_wsgi", "env": ENV, "env_key": "abc", "kind": "wsgi"}, current=ENV)


@pytest.fixture
def entry(tmp_path: Path) -> ModuleType:
    """image_start.py loaded from the files the runtime stage gets, laid out as the image has them."""
    build = img.ImageBuild("python:3.11-slim", (), "/usr/local/bin/python3.11", "w.whl", {})
    for path, data in runtime_files(build).items():
        if path.startswith("warp/runtime/lib/"):
            (tmp_path / Path(path).name).write_bytes(data)
    spec = importlib.util.spec_from_file_location("image_start_under_test", tmp_path / "image_start.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _data(tmp_path: Path, files: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = detect_app(write_tree(tmp_path / "app", files or {"wsgi.py": WSGI}), server="mod_wsgi")
    return json.loads(json.dumps(render(spec, BUILT, img.PROJECT)))


def _raw(cpus: int, quota: str = "max 100000", memory: str = "max") -> dict[str, Any]:
    return {
        "cpu_count": cpus,
        "affinity": cpus,
        "memtotal": 8 * 2**30,
        "cgroup": {"v2": {"cpu.max": [quota], "memory.max": [memory]}},
    }


def test_the_start_data_holds_one_server_step_per_size_and_the_port_as_a_token(tmp_path: Path) -> None:
    data = _data(tmp_path)
    assert len(data["by_cpus"]) == MAX_CPUS and len(data["servers"]) == MAX_CPUS  # mod_wsgi: one step per process count
    assert data["stop_signal"] == "SIGWINCH" and data["port"] and data["health"] is None
    argv = data["servers"][data["by_cpus"]["3"]]["argv"]
    assert argv[argv.index("--processes") + 1] == "3" and argv[argv.index("--port") + 1] == data["port"]


def test_the_entry_point_sizes_the_server_from_the_containers_cgroup_limits(entry: ModuleType, tmp_path: Path) -> None:
    data = _data(tmp_path)
    step, notes = entry.sized_server(data, _raw(8, quota="150000 100000"))
    argv = step["argv"]
    assert argv[argv.index("--processes") + 1] == "2"  # a 1.5 CPU quota runs 2 processes, as warp start sizes it
    assert any("cgroup CPU quota 1.5" in note for note in notes)
    step, notes = entry.sized_server(data, _raw(8, memory=str(200 * 2**20)))
    assert step["argv"][step["argv"].index("--processes") + 1] == "1"  # 200 MiB fits one process
    filled = entry._filled(step, data, "9090")
    assert filled["argv"][filled["argv"].index("--port") + 1] == "9090"


def test_the_ready_hook_is_the_health_check(tmp_path: Path) -> None:
    data = _data(tmp_path, {"wsgi.py": WSGI, ".s2i/action_hooks/ready": Exe("#!/bin/sh\ntrue\n")})
    assert data["health"]["argv"] == ["./.s2i/action_hooks/ready"]


def test_the_entry_point_refuses_what_the_image_cannot_do(entry: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["warp", "build"]) == 2
    assert "only starts the app" in capsys.readouterr().err
    assert entry.main(["warp", "start", "--processes", "3"]) == 2
    assert "docker run --cpus" in capsys.readouterr().err
    assert entry.main(["warp", "start", "--listen", "127.0.0.1"]) == 2
    assert entry.main(["warp", "start", "worker", "--process", "clock"]) == 2  # one process type at most
    assert "one process type at most" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args", [["worker"], ["--process", "worker"], ["--process=worker"], ["--listen", "0.0.0.0", "--process", "worker"]]
)
def test_a_process_type_is_named_as_warp_start_takes_it_locally(entry: ModuleType, args: list[str]) -> None:
    """``warp start worker`` and ``inv warp.start --process worker`` mean the same in the image as on a laptop."""
    assert entry._start_arguments(args) == "worker"


def test_each_hook_is_in_the_start_data_alone_for_kubernetes_probes_and_the_migrate_job(tmp_path: Path) -> None:
    data = _data(
        tmp_path,
        {"wsgi.py": WSGI, ".s2i/action_hooks/alive": Exe("#!/bin/sh\ntrue\n"), ".s2i/action_hooks/migrate": Exe("#!/bin/sh\n")},
    )
    assert set(data["hooks"]) == {"alive", "migrate"}
    assert data["hooks"]["alive"]["argv"] == ["./.s2i/action_hooks/alive"]


def test_warp_health_and_migrate_refuse_a_hook_the_image_lacks(
    entry: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_file = tmp_path / "image-start.json"
    data_file.write_text(json.dumps(_data(tmp_path)))
    monkeypatch.setattr(entry, "DATA", str(data_file))
    assert entry.main(["warp", "health", "ready"]) == 2
    assert "no ready step" in capsys.readouterr().err
    assert entry.main(["warp", "migrate"]) == 2
    assert "no migrate step" in capsys.readouterr().err
    assert entry.main(["warp", "health", "sideways"]) == 2
    assert "ready or alive" in capsys.readouterr().err


def test_the_pods_environment_wins_over_the_projects_environment_file(
    entry: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Secret's SECRET_KEY (warp kube --env-file) lost to a dev key committed in .s2i/environment: the entry point
    laid the step's environment over the container's. On hosts the host's environment file wins; so does the pod's."""
    hook = '#!/bin/sh\n[ "$SECRET_KEY" = from-the-secret ] && [ "$DJANGO_DEBUG" = 0 ] && [ "$WARP_PHASE" != pod ]\n'
    files = {
        "wsgi.py": WSGI,
        ".s2i/environment": "SECRET_KEY=committed-dev-key\nDJANGO_DEBUG=1\n",
        ".s2i/action_hooks/ready": Exe(hook),
    }
    data = _data(tmp_path, files)
    data["hooks"]["ready"]["cwd"] = str(tmp_path / "app")  # where this test wrote the app (the image's is /opt/app-root)
    data_file = tmp_path / "image-start.json"
    data_file.write_text(json.dumps(data))
    monkeypatch.setattr(entry, "DATA", str(data_file))
    monkeypatch.setenv("WARP_PHASE", "pod")  # warp's own variables still come from the plan
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("DJANGO_DEBUG", "0")
    assert entry.main(["warp", "health", "ready"]) != 0  # without the pod's value the project's is kept
    monkeypatch.setenv("SECRET_KEY", "from-the-secret")
    assert entry.main(["warp", "health", "ready"]) == 0


def test_warp_migrate_runs_the_procfile_release_line_after_the_migrate_step(entry: ModuleType, tmp_path: Path) -> None:
    """A Procfile's release: line ran once per host deploy, but warp kube's Job (warp migrate) never ran it: an app
    whose only migration is `release: alembic upgrade head` got no Job at all and served an unmigrated database."""
    import subprocess

    files = {
        "wsgi.py": WSGI,
        ".s2i/action_hooks/migrate": Exe("#!/bin/sh\necho migrate >> order.txt\n"),
        "Procfile": "release: echo release >> order.txt\n",
    }
    data = _data(tmp_path, files)
    for name in ("migrate", "release"):
        data["hooks"][name]["cwd"] = str(tmp_path / "app")  # where this test wrote the app (the image's is /opt/app-root)
    data_file = tmp_path / "image-start.json"
    data_file.write_text(json.dumps(data))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import image_start as m; "
        "m.DATA = sys.argv[2]; sys.exit(m.main(['warp', 'migrate']))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(data_file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "app" / "order.txt").read_text() == "migrate\nrelease\n"


@pytest.mark.parametrize("port", ["\u0663\u0660\u0660\u0660", "\uff18\uff10\uff18\uff10", "\u00b2", "http", "0"])
def test_the_entry_point_refuses_a_port_that_is_not_ascii_digits(
    entry: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    monkeypatch.setenv("PORT", port)
    with pytest.raises(entry.Refused, match="is not a port number"):
        entry._port(_data(tmp_path))


def test_the_entry_point_takes_an_ascii_port(entry: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9090")
    assert entry._port(_data(tmp_path)) == "9090"


def test_an_environment_value_equal_to_the_port_token_is_a_value_and_port_support_stays(
    entry: ModuleType, tmp_path: Path
) -> None:
    """The start data once stood for the port by the token's digits: a project value equal to them (MAGIC=47913)
    made the two plans differ by more than the token, and the image ignored PORT; now the port is found by place."""
    token = str(PORT_TOKENS[0])
    files = {"wsgi.py": WSGI, ".s2i/environment": f"MAGIC={token}\nOTHER=x{token}y\n"}
    data = _data(tmp_path, files)
    assert data["port"] == token  # $PORT support kept
    step, _ = entry.sized_server(data, _raw(2))
    assert step["env"]["MAGIC"] == token
    filled = entry._filled(step, data, "9090")
    assert filled["argv"][filled["argv"].index("--port") + 1] == "9090"
    assert filled["env"]["MAGIC"] == token and filled["env"]["OTHER"] == f"x{token}y"  # values, not the port
    assert "port_at" not in filled and "port_at" in step  # the data's step stays the template


def test_port_positions_are_where_the_second_token_replaced_the_first() -> None:
    tokens = ("47913", "47914")
    first = {"argv": ["s", "--port", "47913", "--bind=0.0.0.0:47913"], "env": {"A": "47913", "B": "47913"}}
    second = {"argv": ["s", "--port", "47914", "--bind=0.0.0.0:47914"], "env": {"A": "47913", "B": "47914"}}
    assert port_positions(first, second, tokens) == [[["argv", 2], [0]], [["argv", 3], [15]], [["env", "B"], [0]]]
    with pytest.raises(Exception, match="argv"):  # a port that changes more than its own digits is no token
        port_positions({"argv": ["--workers=1"]}, {"argv": ["--workers=2"]}, tokens)


def test_a_port_of_thousands_of_digits_is_refused_not_a_traceback(
    entry: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9" * 5000)  # int() refuses over 4300 digits with a ValueError
    with pytest.raises(entry.Refused, match="is not a port number"):
        entry._port(_data(tmp_path))


def test_a_port_shorter_than_the_token_lands_at_each_recorded_place_and_nowhere_else(entry: ModuleType) -> None:
    """Held: the places are filled from the last, so a shorter port never moves the next one; PORT is digits only."""
    data = {"port": "47913", "fixed_port": 8080}
    step = {"argv": ["s", "a47913b47913c", "47913"], "env": {"X": "47913"}, "port_at": [[["argv", 1], [1, 7]]]}
    filled = entry._filled(step, data, "80")
    assert filled["argv"] == ["s", "a80b80c", "47913"] and filled["env"] == {"X": "47913"}
