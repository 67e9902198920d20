"""What others could do to an image build: another account's probe cache entries, a package name from the facts."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from tests.cases import PROBE_FACTS
from tests.test_image_plan import image_build
from warptasks.image import build
from warptasks.image import dockerfile as img

# A base image's facts as an entry another account wrote: mod_wsgi on a Debian Python with no compiler, so the runtime
# stage installs libpython{version}, and the version is a shell command.
POISONED = {
    **PROBE_FACTS,
    "python": {**PROBE_FACTS["python"], "version": "3.11 && touch /pwned", "prefix": "/usr"},
    "apxs": None,
    "cc": None,
    "package_manager": "apt-get",
}


def _probed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    runs: list[str] = []

    def probe(client: object, image: str, python: str, request: dict[str, object], name: str = "") -> dict[str, object]:
        runs.append(name)
        return dict(PROBE_FACTS)

    monkeypatch.setattr(build, "probe_image_data", probe)
    return runs


def _entry(folder: Path) -> Path:
    (entry,) = folder.glob("*.json")
    return entry


def _probe(folder: Path) -> object:
    return build.cached_probe(None, "sha256:aaa", "python3", {}, folder, name="debian:12")  # type: ignore[arg-type]


@pytest.mark.parametrize("writable", ["entry", "folder"])
def test_a_probe_cache_entry_another_account_could_write_is_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writable: str
) -> None:
    """The base image's facts choose the runtime stage's packages: an entry in a folder others can write (a shared
    XDG_CACHE_HOME) would put their command in a RUN of the image, as root."""
    runs = _probed(monkeypatch)
    folder = tmp_path / "facts"
    _probe(folder)
    entry = _entry(folder)
    entry.write_text(json.dumps(POISONED), encoding="utf-8")
    (entry if writable == "entry" else folder).chmod(0o666 if writable == "entry" else 0o777)
    facts = _probe(folder)
    assert runs == ["debian:12", "debian:12"]
    assert facts.python.version == PROBE_FACTS["python"]["version"]  # type: ignore[attr-defined]


def test_a_probe_cache_entry_another_account_owns_is_probed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another account takes root")
    runs = _probed(monkeypatch)
    folder = tmp_path / "facts"
    _probe(folder)
    entry = _entry(folder)
    entry.write_text(json.dumps(POISONED), encoding="utf-8")
    os.chown(entry, 4242, 4242)
    assert _probe(folder).python.version == PROBE_FACTS["python"]["version"]  # type: ignore[attr-defined]
    assert len(runs) == 2


def test_the_probe_cache_is_this_account_s_alone_and_written_under_no_predictable_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _probed(monkeypatch)
    folder = tmp_path / "facts"
    seen: list[str] = []
    real = Path.replace

    def replace(self: Path, target: Path) -> Path:
        seen.append(self.name)
        return real(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    old = os.umask(0o002)  # a user-private-group system's umask
    try:
        _probe(folder)
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o077 == 0 and _entry(folder).stat().st_mode & 0o077 == 0
    assert seen and str(os.getpid()) not in seen[0]  # the partial file's name is not the process id


def test_a_package_name_is_one_word_of_the_apt_line_whatever_it_holds() -> None:
    """runtime_packages builds libpython{version} from the probed facts: never a shell command in a RUN."""
    build_ = image_build(runtime_packages=("apache2-bin", "libpython3.11 && touch /pwned"))
    line = next(line for line in img.runtime_dockerfile(build_).splitlines() if "apt-get install" in line)
    assert "libpython3.11 && touch /pwned" in shlex.split(line.removeprefix("RUN "))
    assert "apt-get install -y --no-install-recommends apache2-bin " in line  # ordinary names as they were


def test_an_environment_or_vcs_name_stays_out_of_the_image_as_a_link_or_a_file(tmp_path: Path) -> None:
    """Only folders of those names were left out: a link named .warp replaced the build stage's environment folder
    (state, current) with wherever it points, and a git worktree's .git file put this machine's path in the image."""
    from warptasks.sourcefiles import image_files

    (tmp_path / "wsgi.py").write_text("application = None\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".warp").symlink_to("elsewhere")
    (tmp_path / ".venv").symlink_to("/usr")
    (tmp_path / ".git").write_text("gitdir: /home/someone/repo/.git/worktrees/app\n", encoding="utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "__pycache__").write_text("", encoding="utf-8")
    assert image_files(tmp_path).files == ["wsgi.py"]


def test_the_probe_runs_the_image_its_id_keys_not_whatever_the_name_points_to_by_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The facts are kept under the id ensure_base_image found; a container of the name could be another image by
    then (a pull of a newer python:3.12-slim meanwhile), whose facts would then be kept under the old id for good."""
    from warptasks.image import engine

    ran: list[str] = []

    class Containers:
        def run(self, image: str, *args: object, **kwargs: object) -> bytes:
            ran.append(image)
            return (json.dumps(PROBE_FACTS) + "\n/usr/bin/apt-get\n").encode()

    client = type("Client", (), {"containers": Containers()})()
    monkeypatch.setattr(build, "probe_image_data", engine.probe_image_data)
    build.cached_probe(client, "sha256:aaa", "python3", {}, tmp_path / "facts", name="debian:12")  # type: ignore[arg-type]
    assert ran == ["sha256:aaa"]
