"""Run the benchmarks side by side and write docs/benchmarks.md.

    python bench/run.py [--only NAME] [--quick] [--work DIR] [--out FILE]

Installs what it compares against by itself (warpdrive and virtualenv, Django
for startproject, gunicorn, wrk; nginx, HAProxy and Caddy for the front). A full run writes docs/benchmarks.md; a
--quick or --only run writes its report into the work folder instead, so a
partial run never replaces the published figures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from uv import find_uv_bin  # noqa: E402

import warptasks  # noqa: E402
from bench import deploys, fronts, images, suite  # noqa: E402
from bench.djangoapp import make_project  # noqa: E402
from bench.measure import Section, load  # noqa: E402
from bench.proc import BenchError  # noqa: E402
from bench.report import render  # noqa: E402
from bench.sides import sides  # noqa: E402
from bench.tools import WARPDRIVE_VERSION, prepare  # noqa: E402

DEFAULT_WORK = "/var/tmp/warptasks-bench"  # world-readable: Apache's workers must read the apps
# Sections that build their own copy of the project (an image, releases on hosts) or only warptasks' side (the
# front): the sides need not all be built first.
APART = {"image": images.run, "deploy": deploys.run, "front": fronts.run_section}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _out(argv: list[str], cwd: str | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


def machine_facts(b: suite.Bench) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = "?"
    try:
        with open("/proc/meminfo") as handle:
            memory = f"{int(handle.readline().split()[1]) // 1024} MiB"
    except (OSError, ValueError, IndexError):
        pass
    env_python = os.path.join(b.warp.bin, "python")
    commit = _out(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    return [
        ("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
        ("machine", f"{platform.system()} {platform.release()}, {platform.machine()}, {cpu}"),
        ("CPUs", f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)"),
        ("memory", memory),
        ("OS", _out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])),
        ("load average at start (1/5/15 min)", b.facts.get("load_start", "?")),
        ("warptasks", f"{warptasks.__version__} (commit {commit})"),
        ("warpdrive", WARPDRIVE_VERSION),
        ("app Python", _out([b.tools.python, "--version"])),
        ("Django", b.tools.django_version),
        ("mod_wsgi", _out([env_python, "-c", 'import importlib.metadata as m; print(m.version("mod_wsgi"))'])),
        ("Apache", _out(["apache2", "-v"]) if shutil.which("apache2") else _out(["httpd", "-v"])),
        ("gunicorn", _out([os.path.join(b.plain.bin, "gunicorn"), "--version"])),
        ("uv", _out([sys.executable, "-c", "from uv import find_uv_bin; print(find_uv_bin())"]) and _out([_uv(), "--version"])),
        ("pip (plain venv)", _out([os.path.join(b.plain.bin, "pip"), "--version"]).split(" from ")[0]),
        ("wrk", _out([b.tools.wrk, "-v"]).split(" [")[0]),
    ]


def _uv() -> str:
    try:
        return find_uv_bin()
    except FileNotFoundError:  # the uv package without its binary
        return shutil.which("uv") or "uv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only sections whose name contains this: " + ", ".join([*suite.SECTIONS, *APART]))
    parser.add_argument("--quick", action="store_true", help="one short round of everything (a smoke run)")
    parser.add_argument(
        "--work",
        default=os.environ.get("WARP_BENCH_WORK", DEFAULT_WORK),
        help=f"work folder, world-readable (default {DEFAULT_WORK})",
    )
    parser.add_argument("--out", help="report file (default docs/benchmarks.md for a full run, else in the work folder)")
    args = parser.parse_args(argv)
    full = not args.quick and not args.only
    out = args.out or (os.path.join(ROOT, "docs", "benchmarks.md") if full else os.path.join(args.work, "benchmarks.md"))
    started = time.perf_counter()
    load_start = load()
    say(f"preparing tools in {args.work} (load {load_start})")
    tools = prepare(args.work, say=say)
    source = os.path.join(args.work, "source")
    make_project(tools.django_admin, tools.django_version, source)
    warp, wd, plain = sides(tools, args.work)
    for side in (warp, wd, plain):
        side.setup(source)
    b = suite.Bench(tools, warp, wd, plain, suite.QUICK if args.quick else suite.FULL, os.path.join(args.work, "logs"), say=say)
    b.facts["load_start"] = load_start
    names = [*suite.SECTIONS, *APART]
    wanted = [args.only] if args.only in names else [name for name in names if not args.only or args.only in name]
    if not wanted:
        parser.error(f"no section matches {args.only!r}")
    sections: list[Section] = []
    skipped: list[tuple[str, str]] = []
    for name in wanted:
        say(f"section {name} (load {load()})")
        try:
            if name in APART:
                sections.append(APART[name](b))
                continue
            if name != "build":
                suite.prepare_builds(b)
            for section in suite.SECTIONS[name]:
                sections.append(section(b))
        except BenchError as error:
            # One broken section must not lose the others' figures: it is listed under "Not run".
            skipped.append((name, f"failed: {str(error).strip().splitlines()[0]}"))
            say(f"  failed: {error}")
    suite.explain(b)
    preface = [
        "Generated by `inv bench` (`python bench/run.py`); do not edit by hand.",
        f"Run: {'full' if full else ('quick' if args.quick else 'partial: ' + args.only)}, "
        f"{(time.perf_counter() - started) / 60:.1f} min. Every comparison ran its sides interleaved (A B C, B C A, ...) in "
        "this one run on this one machine; figures are medians, ratios are between medians. The machine is shared, so "
        "absolute numbers drift between runs: read the ratios, and the load averages printed per section.",
    ]
    text = render("Benchmarks", machine_facts(b), preface, sections, skipped, b.why)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        handle.write(text)
    say(f"wrote {out} ({(time.perf_counter() - started) / 60:.1f} min)")
    for section in sections:
        for target in section.targets:
            say(f"  target: {target.what}: {target.met} ({target.detail})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        sys.exit(1)
