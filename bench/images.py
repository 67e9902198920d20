"""7. Image benchmarks: `warp s2i` (warptasks.image.build) on a real Docker engine.

The engine and the Debian base image come from the project's own test harness
(no image registry is needed). Per server (mod_wsgi, gunicorn): the image's size
over its base, the cold build and the code-only rebuild, against issue 13's targets.
No warpdrive image is built for comparison: warpdrive's
`image` command needs the s2i tool and its builder images from a registry.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from tests.harness.engine import ensure_engine
from tests.harness.images import base_image, index_access
from warptasks.detect import detect_app
from warptasks.errors import WarpError
from warptasks.image.build import build_app_image
from warptasks.image.engine import ImageOptions

from .djangoapp import PROJECT, copy_project, touch_view
from .measure import Samples, Section, Target, load, secs
from .proc import BenchError

SERVERS = ("mod_wsgi", "gunicorn")
MB = 1000 * 1000  # docker's own unit (docker images)
# Issue 13's targets: the runtime image's size over its base, and the code-only rebuild.
OVER_BASE_LIMIT_MB = {"mod_wsgi": 150, "gunicorn": 90}
CODE_ONLY_LIMIT_S = 3.0


def run(b: Any) -> Section:
    try:
        return _run(b)
    except WarpError as error:  # a failed image build is a broken section, listed under "Not run"
        raise BenchError(f"image build failed: {error}") from error


def measure(client: Any, base: str, index: Any, project: str, runs: int, note: Any = print) -> dict[str, Any]:
    """Cold build, code-only rebuilds and size over ``base`` of the project's mod_wsgi and gunicorn images.

    Plain data, so the same measurement runs against another warptasks (bench/images.py's ``before`` figures).
    """
    base_size = client.images.get(base).attrs.get("Size", 0)
    figures: dict[str, Any] = {"base": base, "base_mb": base_size / MB, "servers": {}}
    for server in SERVERS:
        tag = f"warp-bench-{server.replace('_', '-')}:latest"
        options = ImageOptions(
            tag=tag,
            base_image=base,
            network="host",
            build_env=dict(index.environment),
            extra_files=dict(index.files),
            pull=False,
            quiet=True,
            server=server,
        )
        started = time.perf_counter()
        build_app_image(detect_app(project, server=server), replace(options, cache=False), client=client, say=lambda _: None)
        cold = time.perf_counter() - started
        note(f"  image {server}: cold build {cold:.1f} s")
        code = Samples()
        for _ in range(runs):
            touch_view(project, time.time_ns() % 10**12)  # never a content an earlier run left in the layer cache
            started = time.perf_counter()
            build_app_image(detect_app(project, server=server), options, client=client, say=lambda _: None)
            code.add(server, time.perf_counter() - started)
        size = client.images.get(tag).attrs.get("Size", 0)
        figures["servers"][server] = {
            "cold": cold,
            "code": code.values[server],
            "code_median": code.median(server),
            "size_mb": size / MB,
            "over_base_mb": (size - base_size) / MB,
        }
        note(
            f"  image {server}: {size / MB:.0f} MB, {(size - base_size) / MB:.0f} MB over the base, code-only {code.runs(server)}"
        )
    return figures


def _run(b: Any) -> Section:
    s = Section("7. Image", load_before=load())
    client = ensure_engine()
    b.note("  image: base image (made once by the test harness, then cached)")
    base = base_image(client)
    index = index_access()
    project = os.path.join(b.tools.work, "image", PROJECT)
    copy_project(os.path.join(b.tools.work, "source"), project)
    figures = measure(client, base, index, project, b.settings.build_runs, b.note)
    s.intro = (
        f"`warp s2i` of the same Django project, once per server, on a local Debian base image with Python "
        f"alone (`{base}`, {figures['base_mb']:.0f} MB: no compiler, no Apache), on the host network. The build "
        "stage installs what the server's build needs; the runtime image is the base plus the server's runtime "
        "packages, the environment, the app and warptasks' standard-library entry point. Cold: the engine's "
        "layer cache off. Code-only: one line of the view changed, layer cache on. Sizes in MB (10^6 bytes, as "
        "docker images shows them)."
    )
    rows = []
    for server, f in figures["servers"].items():
        rows.append(
            [
                server,
                f"{f['size_mb']:.0f} MB",
                f"{f['over_base_mb']:.0f} MB",
                secs(f["cold"]),
                secs(f["code_median"]),
                " ".join(f"{v:.2f}" for v in f["code"]),
            ]
        )
    s.table(["server", "image size", "over the base", "cold build", "code-only rebuild (median)", "runs (s)"], rows)
    for server, f in figures["servers"].items():
        limit = OVER_BASE_LIMIT_MB[server]
        s.targets.append(
            Target(f"{server} image at most base + {limit} MB", f["over_base_mb"] <= limit, f"base + {f['over_base_mb']:.0f} MB")
        )
        median = f["code_median"]
        s.targets.append(
            Target(
                f"{server} image rebuild after a code-only change at most {CODE_ONLY_LIMIT_S:g} s",
                None if median is None else median <= CODE_ONLY_LIMIT_S,
                secs(median),
            )
        )
    s.load_after = load()
    return s
