"""The tars handed to the engine: build contexts, a source tree for an S2I builder, saved artifacts.

Every member gets a fixed time and owner (uid 1001, group 0), so the engine's
layer cache depends on content only, and is group-writable, so the app may run
under any uid in group 0 (as OpenShift runs it).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from importlib.resources import files as package_files
from pathlib import Path

from . import dockerfile as img


def tar_add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    info.uid, info.gid = img.USER_ID, 0
    archive.addfile(info, io.BytesIO(data))


def tar_dir(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, 0o775, 0, img.USER_ID, 0
    archive.addfile(info)


def tar_tree(archive: tarfile.TarFile, root: Path, files: Iterable[str], prefix: str) -> None:
    """Project files under ``prefix``, their folders first."""
    seen_dirs: set[str] = set()
    for rel in files:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in seen_dirs:
                seen_dirs.add(directory)
                tar_dir(archive, f"{prefix}/{directory}")
        path = root / rel
        if path.is_symlink():
            info = tarfile.TarInfo(f"{prefix}/{rel}")
            info.type, info.linkname, info.mtime, info.uid, info.gid = tarfile.SYMTYPE, os.readlink(path), 0, img.USER_ID, 0
            archive.addfile(info)
            continue
        mode = os.stat(path).st_mode
        tar_add(archive, f"{prefix}/{rel}", path.read_bytes(), 0o775 if mode & 0o111 else 0o664)


def s2i_scripts() -> dict[str, bytes]:
    folder = package_files("warptasks.scripts").joinpath("s2i")
    return {name: folder.joinpath(name).read_bytes() for name in ("assemble", "run", "save-artifacts", "usage")}


def runtime_files(build: img.ImageBuild) -> dict[str, bytes]:
    """The runtime stage's own files, by context path: ``warp`` (the entry point) and the modules it loads by path."""
    scripts, plan = package_files("warptasks.scripts"), package_files("warptasks.plan")
    return {
        "warp/runtime/warp": img.warp_command(build).encode(),
        "warp/runtime/lib/image_start.py": scripts.joinpath("image_start.py").read_bytes(),
        "warp/runtime/lib/probe.py": scripts.joinpath("probe.py").read_bytes(),
        # The worker sizing warp start uses, the file itself (standard library only), not a copy of its logic.
        "warp/runtime/lib/resources.py": plan.joinpath("resources.py").read_bytes(),
    }


def _prefix_context(archive: tarfile.TarFile, build: img.ImageBuild, wheel: bytes, extra_files: dict[str, bytes]) -> None:
    tar_add(archive, f"warp/{build.wheel}", wheel)
    for name, data in s2i_scripts().items():
        tar_add(archive, f"warp/s2i/{name}", data, 0o755)
    tar_dir(archive, "warp/files")
    for path, data in sorted(extra_files.items()):
        tar_add(archive, "warp/files/" + path.lstrip("/"), data)


def build_context(
    dockerfile: str,
    build: img.ImageBuild,
    wheel: bytes,
    extra_files: dict[str, bytes],
    tree: tuple[Path, list[str], list[str]] | None = None,
    scripts: dict[str, str] | None = None,
) -> io.BytesIO:
    """A Dockerfile's context: warptasks' wheel, the S2I scripts, extra files, and the project split in two."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        tar_add(archive, "Dockerfile", dockerfile.encode())
        _prefix_context(archive, build, wheel, extra_files)
        for name, text in (scripts or {}).items():
            tar_add(archive, f"warp/build/{name}", text.encode())
        if tree:
            for path, data in runtime_files(build).items():
                tar_add(archive, path, data, 0o755)
        if tree:
            root, first, rest = tree
            tar_dir(archive, "deps")
            tar_dir(archive, "src")
            tar_tree(archive, root, first, "deps")
            tar_tree(archive, root, rest, "src")
    buffer.seek(0)
    return buffer


def source_tar(root: Path, files: list[str], prefix: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        tar_dir(archive, prefix)
        tar_tree(archive, root, files, prefix)
    return buffer.getvalue()


def moved_under(stream: Iterator[bytes], prefix: str) -> bytes:
    """A tar (from ``save-artifacts``) with every member, and every hard link's target, moved under ``prefix``."""
    source = tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r|*")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        tar_dir(archive, prefix)
        for member in source:
            data = source.extractfile(member) if member.isfile() else None
            member.name = f"{prefix}/{member.name.removeprefix('./')}".rstrip("/")
            if member.islnk():
                member.linkname = f"{prefix}/{member.linkname.removeprefix('./')}"
            archive.addfile(member, data)
    return buffer.getvalue()
