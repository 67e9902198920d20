"""A wheel of the running warptasks, to install the same warptasks into an image.

Made from the installed package and its metadata (an editable install works
too), with fixed timestamps: the same code gives the same bytes, so the
engine's layer cache is reused until warptasks itself changes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from functools import cache
from importlib import metadata
from pathlib import Path

import warptasks

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@cache
def warptasks_wheel() -> tuple[str, bytes]:
    """(file name, content) of a wheel of this warptasks (made once per process, so one run builds with one warptasks)."""
    # A dist-info (installed, editable or not) over a stale egg-info left in a source tree.
    dist = sorted(metadata.distributions(name="warptasks"), key=lambda d: d.read_text("METADATA") is None)[0]
    version = dist.version
    info = f"warptasks-{version}.dist-info"
    entries: dict[str, bytes] = {}
    package = Path(warptasks.__file__).parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            entries["warptasks/" + path.relative_to(package).as_posix()] = path.read_bytes()
    fields = ["Metadata-Version: 2.1", "Name: warptasks", f"Version: {version}"]
    fields += [f"Requires-Dist: {r}" for r in dist.requires or [] if "extra ==" not in r]  # no dev tools in images
    entries[f"{info}/METADATA"] = ("\n".join(fields) + "\n").encode()
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries[f"{info}/entry_points.txt"] = entry_points.encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: warptasks\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries.items()) + f"{info}/RECORD,,\n"
    entries[f"{info}/RECORD"] = record.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries.items():
            item = zipfile.ZipInfo(name, _EPOCH)
            item.external_attr = (0o755 if name.startswith("warptasks/scripts/s2i/") else 0o644) << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(item, data)
    return f"warptasks-{version}-py3-none-any.whl", buffer.getvalue()
