"""7. Image benchmarks: `warp s2i` (warptasks.image.build) on a real Docker engine.

The engine and the Debian base image come from the project's own test harness
(no image registry is needed). No warpdrive image is built for comparison: warpdrive's
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

TAG = "warp-bench-app:latest"
# What compiling and running mod_wsgi needs in a Debian image.
SERVER_PACKAGES = ("apache2", "apache2-dev", "gcc", "libc6-dev", "python3-dev")


def run(b: Any) -> Section:
    try:
        return _run(b)
    except WarpError as error:  # a failed image build is a broken section, listed under "Not run"
        raise BenchError(f"image build failed: {error}") from error


def _run(b: Any) -> Section:
    s = Section("7. Image", load_before=load())
    client = ensure_engine()
    b.note("  image: base image (made once by the test harness, then cached)")
    base = base_image(client, SERVER_PACKAGES)
    index = index_access()
    project = os.path.join(b.tools.work, "image", PROJECT)
    copy_project(os.path.join(b.tools.work, "source"), project)
    options = ImageOptions(tag=TAG, base_image=base, network="host", build_env=dict(index.environment),
                           extra_files=dict(index.files), pull=False, quiet=True)
    s.intro = (f"`warp s2i` of the same Django project on a local Debian base image (`{base}`, with Apache's build "
               "files), on the host network. Cold: the engine's layer cache off. Code-only: one line of the view "
               "changed, layer cache on.")
    started = time.perf_counter()
    build_app_image(detect_app(project), replace(options, cache=False), client=client, say=lambda _: None)
    cold = time.perf_counter() - started
    b.note(f"  image cold build {cold:.1f} s")
    code = Samples()
    for n in range(b.settings.build_runs):
        touch_view(project, 100 + n)
        started = time.perf_counter()
        build_app_image(detect_app(project), options, client=client, say=lambda _: None)
        code.add("warptasks", time.perf_counter() - started)
    size = client.images.get(TAG).attrs.get("Size", 0)
    s.table(["measure", "value", "runs (s)"], [
        ["cold build (no layer cache)", secs(cold), f"{cold:.2f}"],
        ["rebuild after a code-only change (median)", secs(code.median("warptasks")), code.runs("warptasks")],
        ["image size", f"{size / 2**20:.0f} MiB", ""],
    ])
    median = code.median("warptasks")
    s.targets.append(Target("image rebuild after a code-only change under 10 s", None if median is None else median < 10,
                            secs(median)))
    s.load_after = load()
    return s
