"""A secret shipped on purpose (a ``!name`` line) is named where it ships, never silent (pure tier)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cases import WSGI, write_tree
from warptasks.detect import detect_app
from warptasks.image.dockerfile import context_files
from warptasks.remote.deploy import _pack
from warptasks.settings import DeploySettings
from warptasks.sourcefiles import image_files, release_files


def test_a_release_names_each_secret_it_ships_on_purpose(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, ".env": "AWS_SECRET=x\n", "certs/ca.pem": "x", ".warpignore": "!.env\n"})
    selection = release_files(tmp_path)
    assert ".env" in selection.files and "certs/ca.pem" not in selection.files
    assert selection.on_purpose == (".env on purpose (listed in .warpignore)",)
    said: list[str] = []
    _, _, scratch = _pack(detect_app(str(tmp_path)), DeploySettings.resolve(None, path="/srv/app"), said.append)
    shutil.rmtree(scratch)
    assert "shipping .env on purpose (listed in .warpignore)" in said
    assert "not shipped: certs/ca.pem" in " ".join(said)


def test_an_image_context_names_each_secret_it_takes_on_purpose(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, ".env": "AWS_SECRET=x\n", "id_rsa": "x", ".dockerignore": "!.env\n!id_rsa\n"})
    selection = image_files(tmp_path)
    assert {".env", "id_rsa"} <= set(selection.files)
    assert selection.on_purpose == (".env on purpose (listed in .dockerignore)", "id_rsa on purpose (listed in .dockerignore)")
    said: list[str] = []
    assert context_files(tmp_path, said.append) == selection.files  # what warp s2i and the S2I flow call
    assert said == [f"copying into the image {note}" for note in selection.on_purpose]


def test_a_file_that_is_no_secret_is_not_named_for_its_negation(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, "notes.txt": "", ".warpignore": "*.txt\n!notes.txt\n"})
    assert release_files(tmp_path).on_purpose == ()
