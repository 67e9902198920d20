"""Bad input through the `warp` command a user runs: one clear paragraph, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases import WSGI, write_tree

pytestmark = pytest.mark.integration

WARP = os.path.join(os.path.dirname(sys.executable), "warp")


def warp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WARP, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


# (files in the project, the warp arguments, words the error must contain)
BAD_INPUT = [
    pytest.param(
        {"wsgi.py": WSGI, "pyproject.toml": b'[project]\nname = "caf\xe9"\n'},
        ["plan"],
        ["pyproject.toml is not UTF-8", "save the file as UTF-8"],
        id="pyproject-not-utf8",
    ),
    pytest.param(
        {"wsgi.py": WSGI, "requirements.txt": "-r https://example.com/base.txt\nflask\n"},
        ["plan"],
        ["includes 'https://example.com/base.txt' from the network", "download that file into the project"],
        id="requirements-include-url",
    ),
    pytest.param({"wsgi.py": WSGI}, ["start", "--processes", "two"], ["processes", "'two'", "whole number"], id="processes-word"),
    pytest.param({"wsgi.py": WSGI}, ["start", "--processes", "0"], ["processes", "at least 1"], id="processes-zero"),
    pytest.param({"wsgi.py": WSGI}, ["start", "--port", "99999"], ["port 99999", "1 to 65535"], id="port-out-of-range"),
    pytest.param(
        {"wsgi.py": WSGI}, ["build", "--python", "/bin/false"], ["/bin/false", "not a working Python"], id="python-false"
    ),
]


@pytest.mark.parametrize(("files", "args", "words"), BAD_INPUT)
def test_bad_input_gets_a_clear_error_and_a_non_zero_exit(
    tmp_path: Path, files: dict[str, str | bytes], args: list[str], words: list[str]
) -> None:
    for rel, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / rel).write_bytes(content)  # not UTF-8 on purpose
        else:
            write_tree(tmp_path, {rel: content})
    result = warp(*args, cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    message = result.stderr.replace("\n", " ")
    for word in words:
        assert word in message, result.stderr
    assert not (tmp_path / ".warp" / "current").exists()


def test_a_closed_pipe_ends_warp_plan_quietly(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI})
    # `warp plan | head -1` where head is gone before warp writes: the reader closes its end at once.
    shell = subprocess.run(
        ["bash", "-c", f"{WARP} plan | (exec 0<&-; true)"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in shell.stderr, shell.stderr
    assert "BrokenPipe" not in shell.stderr, shell.stderr
    assert "Exception ignored" not in shell.stderr, shell.stderr
