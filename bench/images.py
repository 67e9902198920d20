"""7. Image benchmarks: `warp s2i` (warptasks.image.build) on a real Docker engine.

The engine and the Debian base image come from the project's own test harness
(no image registry is needed). Per server (mod_wsgi, gunicorn): the image's size
over its base, the cold build and the code-only rebuild, against issue 13's targets.

Before and after: the same project is built side by side by the warptasks of :data:`BEFORE` (the last commit before
multi-stage images: one stage, compilers and warptasks in the image), run from that commit's ``warptasks`` package
(``git archive``) in a child process, with this bench's own measurement; without that commit in the repository (a
release tarball), the figures measured at that commit are shown instead (:data:`BEFORE_MEASURED`), labelled so.
No warpdrive image is built for comparison: warpdrive's
`image` command needs the s2i tool and its builder images from a registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

from tests.container.image_helpers import build_options
from tests.harness.engine import ensure_engine
from tests.harness.images import base_image, index_access
from warptasks.detect import detect_app
from warptasks.errors import WarpError
from warptasks.image.build import build_app_image

from .djangoapp import PROJECT, copy_project, touch_view
from .measure import Samples, Section, Target, load, secs
from .proc import BenchError

SERVERS = ("mod_wsgi", "gunicorn")
MB = 1000 * 1000  # docker's own unit (docker images)
# Issue 13's targets: the runtime image's size over its base, and the code-only rebuild.
OVER_BASE_LIMIT_MB = {"mod_wsgi": 150, "gunicorn": 90}
CODE_ONLY_LIMIT_S = 3.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The last commit before multi-stage images (the first parent of the merge that brought them), and its date.
BEFORE = ("6bc1012", "2026-12-01")
# What the bench measured at BEFORE on this machine, shown when that commit cannot be built here.
BEFORE_MEASURED = {
    "mod_wsgi": {"size_mb": 923.0, "over_base_mb": 732.0, "code": "3.0-5.6 s"},
    "gunicorn": {"size_mb": 341.0, "over_base_mb": 150.0, "code": "2.8-3.1 s"},
}


def run(b: Any) -> Section:
    try:
        return _run(b)
    except WarpError as error:  # a failed image build is a broken section, listed under "Not run"
        raise BenchError(f"image build failed: {error}") from error


def measure(
    client: Any, base: str, index: Any, project: str, runs: int, note: Any = print, *, cold: bool = True, name: str = "warp-bench"
) -> dict[str, Any]:
    """Cold build, code-only rebuilds and size over ``base`` of the project's mod_wsgi and gunicorn images.

    Plain data, so the same measurement runs against another warptasks (:func:`before`). ``cold`` False: the first
    build takes what the engine's cache has, and is not timed (a reference needs its size and its rebuilds).
    """
    base_size = client.images.get(base).attrs.get("Size", 0)
    figures: dict[str, Any] = {"base": base, "base_mb": base_size / MB, "servers": {}}
    for server in SERVERS:
        tag = f"{name}-{server.replace('_', '-')}:latest"
        options = build_options(index, tag, base, server=server)
        started = time.perf_counter()
        first = options if not cold else replace(options, cache=False)
        build_app_image(detect_app(project, server=server), first, client=client, say=lambda _: None)
        took = time.perf_counter() - started
        note(f"  image {server}: {'cold' if cold else 'first (cache on, not a figure)'} build {took:.1f} s")
        code = Samples()
        pieces: list[dict[str, float]] = []  # per code-only run: the plan steps of the build RUN, as the engine streamed them
        for _ in range(runs):
            touch_view(project, time.time_ns() % 10**12)  # never a content an earlier run left in the layer cache
            started = time.perf_counter()
            result = build_app_image(detect_app(project, server=server), options, client=client, say=lambda _: None)
            code.add(server, time.perf_counter() - started)
            pieces.append(dict(getattr(result.build, "timings", None) or []))
        size = client.images.get(tag).attrs.get("Size", 0)
        figures["servers"][server] = {
            "cold": took if cold else None,
            "code": code.values[server],
            "code_median": code.median(server),
            "pieces": pieces,
            "size_mb": size / MB,
            "over_base_mb": (size - base_size) / MB,
        }
        note(
            f"  image {server}: {size / MB:.0f} MB, {(size - base_size) / MB:.0f} MB over the base, code-only {code.runs(server)}"
        )
    return figures


def before(b: Any, project: str) -> dict[str, Any] | None:
    """The figures of :data:`BEFORE`'s images, measured now beside this warptasks' own; None when that commit's
    warptasks cannot be had (no git history) or its build fails (said in the notes)."""
    with tempfile.TemporaryDirectory(prefix="warp-bench-before-", dir=b.tools.work) as folder:
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", BEFORE[0], "warptasks"], capture_output=True, timeout=60, check=False
        )
        if archive.returncode != 0:
            b.note(f"  image: no {BEFORE[0]} in the repository ({archive.stderr.decode(errors='replace').strip()[:200]})")
            return None
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True, timeout=60)
        out = os.path.join(folder, "figures.json")
        code = (
            "import json, sys\n"
            "from bench import images\n"
            "from tests.harness.engine import ensure_engine\n"
            "from tests.harness.images import base_image, index_access\n"
            "client = ensure_engine()\n"
            "figures = images.measure(client, base_image(client), index_access(), sys.argv[1], int(sys.argv[2]), "
            "cold=False, name='warp-bench-before')\n"
            "json.dump(figures, open(sys.argv[3], 'w'))\n"
        )
        # That commit's warptasks first on the path; this bench and the test harness after it.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder, ROOT]))
        done = subprocess.run(
            [sys.executable, "-c", code, project, str(b.settings.build_runs), out],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        for line in done.stdout.splitlines():
            b.note(f"  before: {line.strip()}")
        if done.returncode != 0:
            b.note(f"  image: the {BEFORE[0]} build failed: {done.stderr.strip()[-500:]}")
            return None
        with open(out, encoding="utf-8") as handle:
            figures: dict[str, Any] = json.load(handle)
        return figures


def limits(f: dict[str, Any]) -> str:
    """What a code-only rebuild spent its time on, measured: the plan steps inside the build stage's one RUN (their
    medians), and the rest, which is the engine's (the classic builder: every step that is not cached is a layer)."""
    steps: dict[str, list[float]] = {}
    for run in f.get("pieces") or []:
        for name, took in run.items():
            steps.setdefault(name, []).append(took)
    middle = {name: sorted(v)[len(v) // 2] for name, v in steps.items()}
    inside = sum(middle.values())
    shown = ", ".join(f"{name} {took:.2f} s" for name, took in sorted(middle.items(), key=lambda item: -item[1]))
    return (
        f"Of the median {f['code_median']:.2f} s, the plan steps inside the build RUN took {inside:.2f} s ({shown}): "
        "collectstatic is Django's own start-up (importing the project's apps, with compiled bytecode), the start data "
        "a Python start of warptasks and the probe's plus, as the last step, the engine's commit of the RUN's layer; none "
        "can be skipped without risking stale static files or a stale start plan. "
        f"The other {f['code_median'] - inside:.2f} s is the engine's classic builder: sending the context, "
        "the source COPY, the RUN's container start, the runtime stage's copy of the project folder and the "
        "LABEL step's container commit (the labels change each build, so they come last), on a shared 2-core machine."
    )


def _run(b: Any) -> Section:
    s = Section("7. Image", load_before=load())
    client = ensure_engine()
    b.note("  image: base image (made once by the test harness, then cached)")
    base = base_image(client)
    index = index_access()
    project = os.path.join(b.tools.work, "image", PROJECT)
    copy_project(os.path.join(b.tools.work, "source"), project)
    figures = measure(client, base, index, project, b.settings.build_runs, b.note)
    reference = os.path.join(b.tools.work, "image-before", PROJECT)
    copy_project(os.path.join(b.tools.work, "source"), reference)
    started = time.perf_counter()
    old = before(b, reference)
    b.note(f"  image: the {BEFORE[0]} reference took {time.perf_counter() - started:.0f} s")
    s.intro = (
        f"`warp s2i` of the same Django project, once per server, on a local Debian base image with Python "
        f"alone (`{base}`, {figures['base_mb']:.0f} MB: no compiler, no Apache), on the host network. The build "
        "stage installs what the server's build needs; the runtime image is the base plus the server's runtime "
        "packages, the environment, the app and warptasks' standard-library entry point. Cold: the engine's "
        "layer cache off. Code-only: one line of the view changed, layer cache on. Sizes in MB (10^6 bytes, as "
        "docker images shows them). Before: the same project built by the warptasks of "
        f"{BEFORE[0]} ({BEFORE[1]}), the last commit before multi-stage images (one stage: the compilers, headers "
        "and warptasks stay in the image); "
        + (
            "built side by side in this run (first build from the engine's cache, not timed)."
            if old
            else f"not built in this run: the figures measured at {BEFORE[0]} on this machine."
        )
    )
    rows = []
    for server, f in figures["servers"].items():
        rows.append(
            [
                f"{server} (this warptasks)",
                f"{f['size_mb']:.0f} MB",
                f"{f['over_base_mb']:.0f} MB",
                secs(f["cold"]),
                secs(f["code_median"]),
                " ".join(f"{v:.2f}" for v in f["code"]),
            ]
        )
        label = f"{server}: reference, before multi-stage ({BEFORE[0]}, {BEFORE[1]})"
        if old and server in old["servers"]:
            o = old["servers"][server]
            runs = " ".join(f"{v:.2f}" for v in o["code"])
            rows.append([label, f"{o['size_mb']:.0f} MB", f"{o['over_base_mb']:.0f} MB", "-", secs(o["code_median"]), runs])
        else:
            m = BEFORE_MEASURED[server]
            rows.append([label + ", measured then", f"{m['size_mb']:.0f} MB", f"{m['over_base_mb']:.0f} MB", "-", m["code"], "-"])
    s.table(["image", "image size", "over the base", "cold build", "code-only rebuild (median)", "runs (s)"], rows)
    for server, f in figures["servers"].items():
        limit = OVER_BASE_LIMIT_MB[server]
        s.targets.append(
            Target(f"{server} image at most base + {limit} MB", f["over_base_mb"] <= limit, f"base + {f['over_base_mb']:.0f} MB")
        )
        median = f["code_median"]
        what = f"{server} image rebuild after a code-only change at most {CODE_ONLY_LIMIT_S:g} s"
        s.targets.append(Target(what, None if median is None else median <= CODE_ONLY_LIMIT_S, secs(median)))
        if median is not None and median > CODE_ONLY_LIMIT_S:
            b.why[what] = limits(f)
    s.load_after = load()
    return s
